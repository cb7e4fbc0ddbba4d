// layerNorm (lib/ops/layernorm.ts; kernels native/cpu/layernorm.cc): forward against float64,
// backward against float64 and finite differences, and PyTorch's numbers (test/fixtures/ops).
// Tolerances: forward 1e-5 relative L2. The kernels round inputs, partial sums and exp (the SIMD
// exp is within ~2 ulp) to float32, so errors sit around 1e-7..1e-6 of the row's scale; 1e-5
// leaves room for rows of ~1000 terms. Analytic gradients 1e-4 (they subtract nearly equal
// float32 sums, e.g. P·(dP - rowsum)). gradcheck's float32 central differences agree to ~1e-3.
import { describe, expect, it } from "vitest";
import { info, setNumThreads, tidy, zeros } from "../../lib/index.js";
import { expectClose, gradcheck } from "../helpers.js";
import { layerNorm } from "../../lib/ops/layernorm.js";
import { arr, t, layerNormRef } from "./reference.js";
import { flat, fromJson, torchReference } from "./torch-reference.js";

// ---- layer norm -----------------------------------------------------------------------------------

describe("layerNorm", () => {
  const cases: [number[], boolean, boolean][] = [
    [[3, 8], true, true], [[1, 1], true, true], [[2, 3, 13], true, false], [[5, 37], false, true], [[4, 7], false, false], [[130, 33], true, true],
  ];

  it("forward matches float64 (with and without weight/bias, leading dims, C=1)", () => {
    for (const [shape, hasW, hasB] of cases) {
      tidy(() => {
        const C = shape[shape.length - 1]!;
        const x = t(shape, 1, 3, 0.7), w = hasW ? t([C], 2, 0.5, 1) : null, b = hasB ? t([C], 3) : null;
        const ref = layerNormRef(arr(x), C, w && arr(w), b && arr(b), 1e-5);
        const y = layerNorm(x, w, b);
        expect(y.shape).toEqual(shape);
        // C = 1: x - mean is exactly 0, y is exactly the bias.
        expectClose(y, ref.y, C === 1 ? 0 : 1e-5);
      });
    }
  });

  it("backward matches float64 across the 64 fixed row chunks of dw/db, and finite differences", () => {
    tidy(() => {
      const [N, C] = [130, 33];
      const x = t([N, C], 4, 2, -0.3).requireGrad(), w = t([C], 5, 0.5, 1).requireGrad(), b = t([C], 6).requireGrad();
      const gy = t([N, C], 7);
      const ref = layerNormRef(arr(x), C, arr(w), arr(b), 1e-5, arr(gy));
      layerNorm(x, w, b).backward(gy);
      expectClose(x.grad!, ref.dx, 1e-4);
      expectClose(w.grad!, ref.dw, 1e-5);
      expectClose(b.grad!, ref.db, 1e-5);
    });
    for (const [shape, hasW, hasB] of [[[3, 7], true, true], [[2, 5], false, false], [[1, 1, 4], true, false], [[2, 3], false, true]] as const) {
      tidy(() => {
        const C = shape[shape.length - 1]!;
        const inputs = [t([...shape], 8, 2, 0.5), ...(hasW ? [t([C], 9, 0.5, 1)] : []), ...(hasB ? [t([C], 10)] : [])];
        gradcheck((x, ...rest) => layerNorm(x!, hasW ? rest[0]! : null, hasB ? rest[hasW ? 1 : 0]! : null, 1e-5), inputs);
      });
    }
  });

  it("gives bit-identical dw/db for any thread count", () => {
    const grads = (threads: number) => {
      setNumThreads(threads);
      return tidy(() => {
        const x = t([300, 48], 11).requireGrad(), w = t([48], 12).requireGrad(), b = t([48], 13).requireGrad();
        layerNorm(x, w, b).backward(t([300, 48], 14));
        return [arr(w.grad!), arr(b.grad!), arr(x.grad!)];
      });
    };
    const threads = info().threads;
    try {
      expect(grads(1)).toEqual(grads(3));
    } finally {
      setNumThreads(threads);
    }
  });

  it("names the shapes when weight does not match", () => {
    tidy(() => expect(() => layerNorm(zeros([2, 4]), zeros([5]), null)).toThrow(/weight has shape \[5\].*must be \[4\]/));
  });
});

describe("layerNorm against PyTorch (test/fixtures/ops/reference.json)", () => {
  it("layer_norm: output and gradients", () => {
    tidy(() => {
      const L = torchReference().layer_norm;
      const x = fromJson(L.x, [3, 8]).requireGrad(), w = fromJson(L.weight).requireGrad(), b = fromJson(L.bias).requireGrad();
      const y = layerNorm(x, w, b, L.eps);
      expectClose(y, flat(L.y), 1e-6);
      y.backward(fromJson(L.grad_y, [3, 8]));
      expectClose(x.grad!, flat(L.grad_x), 1e-5);
      expectClose(w.grad!, flat(L.grad_weight), 1e-6);
      expectClose(b.grad!, flat(L.grad_bias), 1e-6);
    });
  });
});
