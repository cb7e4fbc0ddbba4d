// matmul, linear and conv1dLinear on CUDA (cuBLAS), forward and backward, each checked against the
// CPU backend; and nn modules moved with to("cuda:0") train there without leaking. Runs on a GPU
// host (`npm run test:gpu`); elsewhere every test is skipped.
//
// Tolerance 1e-5 relative L2: cuBLAS (fp32, no TF32) and the CPU GEMM sum in different orders.
import { describe, expect, it } from "vitest";
import { Generator, memory, noGrad, tensor, tidy, type Tensor } from "../../lib/index.js";
import { Linear, Module } from "../../lib/nn/index.js";
import { addInPlace, gelu, mean, scale, square, sub } from "../../lib/ops/index.js";
import { conv1dLinear, linear, matmul } from "../../lib/ops/matmul.js";
import { expand } from "../../lib/ops/shape.js";
import { expectClose, hasCuda, noCudaReason, randomValues } from "../helpers.js";

const gpu = describe.skipIf(!hasCuda);
if (!hasCuda) describe("CUDA matmul", () => it.skip(noCudaReason, () => {}));

const TOL = 1e-5;
const size = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);
const rnd = (shape: number[], seed: number) => tensor(randomValues(size(shape), seed), { shape });

/**
 * Runs fn on CPU copies and on CUDA copies of `inputs` (all as leaves requiring grad), backpropagates
 * the same random output gradient, and compares outputs and every input gradient.
 */
function sameOnBothDevices(fn: (...xs: Tensor[]) => Tensor, inputs: Tensor[], tol = TOL): void {
  tidy(() => {
    const run = (device: string) => {
      const xs = inputs.map((x) => x.to(device).requireGrad());
      const out = fn(...xs);
      out.backward(rnd([...out.shape], 77).to(device));
      return { out, grads: xs.map((x) => x.grad!) };
    };
    const cpu = run("cpu"), cuda = run("cuda:0");
    expect(cuda.out.device).toBe("cuda:0");
    expectClose(cuda.out, cpu.out.dataSync(), tol);
    cuda.grads.forEach((g, i) => expectClose(g, cpu.grads[i]!.dataSync(), tol));
  });
}

gpu("matmul on CUDA", () => {
  it("matches the CPU for 1-D, 2-D, batched and broadcast operands, forward and backward", () => {
    const cases: [number[], number[]][] = [
      [[7], [7]], [[5], [5, 3]], [[4, 6], [6]], [[33, 9], [9, 19]], [[3, 4, 5], [5, 2]], [[4, 5], [3, 5, 2]],
      [[2, 3, 4], [2, 4, 5]], [[2, 1, 3, 4], [3, 4, 2]], [[2, 1, 3, 4], [1, 3, 4, 2]], [[6], [2, 6, 3]], [[130, 70], [70, 90]],
    ];
    cases.forEach(([sa, sb], i) => sameOnBothDevices((a, b) => matmul(a!, b!), [rnd(sa, 2 * i), rnd(sb, 2 * i + 1)]));
  });

  it("reads transposed, permuted and expanded views like the CPU does", () => {
    sameOnBothDevices((p, q) => matmul(p!.transpose(0, 1), q!.transpose(0, 1)), [rnd([9, 7], 1), rnd([5, 9], 2)]);
    sameOnBothDevices((x, y) => matmul(x!, y!.transpose(-2, -1)), [rnd([2, 3, 6, 4], 3), rnd([2, 3, 5, 4], 4)]);
    sameOnBothDevices((z, w) => matmul(z!.permute(1, 0, 2), w!), [rnd([6, 2, 4], 5), rnd([4, 3], 6)]);
    sameOnBothDevices((r, w) => matmul(expand(r!, [4, 5]), w!), [rnd([1, 5], 7), rnd([5, 3], 8)]);
  });

  it("linear and conv1dLinear with bias, over batched inputs", () => {
    sameOnBothDevices((x, w, b) => linear(x!, w!, b!), [rnd([2, 3, 7], 11), rnd([5, 7], 12), rnd([5], 13)]);
    sameOnBothDevices((x, w, b) => conv1dLinear(x!, w!, b!), [rnd([4, 6], 14), rnd([6, 3], 15), rnd([3], 16)]);
    sameOnBothDevices((x, w) => linear(x!.transpose(0, 1), w!), [rnd([7, 5], 17), rnd([3, 7], 18)]);
  });
});

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
