// embedding: gather against plain indexing, the scatter-add backward (repeated ids sum) against a
// float64 reference and finite differences, determinism, and the out-of-range error.
import { describe, expect, it } from "vitest";
import { tensor, tidy, zeros } from "../../lib/index.js";
import { embedding } from "../../lib/ops/embedding.js";
import { expectClose, gradcheck, randomValues } from "../helpers.js";

const ids = (values: number[], shape = [values.length]) => tensor(Int32Array.from(values), { shape });

describe("embedding", () => {
  it("gathers rows for ids of any shape", () => {
    tidy(() => {
      const w = tensor(randomValues(5 * 3, 1), { shape: [5, 3] });
      const wv = Array.from(w.dataSync());
      const idx = [4, 0, 2, 2, 1, 4];
      const out = embedding(ids(idx, [2, 3]), w);
      expect(out.shape).toEqual([2, 3, 3]);
      expect(Array.from(out.dataSync())).toEqual(idx.flatMap((i) => wv.slice(i * 3, i * 3 + 3)));
      // A strided id view and a 0-d id.
      const strided = ids([1, 9, 3, 9], [2, 2]).slice(1, 0, 1); // [[1], [3]]
      expect(Array.from(embedding(strided, w).dataSync())).toEqual([...wv.slice(3, 6), ...wv.slice(9, 12)]);
      expect(embedding(ids([2], []), w).shape).toEqual([3]);
    });
  });

  it("backward scatter-adds: repeated ids sum their gradients", () => {
    tidy(() => {
      const [V, D] = [7, 37]; // D not a multiple of the 16-column work unit
      const w = tensor(randomValues(V * D, 2), { shape: [V, D], requiresGrad: true });
      const idx = [3, 1, 3, 6, 3, 0, 1];
      const g = tensor(randomValues(idx.length * D, 3), { shape: [idx.length, D] });
      embedding(ids(idx), w).backward(g);
      const gv = Array.from(g.dataSync());
      const ref = new Array<number>(V * D).fill(0);
      idx.forEach((id, i) => {
        for (let d = 0; d < D; d++) ref[id * D + d]! += gv[i * D + d]!;
      });
      expectClose(w.grad!, ref, 1e-6);
      expect(Array.from(w.grad!.dataSync().slice(2 * D, 3 * D))).toEqual(new Array(D).fill(0)); // id 2 unused
      gradcheck((t) => embedding(ids([2, 0, 2, 2], [2, 2]), t!), [tensor(randomValues(3 * 4, 4), { shape: [3, 4] })]);
    });
  });

  it("scatter-add sums each element in order of position: bitwise equal to a sequential float32 sum", () => {
    // Threads split columns, so the order of additions never depends on the thread count or timing.
    tidy(() => {
      const [V, D, n] = [50, 64, 4000];
      const w = zeros([V, D], { requiresGrad: true });
      const idx = Array.from({ length: n }, (_, i) => (i * 7) % V);
      const g = tensor(randomValues(n * D, 5), { shape: [n, D] });
      embedding(ids(idx), w).backward(g);
      const gv = g.dataSync(), ref = new Float32Array(V * D);
      idx.forEach((id, i) => {
        for (let d = 0; d < D; d++) ref[id * D + d] = Math.fround(ref[id * D + d]! + gv[i * D + d]!);
      });
      expect(Array.from(w.grad!.dataSync())).toEqual(Array.from(ref));
    });
  });

  it("names the bad id and its position instead of reading out of bounds", () => {
    tidy(() => {
      const w = zeros([10, 4]);
      expect(() => embedding(ids([1, 2, 3, 10, 4, 5], [2, 3]), w)).toThrow(
        "embedding: id 10 at position [1, 0] of ids [2, 3] is out of range for a table of 10 rows (weight [10, 4]); ids must lie in [0, 10)",
      );
      expect(() => embedding(ids([-1]), w)).toThrow(/id -1 at position \[0\]/);
      expect(() => embedding(tensor([1, 2]), w)).toThrow(/ids must be int32, got float32 \[2\]/);
      expect(() => embedding(ids([1]), zeros([10]))).toThrow(/weight must be a 2-D \[vocab, dim\] table, got \[10\]/);
    });
  });
});
