// crossEntropy (lib/ops/crossentropy.ts; kernels native/cpu/crossentropy.cc) against float64,
// finite differences and PyTorch's numbers (test/fixtures/ops).
// Tolerances: forward 1e-5 relative L2. The kernels round inputs, partial sums and exp (the SIMD
// exp is within ~2 ulp) to float32, so errors sit around 1e-7..1e-6 of the row's scale; 1e-5
// leaves room for rows of ~1000 terms. Analytic gradients 1e-4 (they subtract nearly equal
// float32 sums, e.g. P·(dP - rowsum)). gradcheck's float32 central differences agree to ~1e-3.
import { describe, expect, it } from "vitest";
import { memory, tensor, tidy, zeros } from "../../lib/index.js";
import { expectClose, gradcheck } from "../helpers.js";
import { crossEntropy, linearCrossEntropy } from "../../lib/ops/crossentropy.js";
import { linear } from "../../lib/ops/matmul.js";
import { arr, t, crossEntropyRef } from "./reference.js";
import { flat, fromJson, torchReference } from "./torch-reference.js";

// ---- cross-entropy --------------------------------------------------------------------------------

describe("crossEntropy", () => {
  it("forward matches float64 for mean, sum and none, with ignored targets", () => {
    const cases: [number, number, number[], number][] = [
      [5, 7, [1, -100, 6, 0, 3], -100],
      [1, 1, [0], -100],
      [4, 11, [2, 2, 0, 10], 2], // custom ignoreIndex inside the class range
      [3, 50257, [50256, 0, 12345], -100],
    ];
    for (const [N, V, tg, ignore] of cases) {
      tidy(() => {
        const logits = t([N, V], 30, 4), targets = tensor(new Int32Array(tg), { shape: [N] });
        const ref = crossEntropyRef(arr(logits), V, tg, ignore);
        const opts = { ignoreIndex: ignore };
        expectClose([crossEntropy(logits, targets, opts).item()], [ref.mean], 1e-5);
        expectClose([crossEntropy(logits, targets, { ...opts, reduction: "sum" }).item()], [ref.sum], 1e-5);
        const none = crossEntropy(logits, targets, { ...opts, reduction: "none" });
        expect(none.shape).toEqual([N]);
        expectClose(none, ref.losses, 1e-5);
      });
    }
  });

  it("backward matches float64 and finite differences; leading dimensions are flattened", () => {
    tidy(() => {
      const [N, V] = [6, 50257];
      const tg = [3, -100, 50256, 7, -100, 0];
      const logits = t([N, V], 31, 5).requireGrad();
      const ref = crossEntropyRef(arr(logits), V, tg, -100);
      crossEntropy(logits, tensor(new Int32Array(tg), { shape: [N] })).backward();
      expectClose(logits.grad!, ref.gradSum.map((g) => g / ref.count), 1e-5);
    });
    for (const reduction of ["mean", "sum", "none"] as const) {
      tidy(() => {
        const targets = tensor(new Int32Array([1, -100, 4, 0, 4]), { shape: [5] });
        gradcheck((x) => crossEntropy(x!, targets, { reduction }), [t([5, 6], 32, 3)]);
      });
    }
    tidy(() => {
      const targets = tensor(new Int32Array([0, 2, -100, 1, 3, 3]), { shape: [2, 3] });
      const logits = t([2, 3, 4], 33, 2);
      expect(crossEntropy(logits, targets, { reduction: "none" }).shape).toEqual([2, 3]);
      gradcheck((x) => crossEntropy(x!, targets), [logits]);
      gradcheck((x) => crossEntropy(x!, tensor(new Int32Array([0]), { shape: [1] })), [t([1, 1], 34)]);
    });
  });

  it("backward stays exact when the logits are large: each row of the gradient sums to 0", () => {
    // softmax recomputed as exp(x - lse) sums to 1 only within the rounding of lse (ulp(1000) = 6e-5);
    // scaled by its actual sum it is as exact as softmax's division. Before: 1.6e-6 off float64 at
    // +1000 and rows summing to 4e-6; now 3e-8 and 6e-9.
    for (const shift of [100, 1000]) {
      tidy(() => {
        const [N, V] = [6, 300];
        const tg = Array.from({ length: N }, (_, i) => (i * 37) % V);
        const logits = t([N, V], 35, 3, shift).requireGrad();
        const ref = crossEntropyRef(arr(logits), V, tg, -100);
        crossEntropy(logits, tensor(new Int32Array(tg), { shape: [N] })).backward();
        expectClose(logits.grad!, ref.gradSum.map((g) => g / ref.count), 2e-7);
        const g = arr(logits.grad!);
        for (let n = 0; n < N; n++) expect(Math.abs(g.slice(n * V, (n + 1) * V).reduce((a, b) => a + b, 0))).toBeLessThan(5e-8);
      });
    }
  });

  it("all targets ignored: mean is NaN like PyTorch, sum and none are 0, the gradient is 0", () => {
    tidy(() => {
      const logits = t([3, 5], 35).requireGrad(), targets = tensor(new Int32Array([-100, -100, -100]), { shape: [3] });
      const loss = crossEntropy(logits, targets);
      expect(Number.isNaN(loss.item())).toBe(true);
      loss.backward();
      expect(arr(logits.grad!)).toEqual(new Array(15).fill(0));
      expect(crossEntropy(logits, targets, { reduction: "sum" }).item()).toBe(0);
      expect(arr(crossEntropy(logits, targets, { reduction: "none" }))).toEqual([0, 0, 0]);
    });
  });

  it("names the bad target and its position, and asks for int32 targets", () => {
    tidy(() => {
      const logits = zeros([2, 3, 5]);
      expect(() => crossEntropy(logits, tensor(new Int32Array([0, 1, 2, 3, 5, 4]), { shape: [2, 3] }))).toThrow(
        /target 5 at position \[1, 1\] of targets \[2, 3\] is out of range for 5 classes; targets must be in \[0, 5\) or equal ignoreIndex \(-100\)/,
      );
      expect(() => crossEntropy(zeros([3, 5]), tensor(new Int32Array([0, -1, 2]), { shape: [3] }))).toThrow(/target -1 at position 1 is out of range/);
      expect(() => crossEntropy(zeros([3, 5]), tensor([0, 1, 2]))).toThrow(/targets must be int32 class indices, got float32/);
      expect(() => crossEntropy(zeros([3, 5]), tensor(new Int32Array([0, 1]), { shape: [2] }))).toThrow(/logits \[3, 5\] and targets \[2\] do not match/);
    });
  });
});

describe("crossEntropy against PyTorch (test/fixtures/ops/reference.json)", () => {
  it("cross_entropy: mean, sum, none, all-ignored and the gradient", () => {
    tidy(() => {
      const C = torchReference().cross_entropy;
      const V = (C.logits[0] as unknown[]).length, N = (C.target as number[]).length;
      const logits = fromJson(C.logits, [N, V]).requireGrad(), targets = tensor(new Int32Array(C.target), { shape: [N] });
      const loss = crossEntropy(logits, targets, { ignoreIndex: C.ignore_index });
      expectClose([loss.item()], [Number(C.loss_mean)], 1e-6);
      loss.backward();
      expectClose(logits.grad!, flat(C.grad_logits_mean), 1e-5);
      expectClose([crossEntropy(logits, targets, { reduction: "sum" }).item()], [Number(C.loss_sum)], 1e-6);
      expectClose(crossEntropy(logits, targets, { reduction: "none" }), flat(C.loss_none), 1e-6);
      const allIgnored = crossEntropy(logits.slice(0, 0, 2), tensor(new Int32Array([-100, -100]), { shape: [2] }));
      expect(Number.isNaN(allIgnored.item())).toBe(C.loss_mean_all_ignored === "NaN");
    });
  });
});

// ---- linearCrossEntropy: the lm_head and the loss fused, chunk by chunk --------------------------
// Tolerances: float32 as crossEntropy's above (forward 1e-5, x's gradient 1e-4: one more GEMM of
// float32 sums). With a bf16 weight the reference is the unfused autocast path, crossEntropy(linear(x,
// W16)): the same logits (x rounded to bf16, float32 sums), so the loss agrees to 1e-6; the fused
// path rounds softmax − onehot to bf16 before scaling by 1/count where the unfused one rounds the
// scaled gradient, so x's gradient differs by about one bf16 rounding (2^-8 relative): 1e-2.

/** float64 reference: loss and dL/dx of the mean cross-entropy of x·Wᵀ. */
function linearCrossEntropyRef(x: number[], w: number[], N: number, C: number, V: number, tg: number[], ignore: number) {
  const logits: number[] = [];
  for (let n = 0; n < N; n++) for (let v = 0; v < V; v++) {
    let s = 0;
    for (let c = 0; c < C; c++) s += x[n * C + c]! * w[v * C + c]!;
    logits.push(s);
  }
  const ref = crossEntropyRef(logits, V, tg, ignore);
  const dx = new Array<number>(N * C).fill(0);
  for (let n = 0; n < N; n++) for (let v = 0; v < V; v++) {
    const g = ref.gradSum[n * V + v]! / ref.count;
    for (let c = 0; c < C; c++) dx[n * C + c] += g * w[v * C + c]!;
  }
  return { loss: ref.mean, dx };
}

describe("linearCrossEntropy", () => {
  it("matches float64 in loss and x's gradient, whatever the chunk size; finite differences", () => {
    const [N, C, V] = [7, 5, 13];
    const tg = [3, -100, 12, 0, 7, -100, 5];
    const targets = () => tensor(new Int32Array(tg), { shape: [N] });
    const w = t([V, C], 41, 0.8);
    const ref = linearCrossEntropyRef(arr(t([N, C], 40)), arr(w), N, C, V, tg, -100);
    for (const chunkRows of [1, 3, 7, 100, undefined]) {
      tidy(() => {
        const x = t([N, C], 40).requireGrad();
        const loss = linearCrossEntropy(x, w, targets(), { chunkRows });
        expectClose([loss.item()], [ref.loss], 1e-5);
        loss.backward();
        expectClose(x.grad!, ref.dx, 1e-4);
      });
    }
    tidy(() => gradcheck((x) => linearCrossEntropy(x!, w, targets(), { chunkRows: 2 }), [t([N, C], 42)]));
    w.dispose();
  });

  it("with a bfloat16 weight: the unfused autocast path's loss and gradient", () => {
    const [N, C, V] = [9, 16, 50];
    const tg = [1, 49, -100, 0, 7, 7, 20, -100, 3];
    tidy(() => {
      const w16 = t([V, C], 43, 0.5).to("cpu", "bfloat16");
      const targets = tensor(new Int32Array(tg), { shape: [N] });
      const x1 = t([N, C], 44).requireGrad(), x2 = t([N, C], 44).requireGrad();
      const fused = linearCrossEntropy(x1, w16, targets, { chunkRows: 4 });
      const unfused = crossEntropy(linear(x2, w16), targets);
      expectClose([fused.item()], [unfused.item()], 1e-6);
      fused.backward();
      unfused.backward();
      expectClose(x1.grad!, x2.grad!.dataSync(), 1e-2);
    });
  });

  it("every target ignored: NaN loss and a zero gradient, as crossEntropy", () => {
    tidy(() => {
      const x = t([3, 4], 45).requireGrad();
      const loss = linearCrossEntropy(x, t([6, 4], 46), tensor(new Int32Array([-100, -100, -100]), { shape: [3] }));
      expect(loss.item()).toBeNaN();
      loss.backward();
      expect(Array.from(x.grad!.dataSync()).every((g) => g === 0 || Number.isNaN(g))).toBe(true);
    });
  });

  it("without a gradient to compute it only forms the loss; bad input is named", () => {
    tidy(() => {
      const x = t([4, 3], 47), w = t([5, 3], 48), targets = tensor(new Int32Array([0, 4, 2, 1]), { shape: [4] });
      const ref = crossEntropy(linear(x, w), targets).item();
      const before = memory().cpu!.bytes;
      expectClose([linearCrossEntropy(x, w, targets, { chunkRows: 3 }).item()], [ref], 1e-6);
      expect(memory().cpu!.bytes).toBe(before + 4); // the loss only: the chunk buffers are gone
      expect(() => linearCrossEntropy(x, w, tensor(new Int32Array([0, 5, 2, 1]), { shape: [4] }))).toThrow(
        /linearCrossEntropy: target 5 at position 1 is out of range for 5 classes/,
      );
      expect(() => linearCrossEntropy(x, t([5, 4], 49), targets)).toThrow(/x must be \[N, C\] and weight \[V, C\] with the same C, got x \[4, 3\] and weight \[5, 4\]/);
      expect(() => linearCrossEntropy(x, w, targets, { chunkRows: 0 })).toThrow(/chunkRows must be an integer >= 1/);
      expect(() => linearCrossEntropy(x, w.requireGrad(), targets)).toThrow(/requires grad; the fused path computes no weight gradient/);
    });
  });
});
