// Joining and cutting tensors along a dimension: concat, stack, split, and expand (a broadcast view).
// Cuts and expansions are views sharing storage; joins copy each input once into the output.
import { copyInto, emptyLike, formatShape, normDim, record, Tensor } from "../tensor/tensor.js";
import { sumToShape } from "./reduce.js";
import { checkSameDevice } from "./util.js";

/**
 * Joins tensors along `dim` ([.., a, ..] + [.., b, ..] -> [.., a + b, ..]); the other dims must
 * match. Any dtype; the gradient of each input is its window of the output gradient (a view).
 */
export function concat(tensors: readonly Tensor[], dim = 0): Tensor {
  const op = "concat";
  const first = tensors[0];
  if (!first) throw new Error(`${op}: needs at least one tensor`);
  checkSameDevice(op, ...tensors);
  const d = normDim(dim, first.ndim, op);
  tensors.forEach((t, i) => {
    if (t.dtype !== first.dtype) throw new Error(`${op}: tensor ${i} is ${t.dtype} but tensor 0 is ${first.dtype}; convert with .to(device, dtype)`);
    if (t.ndim !== first.ndim || t.shape.some((s, j) => j !== d && s !== first.shape[j])) {
      throw new Error(
        `${op}: tensor ${i} has shape ${formatShape(t.shape)} but tensor 0 has ${formatShape(first.shape)}; ` +
          `all dims except dim ${d} must match (reshape or unsqueeze the inputs first)`,
      );
    }
  });
  const starts: number[] = [];
  let total = 0;
  for (const t of tensors) {
    starts.push(total);
    total += t.shape[d]!;
  }
  const shape = [...first.shape];
  shape[d] = total;
  const out = emptyLike(shape, first.dtype, first.deviceInfo);
  tensors.forEach((t, i) => {
    const window = out.slice(d, starts[i]!, starts[i]! + t.shape[d]!);
    copyInto(window, t);
    window.dispose();
  });
  record(op, out, tensors, (g) => tensors.map((t, i) => (t.requiresGrad ? g.slice(d, starts[i]!, starts[i]! + t.shape[d]!) : null)));
  return out;
}

/** Joins same-shaped tensors along a new dimension `dim` (0 <= dim <= ndim; negative counts from the end). */
export function stack(tensors: readonly Tensor[], dim = 0): Tensor {
  const op = "stack";
  const first = tensors[0];
  if (!first) throw new Error(`${op}: needs at least one tensor`);
  tensors.forEach((t, i) => {
    if (t.ndim !== first.ndim || t.shape.some((s, j) => s !== first.shape[j])) {
      throw new Error(`${op}: tensor ${i} has shape ${formatShape(t.shape)} but tensor 0 has ${formatShape(first.shape)}; stacked tensors must have equal shapes`);
    }
  });
  const d = normDim(dim, first.ndim + 1, op);
  const views = tensors.map((t) => t.unsqueeze(d));
  const out = concat(views, d);
  views.forEach((v) => v.dispose());
  return out;
}

/**
 * Cuts `t` along `dim` into views: pieces of `sizes[i]` elements, or of `size` elements each when a
 * number is given (the last piece takes the remainder, like torch.split).
 */
export function split(t: Tensor, sizes: number | readonly number[], dim = 0): Tensor[] {
  const op = "split";
  const d = normDim(dim, t.ndim, op);
  const len = t.shape[d]!;
  let pieces: number[];
  if (typeof sizes === "number") {
    if (!Number.isInteger(sizes) || sizes <= 0) throw new Error(`${op}: piece size must be a positive integer, got ${sizes}`);
    pieces = Array.from({ length: Math.max(1, Math.ceil(len / sizes)) }, (_, i) => Math.min(sizes, len - i * sizes));
  } else {
    pieces = [...sizes];
    const total = pieces.reduce((a, b) => a + b, 0);
    if (pieces.some((s) => !Number.isInteger(s) || s < 0) || total !== len) {
      throw new Error(`${op}: sizes [${pieces.join(", ")}] must be integers >= 0 summing to ${len}, the size of dim ${d} of ${formatShape(t.shape)}`);
    }
  }
  let start = 0;
  return pieces.map((s) => t.slice(d, start, (start += s)));
}

/**
 * A view of `t` broadcast to `shape` without copying: size-1 dims (and new leading dims) repeat with
 * stride 0; -1 keeps a dim. Like torch.expand, the view must not be written to. Backward sums the
 * gradient back over the repeated dims.
 */
export function expand(t: Tensor, shape: readonly number[]): Tensor {
  const op = "expand";
  const lead = shape.length - t.ndim;
  const bad = () => new Error(`${op}: cannot expand ${formatShape(t.shape)} to ${formatShape(shape)}; only size-1 dims can grow (and new dims go in front)`);
  if (lead < 0) throw bad();
  const target = shape.map((s, i) => (s === -1 && i >= lead ? t.shape[i - lead]! : s));
  const strides = target.map((s, i) => {
    if (!Number.isInteger(s) || s < 0) throw bad();
    if (i < lead) return 0;
    const own = t.shape[i - lead]!;
    if (own === s) return t.strides[i - lead]!;
    if (own === 1) return 0;
    throw bad();
  });
  const out = new Tensor(t.storage.retain(), target, t.dtype, strides, t.offset);
  const from = t.shape;
  record(op, out, [t], (g) => [sumToShape(g, from)]);
  return out;
}
