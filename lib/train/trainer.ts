// The Trainer: the training loop of a causal language model (a PeftModel over GPT-2 in practice)
// with the Hugging Face Trainer's semantics where they matter for results:
//   - AdamW with PyTorch's semantics over the trainable parameters, one update per
//     `gradAccum` micro-batches;
//   - the loss of an update is the mean over all label tokens of its micro-batches (each
//     micro-batch's mean loss weighted by its share of the tokens, as transformers does with
//     num_items_in_batch), so accumulating k batches of b equals one batch of k·b;
//   - gradients clipped to a global L2 norm, then the update, then the lr schedule steps
//     (constant / linear / cosine with warmup, transformers' curves).
// Around the loop: eval loss on held-out data, a metrics log, checkpoints that resume bit for bit,
// a clean stop on request (Ctrl-C), a stop with a clear error on a NaN/Inf loss, a progress
// display, and events for code that embeds the trainer. Each step runs inside tidy() and frees
// everything it allocated; between steps the loop yields to the event loop.
import { EventEmitter } from "node:events";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { setImmediate as yieldToEventLoop } from "node:timers/promises";
import { toTensor } from "../io/safetensors.js";
import { describeNonFinite, findNonFiniteWeights } from "../models/gpt2/nonfinite.js";
import { scale } from "../ops/elementwise.js";
import { AdamW, type AdamWOptions } from "../optim/adamw.js";
import { clipGradNorm, gradNorm } from "../optim/clip.js";
import { getScheduler, type LambdaLR } from "../optim/schedule.js";
import type { Generator } from "../tensor/random.js";
import { tidy } from "../tensor/scope.js";
import { copyInto, formatShape, noGrad, type Tensor } from "../tensor/tensor.js";
import {
  CHECKPOINT_FORMAT, CHECKPOINT_VERSION, pruneCheckpoints, readCheckpoint, removeStaleTemporaries, resolveResume, writeCheckpoint, type TrainerState,
} from "./checkpoint.js";
import type { DataLoader, LoaderState } from "./collate.js";
import { MetricsLog, type StepRecord } from "./metrics.js";
import { ProgressReporter, type ProgressOptions } from "./progress.js";

/** One batch as the model takes it. */
export interface TrainBatchInput {
  inputIds: Tensor;
  attentionMask?: Tensor | null;
  labels?: Tensor | null;
}

/** What the Trainer needs from a model: a loss given labels, train/eval modes, named parameters. */
export interface TrainableModel {
  forward(input: TrainBatchInput): { loss?: Tensor };
  /** forward(input).loss without the logits where the model can (GPT-2, Llama family, PeftModel): the Trainer prefers it. */
  forwardLoss?(input: TrainBatchInput & { labels: Tensor }): Tensor;
  train(mode?: boolean): unknown;
  readonly training: boolean;
  /** Parameters with requiresGrad are trained; their names key the checkpoint. */
  namedParameters(): [string, Tensor][];
  /**
   * When present (PeftModel), checkpoints also hold the adapter in the model's own format. The
   * blocking form: a checkpoint is complete before the step after it starts.
   */
  savePretrainedSync?(dir: string): void;
}

export type ScheduleName = "constant" | "linear" | "cosine";

export interface TrainerOptions {
  model: TrainableModel;
  /** Training batches (shuffled per epoch from its seed; its position is checkpointed). */
  trainData: DataLoader;
  /** Held-out batches; one full pass per evaluation. */
  evalData?: DataLoader | null;
  /** Optimizer steps to run. Give maxSteps or epochs. */
  maxSteps?: number;
  /** Passes over the training data (may be fractional); steps = floor(epochs · batches / gradAccum). */
  epochs?: number;
  /** Micro-batches per optimizer step (default 1). */
  gradAccum?: number;
  /** Peak learning rate (default 2e-4). */
  lr?: number;
  /** AdamW's decoupled weight decay (default 0, as the Hugging Face Trainer). */
  weightDecay?: number;
  betas?: [number, number];
  eps?: number;
  /** Clip gradients to this global L2 norm (default 1.0); 0 turns clipping off. */
  maxGradNorm?: number;
  /** lr schedule after warmup (default "linear" decay to 0). */
  schedule?: ScheduleName;
  /** Steps of linear warmup from 0 to lr (default 0). */
  warmupSteps?: number;
  /** Warmup as a share of the steps, in [0, 1): ceil(ratio · steps), as transformers' warmup_ratio. */
  warmupRatio?: number;
  /** Measure the eval loss every N steps (default 0: only after the last step). */
  evalEvery?: number;
  /**
   * Checkpoint every N steps (default 0: only at the end and when stopped). Checkpoints need
   * outDir.
   */
  checkpointEvery?: number;
  /** Keep the newest N checkpoints (default 0: keep all). */
  keepCheckpoints?: number;
  /** metrics.jsonl and checkpoints/ go here; without it nothing is written to disk. */
  outDir?: string;
  /** false: outDir receives metrics.jsonl but no checkpoints (the run cannot be resumed). Default true. */
  saveCheckpoints?: boolean;
  /** The random streams the run draws from (model dropout, LoRA dropout): checkpointed by name. */
  generators?: Record<string, Generator>;
  /**
   * Continue a run: true = the latest checkpoint in <outDir>/checkpoints; a path = a checkpoint
   * folder, or a run folder (its latest checkpoint). Or call restore(dir) before train().
   */
  resume?: true | string;
  /**
   * Settings that shape the run (model, data, LoRA config, seed, ...): saved in checkpoints and
   * compared on resume, so a run is never continued with other settings by accident. The
   * trainer adds its own (lr, schedule, steps, batch layout).
   */
  config?: Record<string, unknown>;
  /** Progress display options (quiet, stream, mode, logEvery). */
  progress?: Omit<ProgressOptions, "totalSteps" | "startStep">;
  /**
   * Aborting it stops train() at the next step boundary, as stop() does: the step under way
   * finishes, a checkpoint is written (with outDir) and train() resolves with status "stopped".
   * A signal aborted before train() starts stops it before the first step (a signal stays
   * aborted: continue with a new Trainer and resume).
   */
  signal?: AbortSignal;
}

export interface EvalEvent {
  step: number;
  evalLoss: number;
}
export interface CheckpointEvent {
  step: number;
  dir: string;
}
export interface TrainerEvents {
  step: [StepRecord];
  eval: [EvalEvent];
  checkpoint: [CheckpointEvent];
}

export interface TrainResult {
  /** "completed": reached the last step; "stopped": stop() was called or the signal aborted (a checkpoint was written). */
  status: "completed" | "stopped";
  step: number;
  totalSteps: number;
  /** The newest checkpoint of this run, or null (no outDir, or stopped before any step). */
  checkpoint: string | null;
  history: StepRecord[];
}

/** Thrown when a step's loss or gradient norm is NaN or infinite; that step's update is not applied. */
export class NonFiniteLossError extends Error {
  constructor(
    readonly step: number,
    readonly what: "loss" | "gradient norm",
    readonly value: number,
    readonly lr: number,
    /** The newest checkpoint written before (kept), or null. */
    readonly lastCheckpoint: string | null,
    /** What to do, when the cause is known not to be the learning rate (default: lower it). */
    advice = "Lower the learning rate (or use warmup) and start again.",
  ) {
    super(
      `${what} is ${value} at step ${step} (lr ${lr.toExponential(2)}); training stopped without applying this update. ${advice}` +
        (lastCheckpoint ? ` The last good checkpoint is kept: ${lastCheckpoint}` : ""),
    );
    this.name = "NonFiniteLossError";
  }
}

/** Defaults of the options above (the CLI shows them in --help). */
export const TRAINER_DEFAULTS = {
  gradAccum: 1, lr: 2e-4, weightDecay: 0, betas: [0.9, 0.999] as [number, number], eps: 1e-8, maxGradNorm: 1,
  schedule: "linear" as ScheduleName, warmupSteps: 0, evalEvery: 0, checkpointEvery: 0, keepCheckpoints: 0,
};

function checkCount(name: string, v: number, min: number): number {
  if (!(Number.isInteger(v) && v >= min)) throw new Error(`Trainer: ${name} must be an integer >= ${min}, got ${v}`);
  return v;
}

/** JSON with object keys sorted, so equal settings compare equal whatever their key order. */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(",")}]`;
  if (v !== null && typeof v === "object") {
    return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canonical((v as Record<string, unknown>)[k])}`).join(",")}}`;
  }
  return JSON.stringify(v) ?? "undefined";
}

const isRecord = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === "object" && !Array.isArray(v);

/**
 * The settings that differ, each as "path was X, now Y" at the deepest level where they differ
 * (e.g. "trainer.lr was 0.01, now 0.001"), so a mismatch names the setting rather than two blobs.
 */
export function settingDifferences(saved: unknown, now: unknown, path = ""): string[] {
  if (isRecord(saved) && isRecord(now)) {
    return [...new Set([...Object.keys(saved), ...Object.keys(now)])].sort()
      .flatMap((k) => settingDifferences(saved[k], now[k], path ? `${path}.${k}` : k));
  }
  if (canonical(saved) === canonical(now)) return [];
  const show = (v: unknown) => (v === undefined ? "not set" : canonical(v));
  return [`${path || "settings"} was ${show(saved)}, now ${show(now)}`];
}

export class Trainer extends EventEmitter<TrainerEvents> {
  readonly model: TrainableModel;
  readonly optimizer: AdamW;
  readonly scheduler: LambdaLR;
  readonly totalSteps: number;
  readonly gradAccum: number;
  private readonly trainData: DataLoader;
  private readonly evalData: DataLoader | null;
  private readonly evalStart: LoaderState | null;
  private readonly trainable: [string, Tensor][];
  private readonly maxGradNorm: number;
  private readonly evalEvery: number;
  private readonly checkpointEvery: number;
  private readonly keepCheckpoints: number;
  private readonly checkpointsDir: string | null;
  private readonly metrics: MetricsLog | null;
  private readonly generators: Record<string, Generator>;
  private readonly config: Record<string, unknown>;
  private readonly options: TrainerOptions;
  private _step = 0;
  private tokens = 0;
  /** Seconds trained before this session (restored from a checkpoint). */
  private elapsedBefore = 0;
  private sessionStart = 0;
  /** Steps done when this train() call began (a NaN right after it cannot be the updates' fault). */
  private sessionStartSteps = 0;
  private lastCheckpoint: { step: number; dir: string } | null = null;
  private stopRequested = false;
  /** The resume option, until train() has applied it. */
  private pendingResume: true | string | undefined;
  private progress: ProgressReporter | null = null;
  readonly history: StepRecord[] = [];

  constructor(opts: TrainerOptions) {
    super();
    const d = TRAINER_DEFAULTS;
    this.options = opts;
    this.pendingResume = opts.resume;
    this.model = opts.model;
    this.trainData = opts.trainData;
    this.evalData = opts.evalData ?? null;
    this.evalStart = this.evalData?.state() ?? null;
    this.gradAccum = checkCount("gradAccum", opts.gradAccum ?? d.gradAccum, 1);
    this.evalEvery = checkCount("evalEvery", opts.evalEvery ?? d.evalEvery, 0);
    this.checkpointEvery = checkCount("checkpointEvery", opts.checkpointEvery ?? d.checkpointEvery, 0);
    this.keepCheckpoints = checkCount("keepCheckpoints", opts.keepCheckpoints ?? d.keepCheckpoints, 0);
    this.maxGradNorm = opts.maxGradNorm ?? d.maxGradNorm;
    if (!(this.maxGradNorm >= 0)) throw new Error(`Trainer: maxGradNorm must be >= 0 (0 = no clipping), got ${this.maxGradNorm}`);

    if ((opts.maxSteps === undefined) === (opts.epochs === undefined)) throw new Error("Trainer: give either maxSteps or epochs");
    if (opts.maxSteps !== undefined) {
      this.totalSteps = checkCount("maxSteps", opts.maxSteps, 1);
    } else {
      const epochs = opts.epochs!;
      if (!(epochs > 0 && Number.isFinite(epochs))) throw new Error(`Trainer: epochs must be a positive number, got ${epochs}`);
      this.totalSteps = Math.max(1, Math.floor((epochs * this.trainData.batchesPerEpoch) / this.gradAccum));
    }

    if (opts.warmupSteps !== undefined && opts.warmupRatio !== undefined) throw new Error("Trainer: give warmupSteps or warmupRatio, not both");
    const ratio = opts.warmupRatio ?? 0;
    if (!(ratio >= 0 && ratio < 1)) throw new Error(`Trainer: warmupRatio must be in [0, 1), got ${opts.warmupRatio}`);
    const warmupSteps = opts.warmupRatio !== undefined ? Math.ceil(ratio * this.totalSteps) : checkCount("warmupSteps", opts.warmupSteps ?? d.warmupSteps, 0);

    this.trainable = this.model.namedParameters().filter(([, p]) => p.requiresGrad);
    if (this.trainable.length === 0) {
      throw new Error("Trainer: the model has no trainable parameters (none has requiresGrad); wrap it with getPeftModel first");
    }
    const schedule = opts.schedule ?? d.schedule;
    if (!["constant", "linear", "cosine"].includes(schedule)) throw new Error(`Trainer: unknown schedule "${schedule}"; use constant, linear or cosine`);
    const lr = opts.lr ?? d.lr;
    const weightDecay = opts.weightDecay ?? d.weightDecay;
    const betas = opts.betas ?? d.betas;
    const eps = opts.eps ?? d.eps;
    this.optimizer = new AdamW(this.trainable.map(([, p]) => p), { lr, weightDecay, betas, eps });
    // transformers' "constant" ignores warmup; with warmup asked for, constant_with_warmup is meant.
    const name = schedule === "constant" && warmupSteps > 0 ? "constant_with_warmup" : schedule;
    this.scheduler = getScheduler(name, this.optimizer, { numWarmupSteps: warmupSteps, numTrainingSteps: this.totalSteps });

    if (opts.saveCheckpoints === false && (this.checkpointEvery > 0 || opts.resume !== undefined)) {
      throw new Error("Trainer: saveCheckpoints: false cannot go with checkpointEvery > 0 or resume");
    }
    this.checkpointsDir = opts.outDir === undefined || opts.saveCheckpoints === false ? null : join(opts.outDir, "checkpoints");
    this.metrics = opts.outDir === undefined ? null : new MetricsLog(join(opts.outDir, "metrics.jsonl"));
    this.generators = opts.generators ?? {};
    this.config = {
      ...opts.config,
      trainer: {
        totalSteps: this.totalSteps, gradAccum: this.gradAccum, lr, weightDecay, betas, eps, maxGradNorm: this.maxGradNorm,
        schedule, warmupSteps, batchesPerEpoch: this.trainData.batchesPerEpoch,
      },
    };
  }

  /** Optimizer steps done. */
  get step(): number {
    return this._step;
  }

  /** Asks the loop to stop after the current step; it writes a checkpoint (with outDir) and resolves as "stopped". */
  stop(): void {
    this.stopRequested = true;
  }

  /**
   * Runs (or continues) training to the last step; after a stop, calling it again continues.
   * Rejects with NonFiniteLossError on a NaN/Inf loss.
   */
  async train(): Promise<TrainResult> {
    this.stopRequested = false;
    if (this.pendingResume !== undefined) {
      if (this.pendingResume === true && this.options.outDir === undefined) throw new Error("Trainer: resume: true needs outDir (where the checkpoints are)");
      this.restore(resolveResume(this.pendingResume, this.options.outDir ?? ""));
      this.pendingResume = undefined;
    }
    if (this.options.outDir !== undefined) mkdirSync(this.options.outDir, { recursive: true });
    if (this.checkpointsDir) removeStaleTemporaries(this.checkpointsDir);
    this.metrics?.reset(this.history);
    this.sessionStart = performance.now();
    this.sessionStartSteps = this.history.length;
    this.progress = new ProgressReporter({ ...this.options.progress, totalSteps: this.totalSteps, startStep: this._step });
    this.progress.start();
    const wasTraining = this.model.training;
    this.model.train(true);
    try {
      while (this._step < this.totalSteps && !this.stopRequested && !this.options.signal?.aborted) {
        const record = this.trainStep();
        if (this.evalData && ((this.evalEvery > 0 && record.step % this.evalEvery === 0) || record.step === this.totalSteps)) {
          const evalLoss = this.evaluate();
          record.evalLoss = evalLoss;
          this.progress.log(`step ${record.step}: eval loss ${evalLoss.toFixed(4)}`);
          this.emit("eval", { step: record.step, evalLoss });
        }
        this.history.push(record);
        this.metrics?.append(record);
        this.progress.step(record);
        this.emit("step", record);
        if (this.checkpointEvery > 0 && record.step % this.checkpointEvery === 0) this.saveCheckpoint();
        // Lets timers, I/O and signal handlers (a Ctrl-C that calls stop() or aborts the signal) run between steps.
        await yieldToEventLoop();
      }
      // The final state (completed or stopped) is always checkpointed, once.
      if (this.checkpointsDir && this._step > 0 && this.lastCheckpoint?.step !== this._step) this.saveCheckpoint();
    } finally {
      this.progress.stop();
      this.progress = null;
      this.model.train(wasTraining);
    }
    return {
      status: this._step >= this.totalSteps ? "completed" : "stopped",
      step: this._step,
      totalSteps: this.totalSteps,
      checkpoint: this.lastCheckpoint?.dir ?? null,
      history: this.history,
    };
  }

  /**
   * After a NaN/Inf loss: NaN/Inf in the frozen base weights, or in an adapter before this session
   * applied any update, are not the learning rate's doing: name them instead of advising a lower one.
   */
  private nonFiniteAdvice(): string | undefined {
    const broken = findNonFiniteWeights(this.model);
    const base = broken.filter((w) => w.adapter === null);
    const sentence = (s: string) => s[0]!.toUpperCase() + s.slice(1);
    if (base.length > 0) {
      return `${sentence(describeNonFinite(base))}. Its weights are frozen, so training did not do this: use a model whose weights are finite.`;
    }
    if (broken.length > 0 && this.history.length === this.sessionStartSteps) {
      return `${sentence(describeNonFinite(broken))}, before any update of this run: start from an adapter whose weights are finite.`;
    }
    return undefined;
  }

  /** One optimizer step over gradAccum micro-batches; everything it allocates is freed. */
  /** The mean loss of one batch: forwardLoss where the model has it (no [B, T, V] logits kept), else forward's loss. */
  private batchLoss(b: TrainBatchInput & { labels: Tensor }): Tensor {
    const input = { inputIds: b.inputIds, attentionMask: b.attentionMask, labels: b.labels };
    if (this.model.forwardLoss) return this.model.forwardLoss(input);
    const { loss } = this.model.forward(input);
    if (!loss) throw new Error("Trainer: the model returned no loss; its forward must compute one when given labels");
    return loss;
  }

  private trainStep(): StepRecord {
    const started = performance.now();
    const step = this._step + 1;
    const lr = this.optimizer.paramGroups[0]!.lr;
    const params = this.optimizer.params();
    const outcome = tidy(() => {
      const batches = Array.from({ length: this.gradAccum }, () => this.trainData.next());
      const counted = batches.reduce((n, b) => n + b.lossTokens, 0);
      const tokens = batches.reduce((n, b) => n + b.tokens, 0);
      let loss = 0;
      for (const b of batches) {
        if (b.lossTokens === 0) continue; // nothing to learn here, and its mean loss would be 0/0
        const weight = b.lossTokens / counted;
        const value = tidy(() => {
          const loss = this.batchLoss(b);
          const v = loss.item();
          if (Number.isFinite(v)) scale(loss, weight).backward();
          return v;
        });
        if (!Number.isFinite(value)) return { ok: false as const, bad: "loss" as const, value };
        loss += value * weight;
      }
      const norm = this.maxGradNorm > 0 ? clipGradNorm(params, this.maxGradNorm) : gradNorm(params);
      if (!Number.isFinite(norm)) return { ok: false as const, bad: "gradient norm" as const, value: norm };
      // A step without label tokens has no gradient: AdamW skips params without one.
      this.optimizer.step();
      return { ok: true as const, loss: counted > 0 ? loss : null, norm, tokens };
    });
    this.optimizer.zeroGrad();
    if (!outcome.ok) throw new NonFiniteLossError(step, outcome.bad, outcome.value, lr, this.lastCheckpoint?.dir ?? null, this.nonFiniteAdvice());
    this.scheduler.step();
    this._step = step;
    this.tokens += outcome.tokens;
    const seconds = (performance.now() - started) / 1000;
    const at = this.trainData.state();
    return {
      step, epoch: at.epoch + at.index / this.trainData.batchesPerEpoch, loss: outcome.loss, lr, gradNorm: outcome.norm,
      tokens: this.tokens, tokensPerSec: outcome.tokens / Math.max(seconds, 1e-9), elapsed: this.elapsed(),
    };
  }

  private elapsed(): number {
    return this.elapsedBefore + (performance.now() - this.sessionStart) / 1000;
  }

  /**
   * Mean loss over every label token of the eval data (one full pass, eval mode, no gradients).
   * NaN when there is no eval data or it has no label token.
   */
  evaluate(): number {
    if (!this.evalData || !this.evalStart) return NaN;
    const data = this.evalData;
    data.restore(this.evalStart);
    const wasTraining = this.model.training;
    this.model.train(false);
    let sum = 0, count = 0;
    try {
      noGrad(() => {
        for (let i = 0; i < data.batchesPerEpoch; i++) {
          tidy(() => {
            const b = data.next();
            if (b.lossTokens === 0) return;
            const loss = this.batchLoss(b);
            sum += loss.item() * b.lossTokens;
            count += b.lossTokens;
          });
        }
      });
    } finally {
      this.model.train(wasTraining);
    }
    return sum / count;
  }

  /** Writes a checkpoint of the current state now (outDir required); returns its folder. */
  saveCheckpoint(): string {
    if (!this.checkpointsDir) throw new Error("Trainer.saveCheckpoint: no outDir was given, so there is nowhere to write checkpoints");
    const state: TrainerState = {
      format: CHECKPOINT_FORMAT, version: CHECKPOINT_VERSION, step: this._step, totalSteps: this.totalSteps,
      tokens: this.tokens, elapsed: this.elapsed(), scheduler: this.scheduler.stateDict(),
      generators: Object.fromEntries(Object.entries(this.generators).map(([k, g]) => [k, g.getState()])),
      trainLoader: this.trainData.state(), config: this.config, history: this.history,
    };
    const optimizer = this.optimizer.stateTensors();
    let dir: string;
    try {
      const model = this.model;
      dir = writeCheckpoint(this.checkpointsDir, {
        state, trainable: Object.fromEntries(this.trainable), optimizer,
        writeExtra: model.savePretrainedSync ? (d) => model.savePretrainedSync!(d) : undefined,
      });
    } finally {
      for (const t of Object.values(optimizer.tensors)) t.dispose();
    }
    this.lastCheckpoint = { step: this._step, dir };
    if (this.keepCheckpoints > 0) pruneCheckpoints(this.checkpointsDir, this.keepCheckpoints, dir);
    this.progress?.log(`step ${this._step}: checkpoint saved to ${dir}`);
    this.emit("checkpoint", { step: this._step, dir });
    return dir;
  }

  /**
   * Restores a checkpoint: trainable weights, optimizer, scheduler, random streams, data position,
   * step, metrics. The checkpoint must come from a run with the same settings and data.
   */
  restore(dir: string): void {
    try {
      this.restoreFrom(dir);
    } catch (err) {
      const message = (err as Error).message;
      // the optimizer's and scheduler's own checks do not know the folder: name it
      throw message.includes(dir) ? err : new Error(`resume from ${dir}: ${message}`, { cause: err });
    }
  }

  private restoreFrom(dir: string): void {
    const ckpt = readCheckpoint<AdamWOptions>(dir);
    const { state } = ckpt;
    const fail = (why: string) => new Error(`resume from ${dir}: ${why}`);

    const differs = settingDifferences(state.config, this.config);
    if (differs.length > 0) {
      throw fail(`the run's settings differ from the checkpoint's: ${differs.join("; ")}; resume with the same settings, or start a new run in another output folder`);
    }
    const names = this.trainable.map(([n]) => n);
    const missing = names.filter((n) => !ckpt.trainable.has(n));
    const unexpected = ckpt.trainable.names.filter((n) => !names.includes(n));
    if (missing.length || unexpected.length) {
      throw fail(`its trainable parameters do not match the model's (missing: ${missing.slice(0, 4).join(", ") || "none"}; unexpected: ${unexpected.slice(0, 4).join(", ") || "none"})`);
    }
    const genSaved = Object.keys(state.generators).sort().join(","), genNow = Object.keys(this.generators).sort().join(",");
    if (genSaved !== genNow) throw fail(`it saved random streams [${genSaved}] but this run has [${genNow}]`);

    noGrad(() => {
      for (const [name, p] of this.trainable) {
        const entry = ckpt.trainable.get(name);
        if (entry.shape.length !== p.ndim || entry.shape.some((s, i) => s !== p.shape[i])) {
          throw fail(`parameter ${name} is ${formatShape(entry.shape)} in the checkpoint but ${formatShape(p.shape)} in the model`);
        }
        const t = toTensor({ ...entry, name }, { device: p.device, dtype: p.dtype });
        copyInto(p, t);
        t.dispose();
      }
    });
    const device = this.trainable[0]![1].device;
    const tensors = Object.fromEntries(ckpt.optimizerTensors.names.map((n) => [n, toTensor({ ...ckpt.optimizerTensors.get(n), name: n }, { device })]));
    try {
      this.optimizer.loadStateTensors({ tensors, metadata: ckpt.optimizerMeta });
    } finally {
      for (const t of Object.values(tensors)) t.dispose();
    }
    this.scheduler.loadStateDict(state.scheduler);
    for (const [name, g] of Object.entries(this.generators)) g.setState(state.generators[name]!);
    try {
      this.trainData.restore(state.trainLoader);
    } catch (err) {
      throw fail(`the training data differs from the checkpoint's: ${(err as Error).message}`);
    }
    this._step = state.step;
    this.tokens = state.tokens;
    this.elapsedBefore = state.elapsed;
    this.history.splice(0, this.history.length, ...state.history);
    this.lastCheckpoint = { step: state.step, dir };
  }

  /** Frees the optimizer state (the model belongs to the caller). */
  dispose(): void {
    this.optimizer.dispose();
  }
}
