// linearCrossEntropy on CUDA against its CPU twin (test/ops/crossentropy.test.ts checks the CPU
// against float64): loss and x's gradient, float32 and bf16 heads, odd sizes, ignored rows, chunks
// that do not divide N, GPT-2's vocabulary. Tolerances: 1e-5 relative in float32 (cuBLAS and the
// CPU GEMM sum in other orders; expf vs the CPU's polynomial exp); bf16 heads 1e-2 (a gradient
// element near a rounding boundary of bf16 may round the other way on the two devices).
import { describe, expect, it } from "vitest";
import { Generator, randn, tensor, tidy } from "../../lib/index.js";
import { linearCrossEntropy } from "../../lib/ops/crossentropy.js";
import { hasCuda, noCudaReason, relError } from "../helpers.js";

if (!hasCuda) describe("linearCrossEntropy on CUDA", () => it.skip(noCudaReason, () => {}));
describe.skipIf(!hasCuda)("linearCrossEntropy on CUDA", () => {
  const cases = [
    { N: 37, C: 24, V: 101, chunkRows: 8, dtype: "float32" as const },
    { N: 37, C: 24, V: 101, chunkRows: 8, dtype: "bfloat16" as const },
    { N: 19, C: 64, V: 50257, chunkRows: 7, dtype: "bfloat16" as const },
    { N: 19, C: 64, V: 50257, chunkRows: undefined, dtype: "float32" as const },
  ];
  it.each(cases)("N $N C $C V $V chunk $chunkRows $dtype", ({ N, C, V, chunkRows, dtype }) => {
    tidy(() => {
      const g = new Generator(N + V);
      const x = randn([N, C], { generator: g }), w = randn([V, C], { generator: g }).to("cpu", dtype);
      const tg = Int32Array.from({ length: N }, (_, i) => (i % 5 === 2 ? -100 : (i * 7919) % V));
      const run = (device: string) => {
        const xd = tensor(x.dataSync(), { shape: [N, C], device }).requireGrad();
        const loss = linearCrossEntropy(xd, w.to(device), tensor(tg, { shape: [N], device }), { chunkRows });
        loss.backward();
        return { loss: loss.item(), gx: xd.grad!.dataSync() };
      };
      const cpu = run("cpu"), gpu = run("cuda:0");
      const tol = dtype === "float32" ? 1e-5 : 1e-2;
      expect(Math.abs(gpu.loss - cpu.loss) / cpu.loss).toBeLessThan(tol);
      expect(relError(gpu.gx, cpu.gx)).toBeLessThan(tol);
    });
  });
});
