// Learning-rate schedules: PyTorch's LambdaLR driven by the multipliers of transformers'
// get_constant_schedule_with_warmup / get_linear_schedule_with_warmup /
// get_cosine_schedule_with_warmup (transformers/optimization.py), so a run here follows the same
// lr curve as a Hugging Face Trainer run with the same warmup and step counts.

/** step -> lr multiplier (the lr is the group's initial lr times this). */
export type LrLambda = (step: number) => number;

/** Anything with lr-carrying parameter groups (AdamW, SGD). */
export interface SchedulableOptimizer {
  readonly paramGroups: { lr: number }[];
}

function checkSteps(op: string, numWarmupSteps: number, numTrainingSteps?: number): void {
  if (!Number.isInteger(numWarmupSteps) || numWarmupSteps < 0) throw new Error(`${op}: numWarmupSteps must be an integer >= 0, got ${numWarmupSteps}`);
  if (numTrainingSteps !== undefined && (!Number.isInteger(numTrainingSteps) || numTrainingSteps < 0)) {
    throw new Error(`${op}: numTrainingSteps must be an integer >= 0, got ${numTrainingSteps}`);
  }
}

/** The warmup ramp shared by all three: float(step) / float(max(1, numWarmupSteps)). */
function warmup(step: number, numWarmupSteps: number): number {
  return step / Math.max(1, numWarmupSteps);
}

/**
 * transformers' _get_constant_schedule_with_warmup_lr_lambda:
 *   step < warmup ? step / max(1, warmup) : 1
 */
export function constantWithWarmupLambda(numWarmupSteps: number): LrLambda {
  checkSteps("constantWithWarmupLambda", numWarmupSteps);
  return (step) => (step < numWarmupSteps ? warmup(step, numWarmupSteps) : 1);
}

/**
 * transformers' _get_linear_schedule_with_warmup_lr_lambda:
 *   step < warmup ? step / max(1, warmup) : max(0, (total - step) / max(1, total - warmup))
 */
export function linearWithWarmupLambda(numWarmupSteps: number, numTrainingSteps: number): LrLambda {
  checkSteps("linearWithWarmupLambda", numWarmupSteps, numTrainingSteps);
  return (step) =>
    step < numWarmupSteps ? warmup(step, numWarmupSteps) : Math.max(0, (numTrainingSteps - step) / Math.max(1, numTrainingSteps - numWarmupSteps));
}

/**
 * transformers' _get_cosine_schedule_with_warmup_lr_lambda (min_lr_rate 0):
 *   step < warmup ? step / max(1, warmup)
 *     : max(0, 0.5 * (1 + cos(pi * numCycles * 2 * progress))),
 *   progress = (step - warmup) / max(1, total - warmup)
 * With the default numCycles 0.5 the lr falls from 1 to 0 over the training steps (and, as in
 * transformers, rises again past numTrainingSteps).
 */
export function cosineWithWarmupLambda(numWarmupSteps: number, numTrainingSteps: number, numCycles = 0.5): LrLambda {
  checkSteps("cosineWithWarmupLambda", numWarmupSteps, numTrainingSteps);
  return (step) => {
    if (step < numWarmupSteps) return warmup(step, numWarmupSteps);
    const progress = (step - numWarmupSteps) / Math.max(1, numTrainingSteps - numWarmupSteps);
    return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * numCycles * 2 * progress)));
  };
}

export interface LRSchedulerState {
  /** Number of scheduler.step() calls so far (PyTorch's last_epoch). */
  lastEpoch: number;
  /** Each group's lr when the scheduler was created (PyTorch's base_lrs / initial_lr). */
  baseLrs: number[];
}

/**
 * torch.optim.lr_scheduler.LambdaLR: sets each group's lr to baseLr * lambda(lastEpoch).
 * Creating it applies lambda(0) at once; call step() after each optimizer.step(), as the
 * Hugging Face Trainer does (so with warmup the first update uses lr 0).
 */
export class LambdaLR {
  private lastEpoch = 0;
  private baseLrs: number[];

  constructor(
    readonly optimizer: SchedulableOptimizer,
    readonly lrLambda: LrLambda,
  ) {
    this.baseLrs = optimizer.paramGroups.map((g) => g.lr);
    this.apply();
  }

  /** Advances one step and sets the new lrs. */
  step(): void {
    this.lastEpoch++;
    this.apply();
  }

  /** The lr of each group now (PyTorch's get_last_lr()). */
  getLr(): number[] {
    return this.optimizer.paramGroups.map((g) => g.lr);
  }

  /** The steps taken so far. */
  get stepCount(): number {
    return this.lastEpoch;
  }

  /** JSON-able state for checkpoints. */
  stateDict(): LRSchedulerState {
    return { lastEpoch: this.lastEpoch, baseLrs: [...this.baseLrs] };
  }

  /** Restores a stateDict() and sets the lrs it implies. */
  loadStateDict(state: LRSchedulerState): void {
    if (state.baseLrs.length !== this.optimizer.paramGroups.length) {
      throw new Error(`LambdaLR.loadStateDict: the state has ${state.baseLrs.length} base lr(s) but the optimizer has ${this.optimizer.paramGroups.length} parameter group(s)`);
    }
    if (!Number.isInteger(state.lastEpoch) || state.lastEpoch < 0) throw new Error(`LambdaLR.loadStateDict: lastEpoch must be an integer >= 0, got ${state.lastEpoch}`);
    this.lastEpoch = state.lastEpoch;
    this.baseLrs = [...state.baseLrs];
    this.apply();
  }

  private apply(): void {
    const factor = this.lrLambda(this.lastEpoch);
    this.optimizer.paramGroups.forEach((g, i) => (g.lr = this.baseLrs[i]! * factor));
  }
}

export function getConstantScheduleWithWarmup(optimizer: SchedulableOptimizer, numWarmupSteps: number): LambdaLR {
  return new LambdaLR(optimizer, constantWithWarmupLambda(numWarmupSteps));
}

export function getLinearScheduleWithWarmup(optimizer: SchedulableOptimizer, numWarmupSteps: number, numTrainingSteps: number): LambdaLR {
  return new LambdaLR(optimizer, linearWithWarmupLambda(numWarmupSteps, numTrainingSteps));
}

export function getCosineScheduleWithWarmup(optimizer: SchedulableOptimizer, numWarmupSteps: number, numTrainingSteps: number, numCycles = 0.5): LambdaLR {
  return new LambdaLR(optimizer, cosineWithWarmupLambda(numWarmupSteps, numTrainingSteps, numCycles));
}

/** transformers' SchedulerType names that lowrank supports. */
export type SchedulerName = "constant" | "constant_with_warmup" | "linear" | "cosine";

/**
 * transformers' get_scheduler for the supported names ("constant" ignores warmup, as there).
 * numTrainingSteps is required for linear and cosine.
 */
export function getScheduler(
  name: SchedulerName,
  optimizer: SchedulableOptimizer,
  opts: { numWarmupSteps?: number; numTrainingSteps?: number } = {},
): LambdaLR {
  const warmupSteps = opts.numWarmupSteps ?? 0;
  const total = (): number => {
    if (opts.numTrainingSteps === undefined) throw new Error(`getScheduler: the "${name}" schedule needs numTrainingSteps`);
    return opts.numTrainingSteps;
  };
  switch (name) {
    case "constant": return getConstantScheduleWithWarmup(optimizer, 0);
    case "constant_with_warmup": return getConstantScheduleWithWarmup(optimizer, warmupSteps);
    case "linear": return getLinearScheduleWithWarmup(optimizer, warmupSteps, total());
    case "cosine": return getCosineScheduleWithWarmup(optimizer, warmupSteps, total());
    default: throw new Error(`getScheduler: unknown schedule "${name as string}"; use constant, constant_with_warmup, linear or cosine`);
  }
}
