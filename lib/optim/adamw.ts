// AdamW with torch.optim.AdamW's semantics (decoupled weight decay, bias-corrected moments,
// eps added after the bias-corrected square root), as one fused native step over all params.
import { native, type View } from "../native/index.js";
import { zerosLike } from "../tensor/creation.js";
import { keep } from "../tensor/scope.js";
import { noGrad, type Tensor } from "../tensor/tensor.js";
import { byDevice, pack } from "./fused.js";
import { definedOnly, Optimizer, type Params, type StateSpec } from "./optimizer.js";

export interface AdamWOptions {
  /** Learning rate (default 1e-3). */
  lr: number;
  /** Decay rates of the first and second moment averages (default [0.9, 0.999]). */
  betas: [number, number];
  /** Added to the denominator for stability (default 1e-8). */
  eps: number;
  /** Decoupled weight decay: each step multiplies params by 1 - lr * weightDecay (default 1e-2). */
  weightDecay: number;
}

/** Per-param state, named as PyTorch's step / exp_avg / exp_avg_sq. */
export type AdamWState = { step: number; expAvg: Tensor; expAvgSq: Tensor };

const ADAMW_DEFAULTS: AdamWOptions = { lr: 1e-3, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 1e-2 };
const ADAMW_STATE: StateSpec = { tensors: ["expAvg", "expAvgSq"], numbers: ["step"] };

/**
 * torch.optim.AdamW (amsgrad off). Per param with a gradient, at step t:
 *   p *= 1 - lr*wd;  m = lerp(m, g, 1-β1);  v = β2 v + (1-β2) g²
 *   p -= lr/(1-β1^t) · m / (sqrt(v)/sqrt(1-β2^t) + eps)
 * in float32 with torch's operation order (native/ops/optim.h). Param groups take their own
 * options, e.g. no weight decay for biases and LayerNorm weights:
 *   new AdamW([{ params: weights }, { params: biases, weightDecay: 0 }], { lr: 1e-4 })
 */
export class AdamW extends Optimizer<AdamWOptions, AdamWState> {
  constructor(params: Params<AdamWOptions>, options: Partial<AdamWOptions> = {}) {
    super("AdamW", params, { ...ADAMW_DEFAULTS, ...definedOnly(options) });
  }

  step(): void {
    const work = this.paramsWithGrad().map(({ param, grad, group }) => {
      const state = this.state.get(param) ?? this.initState(param);
      const { lr, betas, eps, weightDecay } = group;
      return { param, state, row: [param, grad, state.expAvg, state.expAvgSq], hyper: [lr, betas[0], betas[1], eps, weightDecay, state.step + 1] };
    });
    for (const items of byDevice(work, (w) => w.param)) {
      const { columns, sizes } = pack(items.map((w) => w.row));
      const [params, grads, expAvgs, expAvgSqs] = columns as View[][];
      native().adamw({ params: params!, grads: grads!, expAvgs: expAvgs!, expAvgSqs: expAvgSqs!, sizes, hyper: Float64Array.from(items.flatMap((w) => w.hyper)) });
    }
    for (const { state } of work) state.step += 1;
  }

  protected validateOptions(o: AdamWOptions, where: string): void {
    const [b1, b2] = Array.isArray(o.betas) ? o.betas : [NaN, NaN];
    if (!(o.lr >= 0)) throw new Error(`AdamW: invalid lr ${o.lr} in ${where}; it must be >= 0`);
    if (!(o.eps >= 0)) throw new Error(`AdamW: invalid eps ${o.eps} in ${where}; it must be >= 0`);
    if (!(b1! >= 0 && b1! < 1) || !(b2! >= 0 && b2! < 1)) throw new Error(`AdamW: invalid betas [${o.betas}] in ${where}; each must be in [0, 1)`);
    if (!(o.weightDecay >= 0)) throw new Error(`AdamW: invalid weightDecay ${o.weightDecay} in ${where}; it must be >= 0`);
  }

  protected stateSpec(): StateSpec {
    return ADAMW_STATE;
  }

  private initState(param: Tensor): AdamWState {
    const state = noGrad(() => ({ step: 0, expAvg: keep(zerosLike(param)), expAvgSq: keep(zerosLike(param)) }));
    this.state.set(param, state);
    return state;
  }
}
