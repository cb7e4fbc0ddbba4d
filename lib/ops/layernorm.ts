// Layer norm over the last dimension, one native pass forward and one backward, the backward rule
// beside the forward. Kernels: native/ops/layernorm.h (CPU and CUDA twins).
import { native } from "../native/index.js";
import { formatShape, record, shapeSize, type Tensor } from "../tensor/tensor.js";
import { checkFloat, checkSameDevice, contiguousInput, newFloat, viewOrNull, withContiguous } from "./util.js";

/**
 * Layer norm over the last dimension C of x: (x - mean) / sqrt(var + eps) * weight + bias, with
 * the biased variance (PyTorch's F.layer_norm). weight and bias are [C] or null (1 and 0).
 * The forward saves each row's mean and 1/std; the backward is one native pass.
 */
export function layerNorm(x: Tensor, weight: Tensor | null, bias: Tensor | null, eps = 1e-5): Tensor {
  const op = "layerNorm";
  checkFloat(op, x, ...[weight, bias].filter((t): t is Tensor => t !== null));
  if (x.ndim === 0) throw new Error(`${op}: x must have at least one dimension (the normalized one), got a 0-d tensor`);
  const C = x.shape[x.ndim - 1]!, N = shapeSize(x.shape.slice(0, -1));
  for (const [name, t] of [["weight", weight], ["bias", bias]] as const) {
    if (t && (t.ndim !== 1 || t.shape[0] !== C)) {
      throw new Error(`${op}: ${name} has shape ${formatShape(t.shape)} but x ${formatShape(x.shape)} normalizes its last dimension of ${C}; ${name} must be [${C}]`);
    }
  }
  const xc = contiguousInput(x), wc = weight && contiguousInput(weight), bc = bias && contiguousInput(bias);
  // mean and rstd share one allocation: the two rows of a [2, N] buffer.
  const out = newFloat(x.shape, x), stats = newFloat([2, N], x);
  const [mean, rstd] = [0, 1].map((i) => {
    const row = stats.slice(0, i, i + 1), flat = row.reshape(N);
    row.dispose();
    return flat;
  }) as [Tensor, Tensor];
  stats.dispose();
  native().layerNorm({
    x: xc.nativeView, weight: viewOrNull(wc), bias: viewOrNull(bc), y: out.nativeView, mean: mean.nativeView, rstd: rstd.nativeView, N, C, eps,
  });
  if (bc && bc !== bias) bc.dispose();
  record(
    op, out, [x, weight, bias],
    (g, [xs, ms, rs, ws]) => {
      const dx = newFloat(xs!.shape, xs!);
      const dw = weight?.requiresGrad ? newFloat([C], xs!) : null;
      const db = bias?.requiresGrad ? newFloat([C], xs!) : null;
      const w = ws ?? null;
      withContiguous([g], (gc) =>
        native().layerNormBackward({
          x: xs!.nativeView, weight: viewOrNull(w), mean: ms!.nativeView, rstd: rs!.nativeView, dy: gc.nativeView, dx: dx.nativeView,
          dweight: viewOrNull(dw), dbias: viewOrNull(db), N, C,
        }),
      );
      return [dx, dw, db];
    },
    [xc, mean, rstd, ...(wc ? [wc] : [])],
  );
  for (const t of [mean, rstd, ...(xc !== x ? [xc] : []), ...(wc && wc !== weight ? [wc] : [])]) t.dispose();
  return out;
}
