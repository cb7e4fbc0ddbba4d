// Softmax and log-softmax along a dimension, one native pass forward and one backward.
// Kernels: native/ops/softmax.h (CPU and CUDA twins).
import { native } from "../native/index.js";
import { normDim, record, shapeSize, type Tensor } from "../tensor/tensor.js";
import { checkFloat, contiguousInput, newFloat, withContiguous } from "./util.js";

/** softmax or log-softmax over the last dimension of x. */
function softmaxLast(x: Tensor, log: boolean, op: string): Tensor {
  const cols = x.shape[x.ndim - 1]!, rows = shapeSize(x.shape.slice(0, -1));
  const out = newFloat(x.shape, x);
  withContiguous([x], (xc) => native().softmax({ x: xc.nativeView, y: out.nativeView, rows, cols, log }));
  record(
    op, out, [x],
    (g, [ys]) => {
      const dx = newFloat(ys!.shape, ys!);
      withContiguous([g], (gc) =>
        native().softmaxBackward({ y: ys!.nativeView, dy: gc.nativeView, dx: dx.nativeView, rows, cols, log }),
      );
      return [dx];
    },
    [out],
  );
  return out;
}

/** Runs a last-dimension op along `dim` by swapping it last and back (views, recorded). */
function alongDim(x: Tensor, dim: number, op: string, fn: (t: Tensor) => Tensor): Tensor {
  checkFloat(op, x);
  if (x.ndim === 0) throw new Error(`${op}: x must have at least one dimension, got a 0-d tensor`);
  const d = normDim(dim, x.ndim, op);
  if (d === x.ndim - 1) return fn(x);
  const moved = x.transpose(d, -1);
  const y = fn(moved);
  moved.dispose();
  const out = y.transpose(d, -1);
  y.dispose();
  return out;
}

/** exp(x) / sum(exp(x)) along `dim` (the row max is subtracted first, so large values are safe). */
export function softmax(x: Tensor, dim = -1): Tensor {
  return alongDim(x, dim, "softmax", (t) => softmaxLast(t, false, "softmax"));
}

/** x - logsumexp(x) along `dim`, computed stably (never log of a softmax that underflowed). */
export function logSoftmax(x: Tensor, dim = -1): Tensor {
  return alongDim(x, dim, "logSoftmax", (t) => softmaxLast(t, true, "logSoftmax"));
}
