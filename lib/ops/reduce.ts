// Sums and means over dimensions, and the reduction that undoes broadcasting in backward.
// Kernels: sumRows of native/ops/elementwise.h (mean scales with its Scale op); called directly,
// since the element-wise ops' broadcasting backward needs sumToShape from here.
import { Unary } from "../native/enums.js";
import { native } from "../native/index.js";
import { DTYPE_SIZE } from "../tensor/dtype.js";
import { emptyLike, formatShape, normDim, record, shapeSize, type Tensor } from "../tensor/tensor.js";
import { broadcastShapes, broadcastStrides, checkFloat, newFloat, stridedView, withContiguous } from "./util.js";

function normDims(t: Tensor, dims: number | readonly number[] | undefined, op: string): number[] {
  if (dims === undefined) return [...t.shape.keys()];
  const list = (typeof dims === "number" ? [dims] : [...dims]).map((d) => normDim(d, t.ndim, op));
  if (new Set(list).size !== list.length) throw new Error(`${op}: repeated dimension in [${list.join(", ")}]`);
  return list.sort((a, b) => a - b);
}

/**
 * Sum over `dims` (all when omitted). The reduced dimensions are moved last, made contiguous and
 * summed row by row in double precision.
 */
export function sum(t: Tensor, dims?: number | readonly number[], keepDim = false): Tensor {
  return scaledSum("sum", t, dims, keepDim, 1);
}

/** Mean over `dims` (all when omitted). */
export function mean(t: Tensor, dims?: number | readonly number[], keepDim = false): Tensor {
  const count = shapeSize(normDims(t, dims, "mean").map((d) => t.shape[d]!));
  return scaledSum("mean", t, dims, keepDim, 1 / count);
}

/** x * alpha into a new tensor, by the element-wise Scale kernel. */
function scaled(x: Tensor, alpha: number): Tensor {
  const out = newFloat(x.shape, x);
  withContiguous([x], (c) => native().unary({ op: Unary.Scale, x: c.nativeView, out: out.nativeView, n: c.size, alpha }));
  return out;
}

/** alpha * sum(t, dims): the sum, then (for mean) a scale by alpha; recorded as one op. */
function scaledSum(op: string, t: Tensor, dims: number | readonly number[] | undefined, keepDim: boolean, alpha: number): Tensor {
  checkFloat(op, t);
  const reduced = normDims(t, dims, op);
  const kept = [...t.shape.keys()].filter((d) => !reduced.includes(d));
  const keptShape = kept.map((d) => t.shape[d]!);
  const outShape = keepDim ? t.shape.map((s, d) => (reduced.includes(d) ? 1 : s)) : keptShape;
  const cols = shapeSize(reduced.map((d) => t.shape[d]!));
  let out = newFloat(outShape, t);
  const moved = t.permute([...kept, ...reduced]);
  withContiguous([moved], (m) => native().sumRows({ x: m.nativeView, out: out.nativeView, rows: shapeSize(keptShape), cols }));
  moved.dispose();
  if (alpha !== 1) {
    const sums = out;
    out = scaled(sums, alpha);
    sums.dispose();
  }
  const inShape = t.shape;
  record(op, out, [t], (g) => {
    const gs = alpha === 1 ? g : scaled(g, alpha);
    const gx = expandTo(keepDim ? gs : gs.reshape(t.shape.map((s, d) => (reduced.includes(d) ? 1 : s))), inShape);
    if (gs !== g) gs.dispose();
    return [gx];
  });
  return out;
}

/** A contiguous copy of `t` broadcast to `shape`. Differentiable (its backward is sumToShape). */
export function expandTo(t: Tensor, shape: readonly number[]): Tensor {
  const out = emptyLike(shape, t.dtype, t.deviceInfo);
  native().copyStrided({ src: stridedView(t, broadcastStrides(t, shape)), dst: out.nativeView, shape, elemSize: DTYPE_SIZE[t.dtype] });
  const from = t.shape;
  record("expand", out, [t], (g) => [sumToShape(g, from)]);
  return out;
}

/** Sums g over the dimensions that broadcasting added or stretched, giving `shape`. */
export function sumToShape(g: Tensor, shape: readonly number[]): Tensor {
  if (g.ndim === shape.length && g.shape.every((s, i) => s === shape[i])) return g.alias();
  broadcastShapes("sumToShape", shape, g.shape);
  const lead = g.ndim - shape.length;
  if (lead < 0) throw new Error(`sumToShape: cannot reduce ${formatShape(g.shape)} to ${formatShape(shape)}`);
  const dims = g.shape.map((_, i) => i).filter((i) => i < lead || (shape[i - lead] === 1 && g.shape[i] !== 1));
  const s = sum(g, dims, true);
  const out = s.reshape([...shape]);
  s.dispose();
  return out;
}

