// LR schedules against transformers (test/fixtures/schedules.json, made by
// test/fixtures/make_schedule_fixture.py).
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { tensor } from "../../lib/index.js";
import {
  AdamW, constantWithWarmupLambda, cosineWithWarmupLambda, getScheduler, LambdaLR, linearWithWarmupLambda, SGD,
  type LrLambda,
} from "../../lib/optim/index.js";

interface Case {
  schedule: "constant_with_warmup" | "linear" | "cosine";
  kwargs: { num_warmup_steps: number; num_training_steps?: number; num_cycles?: number };
  lr: number[];
  factor: number[];
}
const ref = JSON.parse(readFileSync(new URL("../fixtures/schedules.json", import.meta.url), "utf8")) as { base_lr: number; cases: Case[] };

function lambdaFor(c: Case): LrLambda {
  const { num_warmup_steps: w, num_training_steps: t, num_cycles: cycles } = c.kwargs;
  if (c.schedule === "constant_with_warmup") return constantWithWarmupLambda(w);
  if (c.schedule === "linear") return linearWithWarmupLambda(w, t!);
  return cosineWithWarmupLambda(w, t!, cycles);
}

describe("lr schedules match transformers", () => {
  for (const c of ref.cases) {
    it(`${c.schedule} ${JSON.stringify(c.kwargs)}: multipliers and the lr after each scheduler step`, () => {
      const p = tensor([0]).requireGrad();
      const opt = new SGD([p], { lr: ref.base_lr });
      const sched = new LambdaLR(opt, lambdaFor(c));
      const lrs = [sched.getLr()[0]!];
      for (let i = 1; i < c.lr.length; i++) {
        sched.step();
        lrs.push(sched.getLr()[0]!);
      }
      // Same double arithmetic as Python; cos may differ from glibc's by an ulp (V8 has its own).
      c.factor.forEach((want, i) => expect(lambdaFor(c)(i), `factor at step ${i}`).toBeCloseTo(want, 15));
      c.lr.forEach((want, i) => expect(lrs[i]!, `lr at step ${i}`).toBeCloseTo(want, 18));
      expect(sched.stepCount).toBe(c.lr.length - 1);
      opt.dispose();
      p.dispose();
    });
  }

  it("drives every group from its own base lr, and restores from stateDict", () => {
    const a = tensor([0]).requireGrad(), b = tensor([0]).requireGrad();
    const opt = new AdamW([{ params: [a], lr: 1e-3 }, { params: [b], lr: 4e-3 }]);
    const sched = getScheduler("linear", opt, { numWarmupSteps: 2, numTrainingSteps: 6 });
    expect(sched.getLr()).toEqual([0, 0]);
    sched.step();
    sched.step();
    sched.step();
    expect(sched.getLr()).toEqual([1e-3 * 0.75, 4e-3 * 0.75]);
    const saved = JSON.parse(JSON.stringify(sched.stateDict()));
    const opt2 = new AdamW([{ params: [a], lr: 1e-3 }, { params: [b], lr: 4e-3 }]);
    const resumed = getScheduler("linear", opt2, { numWarmupSteps: 2, numTrainingSteps: 6 });
    resumed.loadStateDict(saved);
    expect(resumed.getLr()).toEqual(sched.getLr());
    sched.step();
    resumed.step();
    expect(resumed.getLr()).toEqual(sched.getLr());
    expect(() => getScheduler("cosine", opt)).toThrow(/"cosine" schedule needs numTrainingSteps/);
    expect(() => linearWithWarmupLambda(-1, 5)).toThrow(/numWarmupSteps must be an integer >= 0/);
    [opt, opt2].forEach((o) => o.dispose());
    [a, b].forEach((t) => t.dispose());
  });
});
