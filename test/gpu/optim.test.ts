// The fused optimizer kernels on CUDA, each checked against its CPU twin. Runs on a GPU host
// (`npm run test:gpu`); elsewhere every test is skipped with the reason.
import { describe, expect, it } from "vitest";
import { memory, noGrad, tensor, type Tensor } from "../../lib/index.js";
import { AdamW, clipGradNorm, gradNorm, SGD } from "../../lib/optim/index.js";
import { hasCuda, noCudaReason, randomValues } from "../helpers.js";
import { expectBitEqual } from "../optim/fixture.js";

const gpu = describe.skipIf(!hasCuda);
if (!hasCuda) describe("CUDA optimizers", () => it.skip(noCudaReason, () => {}));

// Sizes that cross chunk boundaries (4096 elements) and a tiny one.
const SHAPES = [[300, 257], [4097], [3]];

/** The same params on the CPU and on the GPU. */
function twins(seed: number): { cpu: Tensor[]; gpu: Tensor[] } {
  const values = SHAPES.map((s, k) => tensor(randomValues(s.reduce((a, b) => a * b), seed + k), { shape: s }));
  const cpu = values.map((v) => v.clone().requireGrad());
  const gpu = values.map((v) => v.to("cuda:0").requireGrad());
  values.forEach((v) => v.dispose());
  return { cpu, gpu };
}

function setGrads(cpu: Tensor[], gpu: Tensor[], step: number, scale = 1): void {
  cpu.forEach((p, k) => {
    const g = tensor(randomValues(p.size, 100 * step + k).map((v) => v * scale), { shape: p.shape });
    p.grad?.dispose();
    gpu[k]!.grad?.dispose();
    gpu[k]!.grad = g.to("cuda:0");
    p.grad = g;
  });
}

const disposeAll = (...lists: Tensor[][]) => lists.flat().forEach((t) => t.dispose());

gpu("CUDA optimizers match the CPU twins", () => {
  // Both twins run the per-element code of native/ops/optim.h with every product and sum
  // separately rounded (no FMA contraction on the GPU), IEEE sqrt and division: bit-identical.
  it("AdamW with two groups: bit-identical params over 3 steps", () => {
    const { cpu, gpu: g } = twins(1);
    const make = (ps: Tensor[]) => new AdamW([{ params: ps.slice(0, 2) }, { params: ps.slice(2), weightDecay: 0, betas: [0.3, 0.99] }], { lr: 1e-2 });
    const oc = make(cpu), og = make(g);
    for (let step = 0; step < 3; step++) {
      setGrads(cpu, g, step);
      oc.step();
      og.step();
      cpu.forEach((p, k) => expectBitEqual(g[k]!.dataSync(), p.dataSync(), `step ${step}, param ${k}`));
    }
    [oc, og].forEach((o) => o.dispose());
    disposeAll(cpu, g);
  });

  for (const nesterov of [false, true]) {
    it(`SGD momentum (nesterov ${nesterov}) with weight decay: bit-identical params over 3 steps`, () => {
      const { cpu, gpu: g } = twins(2);
      const make = (ps: Tensor[]) => new SGD(ps, { lr: 0.05, momentum: 0.9, weightDecay: 0.01, nesterov, dampening: 0 });
      const oc = make(cpu), og = make(g);
      for (let step = 0; step < 3; step++) {
        setGrads(cpu, g, step);
        oc.step();
        og.step();
        cpu.forEach((p, k) => expectBitEqual(g[k]!.dataSync(), p.dataSync(), `step ${step}, param ${k}`));
      }
      [oc, og].forEach((o) => o.dispose());
      disposeAll(cpu, g);
    });
  }

  it("gradNorm and clipGradNorm: same norms (double sums in another order) and the same clipped gradients", () => {
    const { cpu, gpu: g } = twins(3);
    setGrads(cpu, g, 0, 5);
    for (const p of [1, 2, 3, Infinity]) {
      const a = gradNorm(cpu, p), b = gradNorm(g, p);
      expect(Math.abs(a - b) / a, `p = ${p}`).toBeLessThanOrEqual(1.2e-7); // at most one float32 ulp apart
    }
    const tc = clipGradNorm(cpu, 1), tg = clipGradNorm(g, 1);
    expect(tg).toBe(tc);
    cpu.forEach((p, k) => expectBitEqual(g[k]!.grad!.dataSync(), p.grad!.dataSync(), `grad ${k}`));
    disposeAll(cpu, g);
  });

  it("state saved on the GPU resumes on the CPU bit-identically; zeroGrad and dispose free the GPU memory", () => {
    const { cpu: other, gpu: g } = twins(4);
    const base = memory()["cuda:0"]!.bytes; // the GPU params
    const og = new AdamW(g, { lr: 1e-2 });
    setGrads(other, g, 0);
    og.step();
    disposeAll(other);
    const resumed = noGrad(() => g.map((p) => p.to("cpu").requireGrad()));
    const saved = og.stateDict();
    const oc = new AdamW(resumed, { lr: 1e-2 });
    oc.loadStateDict(saved); // copies the state to each param's device
    Object.values(saved.state).forEach((e) => Object.values(e).forEach((v) => typeof v !== "number" && v.dispose()));
    setGrads(resumed, g, 1);
    og.step();
    oc.step();
    resumed.forEach((p, k) => expectBitEqual(g[k]!.dataSync(), p.dataSync(), `param ${k}`));
    og.zeroGrad();
    og.dispose();
    expect(memory()["cuda:0"]!.bytes).toBe(base);
    oc.dispose();
    disposeAll(g, resumed);
  });
});
