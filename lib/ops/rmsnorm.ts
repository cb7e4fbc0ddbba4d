// RMS norm over the last dimension (Llama-family models), one native pass forward and one
// backward, the backward rule beside the forward. Kernels: native/ops/rmsnorm.h (CPU and CUDA twins).
import { native } from "../native/index.js";
import { formatShape, record, shapeSize, type Tensor } from "../tensor/tensor.js";
import { checkFloat, contiguousInput, newFloat, viewOrNull, withContiguous } from "./util.js";

/**
 * RMS norm over the last dimension C of x: x / sqrt(mean(x², last dim) + eps) · weight, in
 * float32 and in transformers' LlamaRMSNorm order ((x · 1/rms) · weight), PyTorch's
 * F.rms_norm. weight is [C] or null (1). The forward saves each row's 1/rms; the backward is
 * one native pass giving dx and dweight.
 */
export function rmsNorm(x: Tensor, weight: Tensor | null, eps: number): Tensor {
  const op = "rmsNorm";
  checkFloat(op, x, ...(weight ? [weight] : []));
  if (x.ndim === 0) throw new Error(`${op}: x must have at least one dimension (the normalized one), got a 0-d tensor`);
  const C = x.shape[x.ndim - 1]!, N = shapeSize(x.shape.slice(0, -1));
  if (weight && (weight.ndim !== 1 || weight.shape[0] !== C)) {
    throw new Error(`${op}: weight has shape ${formatShape(weight.shape)} but x ${formatShape(x.shape)} normalizes its last dimension of ${C}; weight must be [${C}]`);
  }
  const xc = contiguousInput(x), wc = weight && contiguousInput(weight);
  const out = newFloat(x.shape, x), rstd = newFloat([N], x);
  native().rmsNorm({ x: xc.nativeView, weight: viewOrNull(wc), y: out.nativeView, rstd: rstd.nativeView, N, C, eps });
  record(
    op, out, [x, weight],
    (g, [xs, rs, ws]) => {
      const dx = newFloat(xs!.shape, xs!);
      const dw = weight?.requiresGrad ? newFloat([C], xs!) : null;
      withContiguous([g], (gc) =>
        native().rmsNormBackward({
          x: xs!.nativeView, weight: viewOrNull(ws ?? null), rstd: rs!.nativeView, dy: gc.nativeView, dx: dx.nativeView, dweight: viewOrNull(dw), N, C,
        }),
      );
      return [dx, dw];
    },
    [xc, rstd, ...(wc ? [wc] : [])],
  );
  for (const t of [rstd, ...(xc !== x ? [xc] : []), ...(wc && wc !== weight ? [wc] : [])]) t.dispose();
  return out;
}
