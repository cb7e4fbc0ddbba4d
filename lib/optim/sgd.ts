// SGD with torch.optim.SGD's semantics (coupled weight decay, momentum with dampening, Nesterov),
// as one fused native step over all params.
import { keep } from "../tensor/scope.js";
import { emptyLike, noGrad, type Tensor } from "../tensor/tensor.js";
import { native, type View } from "../native/index.js";
import { byDevice, pack } from "./fused.js";
import { definedOnly, Optimizer, type Params, type StateSpec } from "./optimizer.js";

export interface SGDOptions {
  /** Learning rate (default 1e-3). */
  lr: number;
  /** Momentum factor (default 0: plain SGD, no state). */
  momentum: number;
  /** Dampening of the gradient added to the momentum buffer (default 0). */
  dampening: number;
  /** L2 penalty added to the gradient: g + weightDecay * p (default 0). */
  weightDecay: number;
  /** Nesterov momentum (default false; needs momentum > 0 and dampening 0). */
  nesterov: boolean;
}

/** Per-param state when momentum != 0 (PyTorch's momentum_buffer). */
export type SGDState = { momentumBuffer: Tensor };

const SGD_DEFAULTS: SGDOptions = { lr: 1e-3, momentum: 0, dampening: 0, weightDecay: 0, nesterov: false };

/**
 * torch.optim.SGD. Per param with a gradient:
 *   g = g + wd·p;  buf = g on the first step, else μ·buf + (1 - dampening)·g
 *   g = nesterov ? g + μ·buf : buf;  p -= lr·g
 * (the momentum lines only when momentum != 0).
 */
export class SGD extends Optimizer<SGDOptions, SGDState> {
  constructor(params: Params<SGDOptions>, options: Partial<SGDOptions> = {}) {
    super("SGD", params, { ...SGD_DEFAULTS, ...definedOnly(options) });
  }

  step(): void {
    const work = this.paramsWithGrad().map(({ param, grad, group }) => {
      const { lr, momentum, dampening, weightDecay, nesterov } = group;
      const existing = this.state.get(param)?.momentumBuffer ?? null;
      // The first step writes the buffer (buf = g), so it starts uninitialized.
      const fresh = momentum !== 0 && !existing ? noGrad(() => keep(emptyLike(param.shape, "float32", param.deviceInfo))) : null;
      const buffer = existing ?? fresh;
      return { param, fresh, row: [param, grad, buffer], hyper: [lr, momentum, dampening, weightDecay, nesterov ? 1 : 0, fresh ? 1 : 0] };
    });
    try {
      for (const items of byDevice(work, (w) => w.param)) {
        const { columns: [params, grads, momentumBuffers], sizes } = pack(items.map((w) => w.row));
        native().sgd({ params: params as View[], grads: grads as View[], momentumBuffers: momentumBuffers!, sizes, hyper: Float64Array.from(items.flatMap((w) => w.hyper)) });
      }
    } catch (err) {
      work.forEach((w) => w.fresh?.dispose());
      throw err;
    }
    for (const { param, fresh } of work) if (fresh) this.state.set(param, { momentumBuffer: fresh });
  }

  protected validateOptions(o: SGDOptions, where: string): void {
    if (!(o.lr >= 0)) throw new Error(`SGD: invalid lr ${o.lr} in ${where}; it must be >= 0`);
    if (!(o.momentum >= 0)) throw new Error(`SGD: invalid momentum ${o.momentum} in ${where}; it must be >= 0`);
    if (!(o.weightDecay >= 0)) throw new Error(`SGD: invalid weightDecay ${o.weightDecay} in ${where}; it must be >= 0`);
    if (!Number.isFinite(o.dampening)) throw new Error(`SGD: invalid dampening ${o.dampening} in ${where}`);
    if (o.nesterov && (o.momentum <= 0 || o.dampening !== 0)) {
      throw new Error(`SGD: nesterov needs momentum > 0 and dampening 0 (${where} has momentum ${o.momentum}, dampening ${o.dampening})`);
    }
  }

  protected stateSpec(options: SGDOptions): StateSpec {
    return { tensors: options.momentum !== 0 ? ["momentumBuffer"] : [], numbers: [] };
  }
}
