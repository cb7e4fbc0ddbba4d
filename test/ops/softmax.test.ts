// softmax / logSoftmax (lib/ops/softmax.ts; kernels native/cpu/softmax.cc) against float64 and
// finite differences.
// Tolerances: forward 1e-5 relative L2. The kernels round inputs, partial sums and exp (the SIMD
// exp is within ~2 ulp) to float32, so errors sit around 1e-7..1e-6 of the row's scale; 1e-5
// leaves room for rows of ~1000 terms. Analytic gradients 1e-4 (they subtract nearly equal
// float32 sums, e.g. P·(dP - rowsum)). gradcheck's float32 central differences agree to ~1e-3.
import { describe, expect, it } from "vitest";
import { tensor, tidy } from "../../lib/index.js";
import { expectClose, gradcheck } from "../helpers.js";
import { logSoftmax, softmax } from "../../lib/ops/softmax.js";
import { arr, t, softmaxRef } from "./reference.js";

// ---- softmax --------------------------------------------------------------------------------------

describe("softmax and logSoftmax", () => {
  const shapes: [number[], number][] = [[[1, 1], -1], [[3, 17], -1], [[2, 3, 5], 1], [[4, 6], 0], [[2, 1000], -1]];

  for (const log of [false, true]) {
    const name = log ? "logSoftmax" : "softmax";
    const op = log ? logSoftmax : softmax;
    it(`${name}: forward matches float64 along any dim, stable for large inputs`, () => {
      for (const [shape, dim] of shapes) {
        tidy(() => {
          const x = t(shape, 20, 10);
          const d = dim < 0 ? shape.length + dim : dim;
          const moved = x.transpose(d, -1).contiguous();
          const ref = softmaxRef(arr(moved), shape[d]!, log);
          const y = op(x, dim);
          expect(y.shape).toEqual(shape);
          expectClose(y.transpose(d, -1).contiguous(), ref, 1e-5);
        });
      }
      tidy(() => {
        // exp(1e4) overflows float32: only a max-subtracting kernel gets these right.
        const big = tensor([[1e4, 1e4 - 1, -1e4], [-5e3, -5e3, -5e3]]);
        expectClose(op(big), softmaxRef(arr(big), 3, log), 1e-6);
      });
    });

    it(`${name}: backward matches finite differences`, () => {
      for (const [shape, dim] of [[[3, 5], -1], [[1, 1], -1], [[2, 3, 4], 1], [[4, 3], 0]] as const) {
        tidy(() => gradcheck((x) => op(x!, dim), [t([...shape], 21, 2)]));
      }
    });
  }

  it("propagates NaN and gives NaN for a row of -inf, like PyTorch", () => {
    tidy(() => {
      const y = arr(softmax(tensor([[1, NaN, 2], [-Infinity, -Infinity, -Infinity], [0, -Infinity, 0]])));
      expect(y.slice(0, 6).every(Number.isNaN)).toBe(true);
      expect(y.slice(6)).toEqual([0.5, 0, 0.5]);
    });
  });
});
