// Dropout from the counter-based Philox stream: the mask is recomputed, never stored.
// Kernels: native/ops/dropout.h (CPU and CUDA twins).
import { native } from "../native/index.js";
import { defaultGenerator, type Generator } from "../tensor/random.js";
import { formatShape, isSoleView, record, type Tensor } from "../tensor/tensor.js";
import { add } from "./elementwise.js";
import { checkFloat, checkSameDevice, newFloat, withContiguous } from "./util.js";

export interface DropoutOptions {
  /** Identity when false (evaluation). Default true, as in PyTorch's F.dropout. */
  training?: boolean;
  /** The random stream the mask is drawn from (default: the global generator). */
  generator?: Generator;
  /**
   * Returns residual + dropout(x) (a transformer's residual connection), in one pass over the three
   * tensors instead of two ops; the same values, rounded as the two ops round them. Shaped as x.
   */
  residual?: Tensor | null;
}

/**
 * Zeroes each element with probability p and scales the kept ones by 1/(1-p).
 *
 * The mask is never stored. It comes from the Philox stream (native/core/philox.h): the call
 * reserves x.size counters from the generator, (seed, offset) = gen.next(x.size), and element i
 * of x in row-major order is kept when philox_keep(seed, offset, i, p), i.e. when the uniform from
 * lane 0 of Philox block (offset + i) under key seed is >= p. The backward recomputes the same
 * mask from the same (seed, offset), and so does any kernel that fuses dropout (the LoRA kernel
 * drops its input x [N, k] with this rule, element i = n*k + j): the same generator state gives
 * the same mask on every backend.
 */
export function dropout(x: Tensor, p: number, opts: DropoutOptions = {}): Tensor {
  const op = "dropout";
  const residual = opts.residual ?? null;
  checkFloat(op, x, ...(residual ? [residual] : []));
  if (!(p >= 0 && p <= 1)) throw new Error(`${op}: p must be a probability in [0, 1], got ${p}`);
  if (residual) {
    checkSameDevice(op, x, residual);
    if (residual.ndim !== x.ndim || residual.shape.some((s, i) => s !== x.shape[i])) {
      throw new Error(`${op}: residual ${formatShape(residual.shape)} must have the shape of x ${formatShape(x.shape)}`);
    }
  }
  if (p === 0 || opts.training === false) {
    if (residual) return add(residual, x);
    const out = x.detach();
    record(op, out, [x], (g) => [g.alias()]);
    return out;
  }
  const n = x.size;
  const { seed, offset } = (opts.generator ?? defaultGenerator).next(n);
  const scale = p === 1 ? 0 : 1 / (1 - p);
  /** src ⊙ mask/(1-p) into dst (which may be src), plus `plus` when given (the residual). */
  const apply = (src: Tensor, dst: Tensor, plus: Tensor | null = null): Tensor => {
    withContiguous(plus ? [src, plus] : [src], (c, a) => native().dropout({ x: c.nativeView, y: dst.nativeView, n, p, scale, seed, offset, residual: a?.nativeView ?? null }));
    return dst;
  };
  const out = apply(x, newFloat(x.shape, x), residual);
  if (residual) {
    // The residual's gradient is g itself; x's is g masked, so into a buffer of its own (and only when wanted).
    record(op, out, [residual, x], (g) => [g.alias(), x.requiresGrad ? apply(g, newFloat(g.shape, g)) : null]);
  } else {
    record(op, out, [x], (g) => [apply(g, isSoleView(g) ? g.alias() : newFloat(g.shape, g))]); // over g when no one else sees it
  }
  return out;
}
