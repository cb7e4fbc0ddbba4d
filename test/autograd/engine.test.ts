// The backward engine (lib/autograd/engine.ts): it adds into .grad, so backward on k micro-batches
// with each loss scaled by 1/k gives the gradient of the mean over the whole batch (gradient
// accumulation, as the Trainer does it); it is loaded with the ops and registered on Tensor.
import { describe, expect, it } from "vitest";
import { tensor, tidy } from "../../lib/index.js";
import { mean, mul, scale, square, sum } from "../../lib/ops/index.js";
import { randomValues } from "../helpers.js";

describe("backward engine", () => {
  it("2 half-batches with the loss scaled by 1/2 give the full batch's gradient", () => {
    const w = tensor(randomValues(5, 1)).requireGrad();
    const x = tensor(randomValues(8 * 5, 2), { shape: [8, 5] });
    // loss = mean over rows of (x_r · w)²
    const loss = (rows: ReturnType<typeof tensor>) => mean(square(sum(mul(rows, w), 1)));

    tidy(() => loss(x).backward());
    const full = Array.from(w.grad!.dataSync());
    w.grad!.dispose();
    w.grad = null;

    tidy(() => scale(loss(x.slice(0, 0, 4)), 1 / 2).backward());
    tidy(() => scale(loss(x.slice(0, 4, 8)), 1 / 2).backward());
    const accumulated = Array.from(w.grad!.dataSync());
    accumulated.forEach((g, i) => expect(g).toBeCloseTo(full[i]!, 6));
    w.dispose();
    x.dispose();
  });

  it("refuses to sum into a .grad that is not shaped like its tensor", () => {
    const w = tensor([1, 2, 3]).requireGrad();
    w.grad = tensor([0, 0]);
    expect(() => tidy(() => sum(mul(w, w)).backward())).toThrow(/cannot add a gradient of shape \[3\] into \[2\]/);
    w.dispose();
  });
});
