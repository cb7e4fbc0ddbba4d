// SGD against torch.optim.SGD (fixture) and the float32 re-statement (reference.ts).
import { describe, expect, it } from "vitest";
import { tensor, tidy, type Tensor } from "../../lib/index.js";
import { SGD } from "../../lib/optim/index.js";
import { randomValues } from "../helpers.js";
import { expectBitEqual, fixture, flat, initialParams, maxAbsDiff, setGrads } from "./fixture.js";
import { sgdRef, type SGDHyper } from "./reference.js";

describe("SGD", () => {
  // 1e-6 absolute for the reason given in adamw.test.ts: torch's `p.add_(buf, alpha=-lr)` may be
  // an FMA in its build (a handful of elements here differ from it by one ulp, 1e-7).
  it("momentum 0.9 matches torch.optim.SGD after each of 5 steps", () => {
    const run = fixture.runs["sgd_momentum0.9"];
    const params = initialParams();
    const opt = new SGD(params, { lr: 1e-2, momentum: 0.9 });
    for (let step = 0; step < 5; step++) {
      setGrads(params, step);
      opt.step();
      params.forEach((p, k) => expect(maxAbsDiff(p.dataSync(), flat(run.params_after_step[step]![k]!)), `step ${step + 1}, param ${k}`).toBeLessThanOrEqual(1e-6));
    }
    tidy(() => {
      const { state } = opt.stateDict();
      run.final_state.forEach((ref, k) => expect(maxAbsDiff((state[k]!.momentumBuffer as Tensor).dataSync(), flat(ref.momentum_buffer!))).toBeLessThanOrEqual(1e-6));
    });
    opt.dispose();
    params.forEach((p) => p.dispose());
  });

  const variants: [string, SGDHyper][] = [
    ["plain (no momentum, no state)", { lr: 0.1, momentum: 0, dampening: 0, wd: 0, nesterov: false }],
    ["weight decay + dampening", { lr: 0.05, momentum: 0.8, dampening: 0.3, wd: 0.02, nesterov: false }],
    ["nesterov + weight decay", { lr: 0.05, momentum: 0.9, dampening: 0, wd: 0.01, nesterov: true }],
  ];
  for (const [name, h] of variants) {
    it(`${name}: matches the float32 reference over 3 steps, across chunk boundaries`, () => {
      const shapes = [[9000], [4, 3]];
      const params = shapes.map((s, k) => tensor(randomValues(s.reduce((a, b) => a * b), 20 + k), { shape: s }).requireGrad());
      const opt = new SGD(params, { lr: h.lr, momentum: h.momentum, dampening: h.dampening, weightDecay: h.wd, nesterov: h.nesterov });
      const ref = params.map((p) => ({ p: p.dataSync() as Float32Array, buf: null as Float32Array | null }));
      for (let step = 1; step <= 3; step++) {
        params.forEach((p, k) => {
          const g = Float32Array.from(randomValues(p.size, 50 * step + k));
          p.grad?.dispose();
          p.grad = tensor(g, { shape: p.shape });
          ref[k]!.buf = sgdRef(ref[k]!.p, g, ref[k]!.buf, h);
        });
        opt.step();
        params.forEach((p, k) => expectBitEqual(p.dataSync(), ref[k]!.p, `step ${step}, param ${k}`));
        // weight decay is added to a copy: .grad itself is not changed
        expectBitEqual(params[1]!.grad!.dataSync(), Float32Array.from(randomValues(12, 50 * step + 1)), "grad unchanged");
      }
      tidy(() => expect(Object.keys(opt.stateDict().state).length).toBe(h.momentum === 0 ? 0 : 2));
      opt.dispose();
      params.forEach((p) => p.dispose());
    });
  }

  it("rejects nesterov without momentum", () => {
    const p = tensor([1]).requireGrad();
    expect(() => new SGD([p], { nesterov: true })).toThrow(/nesterov needs momentum > 0 and dampening 0/);
    p.dispose();
  });
});
