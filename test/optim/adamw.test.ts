// AdamW against torch.optim.AdamW on the fixture's toy problem, step by step, and against the
// float32 re-statement (reference.ts) on inputs the fixture does not cover.
import { describe, expect, it } from "vitest";
import { tensor, tidy, type Tensor } from "../../lib/index.js";
import { AdamW } from "../../lib/optim/index.js";
import { randomValues } from "../helpers.js";
import { expectBitEqual, fixture, flat, initialParams, maxAbsDiff, setGrads } from "./fixture.js";
import { adamwRef } from "./reference.js";

// 1e-6 absolute, in float32 (the fixture's decimals are read back to float32 with Math.fround):
// both sides run the same float32 operations in the same order, so the only room for difference
// is rounding: torch's CPU kernels may be compiled with fused multiply-adds (one rounding less per
// a*b+c), which moves an element by an ulp per step (ulp = 2.4e-7 at the fixture's magnitudes of
// 2-3), up to 4 ulps over the 5 steps. On x86-64 this build reproduces the params bit for bit and
// the moment estimates to within one ulp.
const TOL = 1e-6;

describe("AdamW matches torch.optim.AdamW", () => {
  for (const key of ["adamw_wd0.01", "adamw_wd0"] as const) {
    it(`${key}: params after each of 5 steps and the final state`, () => {
      const run = fixture.runs[key];
      const params = initialParams();
      const opt = new AdamW(params, { lr: 1e-2, betas: [0.9, 0.999], eps: 1e-8, weightDecay: run.hyperparams.weight_decay as number });
      for (let step = 0; step < 5; step++) {
        setGrads(params, step);
        opt.step();
        params.forEach((p, k) => {
          const diff = maxAbsDiff(p.dataSync(), flat(run.params_after_step[step]![k]!).map(Math.fround));
          expect(diff, `step ${step + 1}, param ${k}`).toBeLessThanOrEqual(TOL);
        });
      }
      tidy(() => {
        const { state } = opt.stateDict();
        run.final_state.forEach((ref, k) => {
          expect(state[k]!.step).toBe(5);
          expect(maxAbsDiff((state[k]!.expAvg as Tensor).dataSync(), flat(ref.exp_avg!).map(Math.fround))).toBeLessThanOrEqual(TOL);
          expect(maxAbsDiff((state[k]!.expAvgSq as Tensor).dataSync(), flat(ref.exp_avg_sq!).map(Math.fround))).toBeLessThanOrEqual(TOL);
        });
      });
      opt.dispose();
      params.forEach((p) => p.dispose());
    });
  }
});

describe("AdamW fused step", () => {
  // Exact equality with the JS float32 reference: the kernel keeps every product and sum
  // separately rounded (the x86-64 build has no FMA contraction), like the reference.
  it("updates several groups with their own options in one call, across chunk boundaries, like the float32 reference", () => {
    const shapes = [[100, 97], [5000], [3]];
    const params = shapes.map((s, k) => tensor(randomValues(s.reduce((a, b) => a * b), 10 + k), { shape: s }).requireGrad());
    const groups = [
      { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, wd: 0.01, members: [0, 2] },
      // beta1 < 0.5 takes torch's other lerp branch
      { lr: 5e-3, beta1: 0.3, beta2: 0.99, eps: 1e-6, wd: 0, members: [1] },
    ];
    const opt = new AdamW(
      groups.map((g) => ({ params: g.members.map((k) => params[k]!), lr: g.lr, betas: [g.beta1, g.beta2] as [number, number], eps: g.eps, weightDecay: g.wd })),
    );
    const ref = params.map((p) => ({ p: p.dataSync() as Float32Array, m: new Float32Array(p.size), v: new Float32Array(p.size) }));
    for (let step = 1; step <= 3; step++) {
      params.forEach((p, k) => {
        const g = randomValues(p.size, 100 * step + k).map((x) => x * step);
        p.grad?.dispose();
        p.grad = tensor(g, { shape: p.shape });
        const group = groups.find((gr) => gr.members.includes(k))!;
        adamwRef(ref[k]!.p, Float32Array.from(g), ref[k]!.m, ref[k]!.v, { ...group, step });
      });
      opt.step();
      params.forEach((p, k) => expectBitEqual(p.dataSync(), ref[k]!.p, `step ${step}, param ${k}`));
    }
    opt.dispose();
    params.forEach((p) => p.dispose());
  });

  it("skips params without a gradient: values, state and step count stay as they were", () => {
    const a = tensor([1, 2, 3]).requireGrad(), b = tensor([4, 5]).requireGrad();
    const opt = new AdamW([a, b], { lr: 0.1 });
    a.grad = tensor([0.5, -0.5, 1]);
    opt.step();
    expect(Array.from(b.dataSync())).toEqual([4, 5]);
    tidy(() => {
      const { state } = opt.stateDict();
      expect(Object.keys(state)).toEqual(["0"]);
      expect(state[0]!.step).toBe(1);
    });
    // b gets a gradient later: its own step count starts at 1 (bias correction of step 1)
    b.grad = tensor([1, -1]);
    const refB = { p: Float32Array.from([4, 5]), m: new Float32Array(2), v: new Float32Array(2) };
    adamwRef(refB.p, [1, -1], refB.m, refB.v, { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, wd: 0.01, step: 1 });
    opt.step();
    expectBitEqual(b.dataSync(), refB.p, "b");
    tidy(() => {
      const { state } = opt.stateDict();
      expect([state[0]!.step, state[1]!.step]).toEqual([2, 1]);
    });
    opt.dispose();
    [a, b].forEach((t) => t.dispose());
  });

  it("rejects invalid options and gradients with messages that name them", () => {
    const p = tensor([1, 2, 3]).requireGrad();
    p.name = "lora_A";
    expect(() => new AdamW([], {})).toThrow(/empty parameter list/);
    expect(() => new AdamW([p], { betas: [0.9, 1] })).toThrow(/invalid betas \[0\.9,1\] in the defaults/);
    expect(() => new AdamW([{ params: [p], lr: -1 }])).toThrow(/invalid lr -1 in param group 0/);
    expect(() => new AdamW([p, p])).toThrow(/param 1 \("lora_A"\) \[3\] appears more than once/);
    expect(() => new AdamW([p.reshape([3])])).toThrow(/not a leaf tensor/);
    const opt = new AdamW([p]);
    p.grad = tensor([1, 2]);
    expect(() => opt.step()).toThrow(/gradient of param 0 \("lora_A"\) \[3\] is float32 \[2\] on cpu, but it must be float32 \[3\] on cpu/);
    opt.dispose();
    expect(() => opt.step()).toThrow(/AdamW\.step: the optimizer was disposed/);
    p.dispose();
  });
});
