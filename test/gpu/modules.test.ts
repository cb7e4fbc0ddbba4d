// nn modules moved with to("cuda:0") train there as on the CPU, without leaking. (The matmul
// family's CUDA kernels against the CPU, shape by shape, are rows of test/gpu/twins.test.ts.) Runs
// on a GPU host (`npm run test:gpu`); elsewhere every test is skipped.
//
// Tolerance 1e-5 relative L2: cuBLAS (fp32, no TF32) and the CPU GEMM sum in different orders.
import { describe, expect, it } from "vitest";
import { Generator, memory, noGrad, tensor, tidy, type Tensor } from "../../lib/index.js";
import { Linear, Module } from "../../lib/nn/index.js";
import { addInPlace, gelu, mean, scale, square, sub } from "../../lib/ops/index.js";
import { expectClose, hasCuda, noCudaReason, randomValues } from "../helpers.js";

const gpu = describe.skipIf(!hasCuda);
if (!hasCuda) describe("CUDA matmul", () => it.skip(noCudaReason, () => {}));

const TOL = 1e-5;
const size = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);
const rnd = (shape: number[], seed: number) => tensor(randomValues(size(shape), seed), { shape });

gpu("nn modules on CUDA", () => {
  class MLP extends Module {
    declare fc: Linear;
    declare out: Linear;
    constructor(g: Generator) {
      super();
      this.registerModule("fc", new Linear(16, 64, { generator: g }));
      this.registerModule("out", new Linear(64, 4, { generator: g }));
    }
    forward(x: Tensor): Tensor {
      return this.out.forward(gelu(this.fc.forward(x)));
    }
  }

  it("to('cuda:0') gives the CPU model's gradients, and a training step leaks nothing", () => {
    const cpuModel = new MLP(new Generator(1)), gpuModel = new MLP(new Generator(2));
    tidy(() => gpuModel.loadStateDict(cpuModel.stateDict()));
    gpuModel.to("cuda:0");
    expect(gpuModel.parameters().every((p) => p.device === "cuda:0" && p.requiresGrad)).toBe(true);
    const x = rnd([32, 16], 31), y = rnd([32, 4], 32);
    const xg = x.to("cuda:0"), yg = y.to("cuda:0");
    const loss = (m: MLP, xs: Tensor, ys: Tensor) => mean(square(sub(m.forward(xs), ys)));
    tidy(() => loss(cpuModel, x, y).backward());
    tidy(() => loss(gpuModel, xg, yg).backward());
    cpuModel.namedParameters().forEach(([name, p], i) => {
      const q = gpuModel.parameters()[i]!;
      expect(q.grad!.device, name).toBe("cuda:0");
      expectClose(q.grad!, p.grad!.dataSync(), TOL);
    });
    const step = () =>
      tidy(() => {
        loss(gpuModel, xg, yg).backward();
        noGrad(() => gpuModel.parameters().forEach((p) => addInPlace(p, scale(p.grad!, -0.01)))); // SGD
        gpuModel.zeroGrad();
      });
    step();
    const before = memory()["cuda:0"]!;
    step();
    step();
    expect(memory()["cuda:0"]).toMatchObject({ bytes: before.bytes, buffers: before.buffers, tensors: before.tensors });
    for (const t of [x, y, xg, yg]) t.dispose();
    cpuModel.dispose();
    gpuModel.dispose();
  });
});
