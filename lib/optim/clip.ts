// Gradient norms and clipping, as torch.nn.utils.get_total_norm / clip_grad_norm_: the norm is
// measured natively in one pass per device (|g|^p summed in double per tensor) and the scaling is
// one fused native call per device.
import type { Tensor } from "../tensor/tensor.js";
import { native, type View } from "../native/index.js";
import { byDevice, pack } from "./fused.js";
import { describeParam } from "./optimizer.js";

export interface ClipGradNormOptions {
  /** Throw when the total norm is NaN or infinite instead of scaling by it (default false, like PyTorch). */
  errorIfNonfinite?: boolean;
}

function gradsOf(params: Iterable<Tensor>, op: string): Tensor[] {
  const grads: Tensor[] = [];
  let index = 0;
  for (const p of params) {
    const g = p.grad;
    if (g && (g.dtype !== "float32" || !g.isContiguous())) {
      throw new Error(`${op}: the gradient of ${describeParam(p, index)} is a ${g.isContiguous() ? "" : "non-contiguous "}${g.dtype} tensor; gradients must be contiguous float32 (assign g.contiguous().to(g.device, "float32") to .grad)`);
    }
    if (g) grads.push(g);
    index++;
  }
  return grads;
}

/**
 * The p-norm of all gradients together, as if concatenated into one vector (params without a
 * gradient are skipped; 0 when none has one). normType > 0, or Infinity for the max norm.
 * Computed in double and returned rounded to float32, the dtype PyTorch returns it in.
 */
export function gradNorm(params: Iterable<Tensor>, normType = 2): number {
  return totalNorm("gradNorm", gradsOf(params, "gradNorm"), normType);
}

function totalNorm(op: string, grads: Tensor[], normType: number): number {
  if (!(normType > 0)) throw new Error(`${op}: normType must be > 0 (a p-norm) or Infinity, got ${normType}`);
  let acc = 0;
  for (const group of byDevice(grads, (g) => g)) {
    const { columns, sizes } = pack(group.map((g) => [g]));
    for (const s of native().sumPow({ tensors: columns[0] as View[], sizes, p: normType })) {
      // the max keeps NaN, like torch's inf-norm
      acc = normType === Infinity ? (Number.isNaN(acc) || acc > s ? acc : s) : acc + s;
    }
  }
  const total = normType === Infinity ? acc : normType === 2 ? Math.sqrt(acc) : acc ** (1 / normType);
  return Math.fround(total);
}

/**
 * torch.nn.utils.clip_grad_norm_: measures the total gradient norm, then multiplies every
 * gradient in place by clamp(maxNorm / (total + 1e-6), max=1), in float32 as torch does
 * (so a NaN norm turns the gradients into NaN unless errorIfNonfinite). Returns the total norm
 * measured before clipping.
 */
export function clipGradNorm(params: Iterable<Tensor>, maxNorm: number, normType = 2, opts: ClipGradNormOptions = {}): number {
  const grads = gradsOf(params, "clipGradNorm");
  const total = totalNorm("clipGradNorm", grads, normType);
  if (opts.errorIfNonfinite && !Number.isFinite(total)) {
    throw new Error(
      `clipGradNorm: the total norm of order ${normType} of the gradients is non-finite (${total}), so it cannot be clipped; ` +
        "look for NaN/Inf in the loss or lower the learning rate, or pass errorIfNonfinite: false to scale by it anyway",
    );
  }
  // torch: clip_coef = max_norm / (total_norm + 1e-6), a Python float divided by a float32
  // tensor, which torch evaluates as total.reciprocal() * max_norm; then clamp(max=1.0).
  const denom = Math.fround(total + Math.fround(1e-6));
  const coef = Math.fround(Math.fround(1 / denom) * Math.fround(maxNorm));
  const clamped = Number.isNaN(coef) ? coef : Math.min(coef, 1);
  // Multiplying by exactly 1 changes no value (NaN stays NaN, -0 stays -0), so that pass is skipped.
  if (clamped !== 1) {
    for (const group of byDevice(grads, (g) => g)) {
      const { columns, sizes } = pack(group.map((g) => [g]));
      native().scaleSpans({ tensors: columns[0] as View[], sizes, alpha: clamped });
    }
  }
  return total;
}
