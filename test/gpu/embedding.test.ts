// embedding on CUDA (native/cuda/embedding.cu): gather and scatter-add checked bit for bit against the
// CPU backend, and the out-of-range id error. Runs on a GPU host (`npm run test:gpu`); elsewhere
// every test is skipped.
import { describe, expect, it } from "vitest";
import { tensor, tidy } from "../../lib/index.js";
import { embedding } from "../../lib/ops/embedding.js";
import { hasCuda, noCudaReason, randomValues } from "../helpers.js";

const gpu = describe.skipIf(!hasCuda);
if (!hasCuda) describe("CUDA embedding", () => it.skip(noCudaReason, () => {}));

const size = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);
const rnd = (shape: number[], seed: number) => tensor(randomValues(size(shape), seed), { shape });

gpu("embedding on CUDA", () => {
  it("gathers and scatter-adds bit for bit like the CPU", () => {
    tidy(() => {
      const ids = tensor(Int32Array.from({ length: 3000 }, (_, i) => (i % 3 === 0 ? 0 : (i * 7919) % 1000)), { shape: [30, 100] });
      const w = rnd([1000, 33], 21), g = rnd([30, 100, 33], 22);
      const run = (device: string) => {
        const wd = w.to(device).requireGrad();
        const out = embedding(ids.to(device), wd);
        out.backward(g.to(device));
        return { out: Array.from(out.dataSync()), grad: Array.from(wd.grad!.dataSync()) };
      };
      expect(run("cuda:0")).toEqual(run("cpu"));
    });
  });

  it("reports an out-of-range id with its position", () => {
    tidy(() => {
      const w = rnd([10, 4], 23).to("cuda:0");
      const ids = tensor(Int32Array.from([1, 2, 3, 10, 4, 5]), { shape: [2, 3] }).to("cuda:0");
      expect(() => embedding(ids, w)).toThrow("embedding: id 10 at position [1, 0] of ids [2, 3] is out of range for a table of 10 rows (weight [10, 4]); ids must lie in [0, 10)");
    });
  });
});
