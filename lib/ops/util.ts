// Checks and shape helpers shared by the op families.
// Every op family imports this file, so loading any op loads the autograd engine too: it registers
// itself as Tensor.backward() (lib/tensor cannot import it, being the layer below).
import "../autograd/engine.js";
import type { View } from "../native/index.js";
import { emptyLike, formatShape, Tensor } from "../tensor/tensor.js";

/** Throws unless every tensor is float32 and all share one device. */
export function checkFloat(op: string, ...ts: Tensor[]): void {
  for (const t of ts) {
    if (t.dtype !== "float32") {
      throw new Error(`${op}: expects float32 tensors, got ${t.dtype} ${formatShape(t.shape)}; convert with .to(device, "float32")`);
    }
  }
  checkSameDevice(op, ...ts);
}

/**
 * Throws unless `weight` is float32 or bfloat16, and a bfloat16 one frozen: bf16 tensors are the
 * frozen weights of a `dtype: "bfloat16"` model; what trains stays float32.
 */
export function checkWeight(op: string, weight: Tensor): void {
  if (weight.dtype !== "float32" && weight.dtype !== "bfloat16") {
    throw new Error(`${op}: weight must be float32 or bfloat16, got ${weight.dtype} ${formatShape(weight.shape)}`);
  }
  if (weight.dtype === "bfloat16" && weight.requiresGrad) {
    throw new Error(
      `${op}: weight ${formatShape(weight.shape)} is bfloat16 and requires grad; bfloat16 weights are frozen ` +
        `(train LoRA adapters on them, or load the model with dtype "float32" to train the weight itself)`,
    );
  }
}

export function checkSameDevice(op: string, ...ts: Tensor[]): void {
  const d = ts[0]?.device;
  for (const t of ts) {
    if (t.device !== d) throw new Error(`${op}: tensors are on different devices (${d} and ${t.device}); move them with .to(device)`);
  }
}

/** NumPy broadcasting of two shapes. */
export function broadcastShapes(op: string, a: readonly number[], b: readonly number[]): number[] {
  const n = Math.max(a.length, b.length);
  const out = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    const da = a[a.length - n + i] ?? 1, db = b[b.length - n + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1) {
      throw new Error(`${op}: shapes ${formatShape(a)} and ${formatShape(b)} cannot be broadcast (dimension ${i}: ${da} vs ${db})`);
    }
    out[i] = da === 1 ? db : da;
  }
  return out;
}

/** Strides that read `t` as if expanded to `shape` (0 on broadcast dimensions). */
export function broadcastStrides(t: Tensor, shape: readonly number[]): number[] {
  const lead = shape.length - t.ndim;
  return shape.map((_, i) => (i < lead || t.shape[i - lead] === 1 ? 0 : t.strides[i - lead]!));
}

/**
 * True when a backward rule may write its result over the incoming gradient g and return g.alias():
 * the engine hands g over and disposes it after the rule, so when no other view shares its storage
 * (a user's gradient, an alias another input still waits on), nothing else reads it again.
 */
export function ownsGrad(g: Tensor): boolean {
  return g.isContiguous() && g.storage.refCount === 1;
}

/** A contiguous float32 output on t's device. */
export function newFloat(shape: readonly number[], like: Tensor): Tensor {
  return emptyLike(shape, "float32", like.deviceInfo);
}

/** t itself when contiguous, else a contiguous copy (the caller disposes it when it differs from t). */
export function contiguousInput(t: Tensor): Tensor {
  return t.isContiguous() ? t : t.contiguous();
}

/** Runs fn with contiguous versions of the inputs, disposing any copies afterwards. */
export function withContiguous<T>(ts: Tensor[], fn: (...cs: Tensor[]) => T): T {
  const cs = ts.map(contiguousInput);
  try {
    return fn(...cs);
  } finally {
    cs.forEach((c, i) => c !== ts[i] && c.dispose());
  }
}

/** The multi-index of row-major flat index `flat` in `shape` (for error messages naming a position). */
export function unravel(flat: number, shape: readonly number[]): number[] {
  const idx = new Array<number>(shape.length);
  for (let d = shape.length - 1; d >= 0; d--) {
    idx[d] = flat % shape[d]!;
    flat = Math.floor(flat / shape[d]!);
  }
  return idx;
}

/** An optional operand as a native view (null when absent). */
export const viewOrNull = (t: Tensor | null): View | null => (t ? t.nativeView : null);

/** A tensor's storage and offset read with other strides (e.g. broadcast ones: 0 repeats). */
export const stridedView = (t: Tensor, strides: readonly number[]): View => ({ storage: t.storage.native, offset: t.byteOffset, strides });
