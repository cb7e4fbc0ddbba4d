// Gradient accumulation: two half-batches with backwardAccumulated(loss, 2) give the full batch's
// gradient, because backward() adds into .grad.
import { describe, expect, it } from "vitest";
import { tensor, tidy } from "../../lib/index.js";
import { mean, mul, square, sum } from "../../lib/ops/index.js";
import { backwardAccumulated } from "../../lib/optim/index.js";
import { randomValues } from "../helpers.js";

describe("gradient accumulation", () => {
  it("2 half-batches with the loss scaled by 1/2 give the full batch's gradient", () => {
    const w = tensor(randomValues(5, 1)).requireGrad();
    const x = tensor(randomValues(8 * 5, 2), { shape: [8, 5] });
    // loss = mean over rows of (x_r · w)²
    const loss = (rows: ReturnType<typeof tensor>) => mean(square(sum(mul(rows, w), 1)));

    tidy(() => loss(x).backward());
    const full = Array.from(w.grad!.dataSync());
    w.grad!.dispose();
    w.grad = null;

    tidy(() => backwardAccumulated(loss(x.slice(0, 0, 4)), 2));
    tidy(() => backwardAccumulated(loss(x.slice(0, 4, 8)), 2));
    const accumulated = Array.from(w.grad!.dataSync());
    accumulated.forEach((g, i) => expect(g).toBeCloseTo(full[i]!, 6));
    expect(() => backwardAccumulated(loss(x), 0)).toThrow(/accumSteps must be an integer >= 1/);
    w.dispose();
    x.dispose();
  });
});
