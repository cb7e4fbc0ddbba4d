// clipGradNorm / gradNorm against torch.nn.utils.clip_grad_norm_ (fixture) and float64 sums.
import { describe, expect, it } from "vitest";
import { tensor, zeros, type Tensor } from "../../lib/index.js";
import { clipGradNorm, gradNorm } from "../../lib/optim/index.js";
import { randomValues } from "../helpers.js";
import { fixture, fixtureTensor, flat, maxAbsDiff } from "./fixture.js";

function paramsWithGrads(grads: number[][]): Tensor[] {
  return grads.map((g) => {
    const p = zeros([g.length]).requireGrad();
    p.grad = tensor(g);
    return p;
  });
}

const disposeAll = (ps: Tensor[]) => ps.forEach((p) => p.dispose());

describe("clipGradNorm", () => {
  for (const key of ["clipped", "unclipped_small"] as const) {
    it(`${key}: total norm and clipped gradients match torch`, () => {
      const ref = fixture.clip_grad_norm[key];
      const params = ref.grads_in.map((g, k) => {
        const p = zeros(fixture.shapes[k]!).requireGrad();
        p.grad = fixtureTensor(g, k);
        return p;
      });
      const total = clipGradNorm(params, ref.max_norm, ref.norm_type);
      // the norm is accumulated in double and rounded once; torch sums in float32: 1e-6 relative
      expect(Math.abs(total - ref.total_norm) / ref.total_norm).toBeLessThanOrEqual(1e-6);
      params.forEach((p, k) => expect(maxAbsDiff(p.grad!.dataSync(), flat(ref.grads_out[k]!)), `param ${k}`).toBeLessThanOrEqual(1e-6));
      disposeAll(params);
    });
  }

  it("computes p-norms (1, 2, 3, Infinity) over several tensors in one pass, across chunk boundaries", () => {
    const grads = [randomValues(10_000, 1).map((v) => v * 3), randomValues(7, 2), [], randomValues(4097, 3)];
    const params = paramsWithGrads(grads);
    const all = grads.flat().map((v) => Math.fround(v));
    for (const p of [1, 2, 3]) {
      const want = all.reduce((s, v) => s + Math.abs(v) ** p, 0) ** (1 / p);
      expect(Math.abs(gradNorm(params, p) - want) / want, `p = ${p}`).toBeLessThanOrEqual(1e-7);
    }
    expect(gradNorm(params, Infinity)).toBe(Math.fround(Math.max(...all.map(Math.abs))));
    disposeAll(params);
  });

  it("scales by maxNorm / (total + 1e-6) in float32 as torch does, and skips params without a gradient", () => {
    const params = paramsWithGrads([[3, 4], [12]]);
    const idle = tensor([1, 2]).requireGrad();
    const total = clipGradNorm([...params, idle], 6.5);
    expect(total).toBe(13);
    const coef = Math.fround(Math.fround(1 / Math.fround(13 + Math.fround(1e-6))) * 6.5);
    expect(Array.from(params[0]!.grad!.dataSync())).toEqual([Math.fround(3 * coef), Math.fround(4 * coef)]);
    expect(Array.from(params[1]!.grad!.dataSync())).toEqual([Math.fround(12 * coef)]);
    expect(idle.grad).toBeNull();
    expect(clipGradNorm([idle], 1)).toBe(0);
    disposeAll([...params, idle]);
  });

  it("reports a non-finite norm, scales by it like torch, or throws with errorIfNonfinite", () => {
    const nan = paramsWithGrads([[1, NaN], [2]]);
    expect(() => clipGradNorm(nan, 1, 2, { errorIfNonfinite: true })).toThrow(/total norm of order 2 of the gradients is non-finite \(NaN\)/);
    expect(Array.from(nan[1]!.grad!.dataSync())).toEqual([2]); // nothing was scaled
    expect(clipGradNorm(nan, 1)).toBeNaN();
    expect(Number.isNaN(nan[1]!.grad!.item())).toBe(true);
    expect(gradNorm(nan, Infinity)).toBeNaN();
    const inf = paramsWithGrads([[Infinity, 1]]);
    expect(clipGradNorm(inf, 1)).toBe(Infinity);
    expect(Array.from(inf[0]!.grad!.dataSync())).toEqual([NaN, 0]); // torch: inf * 0 = NaN, 1 * 0 = 0
    disposeAll([...nan, ...inf]);
    expect(() => gradNorm([], 0)).toThrow(/normType must be > 0/);
  });
});
