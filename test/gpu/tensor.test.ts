// Tensor basics on CUDA, each checked against the CPU backend. Runs on a GPU host
// (`npm run test:gpu`); elsewhere every test is skipped with the reason.
import { describe, expect, it } from "vitest";
import { arange, empty, full, Generator, info, memory, rand, randn, synchronize, tensor, tidy } from "../../lib/index.js";
import { add, gelu, mul, sum } from "../../lib/ops/index.js";
import { hasCuda, noCudaReason, randomValues } from "../helpers.js";

const gpu = describe.skipIf(!hasCuda);
if (!hasCuda) describe("CUDA", () => it.skip(noCudaReason, () => {}));

gpu("CUDA tensors", () => {
  it("info names the GPU and cuBLAS", () => {
    const i = info();
    expect(i.cuda).toBe(true);
    expect(i.gpus.length).toBeGreaterThan(0);
    expect(i.cublas).toMatch(/^\d+\.\d+\.\d+$/);
    console.log(`GPU: ${i.gpus[0]}, CUDA runtime ${i.cudaRuntime}, cuBLAS ${i.cublas}`);
  });

  it("round-trips values host -> device -> host for every dtype", () => {
    tidy(() => {
      const values = randomValues(1000, 1).map((v) => v * 1000);
      for (const dtype of ["float32", "bfloat16", "int32"] as const) {
        const cpu = tensor(values, { dtype });
        const back = cpu.to("cuda:0").to("cpu");
        expect(back.dtype).toBe(dtype);
        expect(back.dataSync()).toEqual(cpu.dataSync());
      }
    });
  });

  it("converts float32 <-> bfloat16 on the GPU bit-identically to the CPU (round to nearest even)", () => {
    tidy(() => {
      const special = [0, -0, 1, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -8 + 2 ** -20, 3.4e38, -1e-40, Infinity, -Infinity];
      const values = [...special, ...randomValues(10_000, 2).map((v) => v * 1e4)];
      const viaCpu = tensor(values).to("cpu", "bfloat16").dataSync();
      const viaGpu = tensor(values).to("cuda:0").to("cuda:0", "bfloat16").to("cpu").dataSync();
      expect(viaGpu).toEqual(viaCpu);
      const nan = tensor([NaN]).to("cuda:0", "bfloat16").to("cpu", "float32").item();
      expect(Number.isNaN(nan)).toBe(true);
    });
  });

  it("gives the same random numbers as the CPU for the same seed", () => {
    tidy(() => {
      for (const [shape, seed] of [[[1000], 1], [[17, 31], 123456789]] as const) {
        const uc = rand([...shape], { generator: new Generator(seed) }).dataSync();
        const ug = rand([...shape], { generator: new Generator(seed), device: "cuda:0" }).dataSync();
        expect(ug).toEqual(uc); // uniform draws are exact integer arithmetic: bit-identical
        const nc = randn([...shape], { generator: new Generator(seed) }).dataSync();
        const ng = randn([...shape], { generator: new Generator(seed), device: "cuda:0" }).dataSync();
        // Box-Muller runs in double precision on both; libm and CUDA's log/cos may differ by an
        // ulp of a double, which survives rounding to float32 only very rarely.
        let maxRel = 0;
        nc.forEach((v, i) => (maxRel = Math.max(maxRel, Math.abs(v - ng[i]!) / Math.max(1e-30, Math.abs(v)))));
        expect(maxRel).toBeLessThanOrEqual(2 ** -23);
      }
    });
  });

  it("fills, ranges, strided copies and element-wise ops match the CPU", () => {
    tidy(() => {
      expect(full([5], 2.5, { device: "cuda:0" }).dataSync()).toEqual(full([5], 2.5).dataSync());
      expect(arange(0, 10, 3, { device: "cuda:0" }).dataSync()).toEqual(arange(0, 10, 3).dataSync());
      const x = tensor(randomValues(2 * 3 * 5, 3), { shape: [2, 3, 5] });
      const xg = x.to("cuda:0");
      expect(xg.permute(2, 0, 1).contiguous().dataSync()).toEqual(x.permute(2, 0, 1).contiguous().dataSync());
      expect(xg.slice(2, 1, 4).dataSync()).toEqual(x.slice(2, 1, 4).dataSync());
      const y = tensor(randomValues(5, 4));
      const cpuOut = gelu(mul(add(x, y), x)).dataSync();
      const gpuOut = gelu(mul(add(xg, y.to("cuda:0")), xg)).dataSync();
      cpuOut.forEach((v, i) => expect(Math.abs(v - gpuOut[i]!)).toBeLessThanOrEqual(1e-6 * Math.max(1, Math.abs(v))));
      expect(Math.abs(sum(xg).item() - sum(x).item())).toBeLessThan(1e-5);
    });
  });

  it("data() reads back asynchronously on a worker thread", async () => {
    const t = rand([1 << 20], { generator: new Generator(9), device: "cuda:0" });
    const expected = t.dataSync();
    expect(await t.data()).toEqual(expected);
    t.dispose();
  });

  it("runs autograd on the GPU", () => {
    tidy(() => {
      const x = tensor([1, 2, 3], { device: "cuda:0", requiresGrad: true });
      sum(mul(x, x)).backward();
      expect(Array.from(x.grad!.dataSync())).toEqual([2, 4, 6]);
    });
  });

  it("an out-of-memory request names the sizes, and the next allocation still works", () => {
    // 256 GiB: more than any single GPU holds.
    expect(() => empty([2 ** 36], { device: "cuda:0" })).toThrow(/CUDA out of memory on cuda:0: asked for 262144\.0 MiB, [\d.]+ MiB free of [\d.]+ MiB/);
    tidy(() => expect(Array.from(full([4], 1.5, { device: "cuda:0" }).dataSync())).toEqual([1.5, 1.5, 1.5, 1.5]));
  });

  it("freed blocks stay in the pool across a synchronize, and an out-of-memory request hands them back", () => {
    // The driver's default release threshold (0) unmapped every unused block at each
    // synchronization, so each training step mapped its activations from the OS again.
    const big = empty([64 << 20], { device: "cuda:0" }); // 256 MiB
    big.dispose();
    synchronize("cuda:0");
    const kept = memory()["cuda:0"]!;
    expect(kept.reservedBytes - kept.bytes).toBeGreaterThanOrEqual(256 * 2 ** 20);
    expect(() => empty([2 ** 36], { device: "cuda:0" })).toThrow(/CUDA out of memory/);
    const trimmed = memory()["cuda:0"]!;
    expect(trimmed.reservedBytes - trimmed.bytes).toBeLessThan(256 * 2 ** 20);
  });

  it("memory() is exact and returns to zero after tidy", () => {
    synchronize("cuda:0");
    const before = memory()["cuda:0"]!;
    tidy(() => {
      for (let i = 0; i < 100; i++) {
        const t = rand([33, 7], { device: "cuda:0" });
        expect(memory()["cuda:0"]!.bytes).toBeGreaterThanOrEqual(before.bytes + 33 * 7 * 4);
        t.transpose(0, 1).contiguous().to("cuda:0", "bfloat16").to("cpu");
      }
    });
    const after = memory()["cuda:0"]!;
    expect(after).toMatchObject({ bytes: before.bytes, buffers: before.buffers, tensors: before.tensors });
    const t = full([1000], 1, { device: "cuda:0" });
    expect(memory()["cuda:0"]!.bytes).toBe(before.bytes + 4000);
    t.dispose();
    expect(memory()["cuda:0"]!.bytes).toBe(before.bytes);
  });
});
