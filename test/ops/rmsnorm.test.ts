// rmsNorm (lib/ops/rmsnorm.ts; kernels native/cpu/rmsnorm.cc): forward against float64, backward
// against float64 and finite differences, and PyTorch's numbers (transformers' LlamaRMSNorm and
// F.rms_norm, test/fixtures/ops). Tolerances as in layernorm.test.ts: forward 1e-5 relative L2
// (float32 sums of ~1000 terms), analytic gradients 1e-4 (dx subtracts nearly equal float32
// terms), gradcheck's float32 central differences ~1e-3.
import { describe, expect, it } from "vitest";
import { info, setNumThreads, tidy, zeros } from "../../lib/index.js";
import { expectClose, gradcheck } from "../helpers.js";
import { rmsNorm } from "../../lib/ops/rmsnorm.js";
import { arr, t, rmsNormRef } from "./reference.js";
import { flat, fromJson, torchReference } from "./torch-reference.js";

describe("rmsNorm", () => {
  const cases: [number[], boolean][] = [[[3, 8], true], [[1, 1], true], [[2, 3, 13], true], [[5, 37], false], [[130, 33], true], [[2, 1000], false]];

  it("forward matches float64 (with and without weight, leading dims, C=1)", () => {
    for (const [shape, hasW] of cases) {
      tidy(() => {
        const C = shape[shape.length - 1]!;
        const x = t(shape, 1, 3, 0.7), w = hasW ? t([C], 2, 0.5, 1) : null;
        const ref = rmsNormRef(arr(x), C, w && arr(w), 1e-6);
        const y = rmsNorm(x, w, 1e-6);
        expect(y.shape).toEqual(shape);
        expectClose(y, ref.y, 1e-5);
      });
    }
  });

  it("backward matches float64 across the 64 fixed row chunks of dw, and finite differences", () => {
    tidy(() => {
      const [N, C] = [130, 33];
      const x = t([N, C], 4, 2, -0.3).requireGrad(), w = t([C], 5, 0.5, 1).requireGrad();
      const gy = t([N, C], 7);
      const ref = rmsNormRef(arr(x), C, arr(w), 1e-6, arr(gy));
      rmsNorm(x, w, 1e-6).backward(gy);
      expectClose(x.grad!, ref.dx, 1e-4);
      expectClose(w.grad!, ref.dw, 1e-5);
    });
    // No C = 1 here: its dx ~ eps / |x|^3 is below float32 finite differences' noise.
    for (const [shape, hasW] of [[[3, 7], true], [[2, 5], false], [[1, 1, 4], true], [[5, 3, 2], true]] as const) {
      tidy(() => {
        const C = shape[shape.length - 1]!;
        const inputs = [t([...shape], 8, 2, 0.5), ...(hasW ? [t([C], 9, 0.5, 1)] : [])];
        gradcheck((x, w) => rmsNorm(x!, hasW ? w! : null, 1e-5), inputs);
      });
    }
  });

  it("gives bit-identical dw for any thread count", () => {
    const grads = (threads: number) => {
      setNumThreads(threads);
      return tidy(() => {
        const x = t([300, 48], 11).requireGrad(), w = t([48], 12).requireGrad();
        rmsNorm(x, w, 1e-6).backward(t([300, 48], 14));
        return [arr(w.grad!), arr(x.grad!)];
      });
    };
    const threads = info().threads;
    try {
      expect(grads(1)).toEqual(grads(3));
    } finally {
      setNumThreads(threads);
    }
  });

  it("names the shapes when weight does not match, and rejects a 0-d x", () => {
    tidy(() => {
      expect(() => rmsNorm(zeros([2, 4]), zeros([5]), 1e-6)).toThrow(/rmsNorm: weight has shape \[5\] but x \[2, 4\].*must be \[4\]/);
      expect(() => rmsNorm(zeros([]), null, 1e-6)).toThrow(/rmsNorm: x must have at least one dimension/);
    });
  });
});

describe("rmsNorm against PyTorch (test/fixtures/ops/reference.json)", () => {
  it("rms_norm: LlamaRMSNorm output and gradients, and F.rms_norm without weight", () => {
    tidy(() => {
      const R = torchReference().rms_norm;
      const x = fromJson(R.x, [3, 8]).requireGrad(), w = fromJson(R.weight).requireGrad();
      const y = rmsNorm(x, w, R.eps);
      expectClose(y, flat(R.y), 1e-6);
      y.backward(fromJson(R.grad_y, [3, 8]));
      expectClose(x.grad!, flat(R.grad_x), 1e-5);
      expectClose(w.grad!, flat(R.grad_weight), 1e-6);
      const x2 = fromJson(R.x, [3, 8]).requireGrad();
      const y2 = rmsNorm(x2, null, R.eps);
      expectClose(y2, flat(R.y_no_weight), 1e-6);
      y2.backward(fromJson(R.grad_y, [3, 8]));
      expectClose(x2.grad!, flat(R.grad_x_no_weight), 1e-5);
    });
  });
});
