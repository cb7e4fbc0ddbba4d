// Embedding lookup: rows of a [V, D] table picked by int32 ids. Backward scatter-adds the output
// gradient into a dense [V, D] gradient (repeated ids sum). Kernels: native/ops/embedding.h.
import { kernels, native, type NativeStorage } from "../native.js";
import { zeros } from "../tensor/creation.js";
import { formatShape, record, type Tensor } from "../tensor/tensor.js";
import { checkFloat, checkSameDevice, newFloat, unravel, withContiguous } from "./util.js";

/** native/binding/embedding.cc */
export interface EmbeddingKernels {
  /** The first position whose id lies outside [0, vocab), or -1. */
  embeddingFindBadId(ids: NativeStorage, idsOffset: number, n: number, vocab: number): number;
  embeddingGather(
    ids: NativeStorage, idsOffset: number, n: number, weight: NativeStorage, weightOffset: number, vocab: number, dim: number,
    out: NativeStorage, outOffset: number,
  ): void;
  embeddingScatterAdd(
    ids: NativeStorage, idsOffset: number, n: number, grad: NativeStorage, gradOffset: number, vocab: number, dim: number,
    dweight: NativeStorage, dweightOffset: number,
  ): void;
}
export const embeddingKernels = kernels<EmbeddingKernels>;

/** embedding(ids int32 [...], weight [V, D]) -> [..., D]: out[..., :] = weight[ids[...], :]. */
export function embedding(ids: Tensor, weight: Tensor): Tensor {
  const op = "embedding";
  if (ids.dtype !== "int32") {
    throw new Error(`${op}: ids must be int32, got ${ids.dtype} ${formatShape(ids.shape)}; create them with { dtype: "int32" } or convert with .to(device, "int32")`);
  }
  checkFloat(op, weight);
  checkSameDevice(op, ids, weight);
  if (weight.ndim !== 2) throw new Error(`${op}: weight must be a 2-D [vocab, dim] table, got ${formatShape(weight.shape)}`);
  const [vocab, dim] = weight.shape as [number, number];
  return withContiguous([ids, weight], (ic, wc) => {
    const bad = embeddingKernels().embeddingFindBadId(ic.storage.native, ic.byteOffset, ic.size, vocab);
    if (bad >= 0) {
      const id = new Int32Array(native().read(ic.storage.native, ic.byteOffset + 4 * bad, 4))[0];
      throw new Error(
        `${op}: id ${id} at position [${unravel(bad, ids.shape).join(", ")}] of ids ${formatShape(ids.shape)} is out of range ` +
          `for a table of ${vocab} rows (weight ${formatShape(weight.shape)}); ids must lie in [0, ${vocab})`,
      );
    }
    const out = newFloat([...ids.shape, dim], weight);
    embeddingKernels().embeddingGather(ic.storage.native, ic.byteOffset, ic.size, wc.storage.native, wc.byteOffset, vocab, dim, out.storage.native, 0);
    record(
      op, out, [weight],
      (g, [savedIds]) => {
        const gw = zeros([vocab, dim], { device: g.device });
        withContiguous([g], (gc) =>
          embeddingKernels().embeddingScatterAdd(savedIds!.storage.native, savedIds!.byteOffset, savedIds!.size, gc.storage.native, gc.byteOffset, vocab, dim, gw.storage.native, 0),
        );
        return [gw];
      },
      [ic],
    );
    return out;
  });
}
