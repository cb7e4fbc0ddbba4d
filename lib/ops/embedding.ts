// Embedding lookup: rows of a [V, D] table picked by int32 ids. Backward scatter-adds the output
// gradient into a dense [V, D] gradient (repeated ids sum). Kernels: native/ops/embedding.h.
import { native } from "../native/index.js";
import { zeros } from "../tensor/creation.js";
import { formatShape, record, type Tensor } from "../tensor/tensor.js";
import { DTYPE_CODE } from "../tensor/dtype.js";
import { checkSameDevice, checkWeight, newFloat, unravel, withContiguous } from "./util.js";

/** embedding(ids int32 [...], weight [V, D]) -> [..., D]: out[..., :] = weight[ids[...], :]. */
export function embedding(ids: Tensor, weight: Tensor): Tensor {
  const op = "embedding";
  if (ids.dtype !== "int32") {
    throw new Error(`${op}: ids must be int32, got ${ids.dtype} ${formatShape(ids.shape)}; create them with { dtype: "int32" } or convert with .to(device, "int32")`);
  }
  checkWeight(op, weight);
  checkSameDevice(op, ids, weight);
  if (weight.ndim !== 2) throw new Error(`${op}: weight must be a 2-D [vocab, dim] table, got ${formatShape(weight.shape)}`);
  const [vocab, dim] = weight.shape as [number, number];
  return withContiguous([ids, weight], (ic, wc) => {
    const bad = native().embeddingFindBadId({ ids: ic.nativeView, n: ic.size, vocab });
    if (bad >= 0) {
      const id = new Int32Array(native().read({ src: { storage: ic.storage.native, offset: ic.byteOffset + 4 * bad }, bytes: 4 }))[0];
      throw new Error(
        `${op}: id ${id} at position [${unravel(bad, ids.shape).join(", ")}] of ids ${formatShape(ids.shape)} is out of range ` +
          `for a table of ${vocab} rows (weight ${formatShape(weight.shape)}); ids must lie in [0, ${vocab})`,
      );
    }
    const out = newFloat([...ids.shape, dim], weight);
    native().embeddingGather({ ids: ic.nativeView, n: ic.size, weight: wc.nativeView, vocab, dim, out: out.nativeView, dtype: DTYPE_CODE[weight.dtype] });
    record(
      op, out, [weight],
      (g, [savedIds]) => {
        const gw = zeros([vocab, dim], { device: g.device });
        withContiguous([g], (gc) =>
          native().embeddingScatterAdd({ ids: savedIds!.nativeView, n: savedIds!.size, grad: gc.nativeView, vocab, dim, dweight: gw.nativeView }),
        );
        return [gw];
      },
      [ic],
    );
    return out;
  });
}
