// matmul, linear and conv1dLinear against float64 references, gradients by finite differences, and
// the layout promises: plain transposes and shared right operands are read in place (spied gemm and
// copy calls), frozen weights cost no gemm in backward.
//
// Tolerance: relative L2 error 1e-5 for forward results. Inputs are U(-1, 1); fp32 accumulation over
// k ≤ 40 terms in another order than the float64 reference gives errors around 1e-7.
//
// Then the kernels under them, cpu gemm_f32, gemm_bf16 and gemm_f32_bf16 (native/cpu/matmul.cc,
// gemv.cc) called directly, against a float64 reference: all four transpose cases, alpha/beta, batches with
// broadcast operands, edge shapes around the register tiles and cache blocks, and sub-matrix views
// (ld > width, offsets). Those tests run at the SIMD level this process dispatches to (avx512bf16
// on a host with AVX-512 BF16); the last one re-runs them in child processes with
// LOWRANK_SIMD=scalar, =avx2 and =avx512 (AVX-512 without BF16), which the addon reads once at
// load, so every kernel is proven on one machine. Tolerance there: relative L2 error 1e-5; fp32
// accumulation over k ≤ 600 terms in another order than float64 gives about 1e-7..1e-6. A float32
// A times a bf16 B (rounded as it is packed) must match the product of a bf16 cast of A bit for bit.
import { spawnSync } from "node:child_process";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it, vi } from "vitest";
import { full, Generator, info, rand, tensor, tidy, zeros, type Tensor } from "../../lib/index.js";
import { native } from "../../lib/native/index.js";
import { bf16BitsToF32, DTYPE_CODE, f32ToBf16Bits } from "../../lib/tensor/dtype.js";
import { gelu } from "../../lib/ops/elementwise.js";
import { conv1dLinear, linear, matmul } from "../../lib/ops/matmul.js";
import { expand } from "../../lib/ops/shape.js";
import { expectClose, gradcheck, randomValues, relError } from "../helpers.js";

const TOL = 1e-5;
const size = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);
const t = (shape: number[], seed: number) => tensor(randomValues(size(shape), seed), { shape });
const values = (x: Tensor) => Array.from(x.dataSync());
/** The bits of a float32 tensor's values (NaN payloads kept: no trip through JS numbers). */
const f32Bits = (x: Tensor) => {
  const v = x.dataSync();
  return new Uint32Array(v.buffer, v.byteOffset, v.length);
};

/** PyTorch's matmul in float64 on flat row-major arrays. */
function refMatmul(a: number[], aShape: number[], b: number[], bShape: number[]): { shape: number[]; out: number[] } {
  const A = aShape.length === 1 ? [1, aShape[0]!] : aShape, B = bShape.length === 1 ? [bShape[0]!, 1] : bShape;
  const [m, k] = A.slice(-2) as [number, number], n = B[B.length - 1]!;
  const ab = A.slice(0, -2), bb = B.slice(0, -2), nb = Math.max(ab.length, bb.length);
  const pa = [...Array(nb - ab.length).fill(1), ...ab], pb = [...Array(nb - bb.length).fill(1), ...bb];
  const batch = pa.map((d, i) => Math.max(d, pb[i]!));
  const out: number[] = [];
  for (let f = 0; f < size(batch); f++) {
    let rem = f, ia = 0, ib = 0, sa = 1, sb = 1;
    for (let d = nb - 1; d >= 0; d--) {
      const idx = rem % batch[d]!;
      rem = Math.floor(rem / batch[d]!);
      ia += (pa[d] === 1 ? 0 : idx) * sa;
      ib += (pb[d] === 1 ? 0 : idx) * sb;
      sa *= pa[d]!;
      sb *= pb[d]!;
    }
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let acc = 0;
        for (let p = 0; p < k; p++) acc += a[ia * m * k + i * k + p]! * b[ib * k * n + p * n + j]!;
        out.push(acc);
      }
    }
  }
  const shape = [...batch, ...(aShape.length > 1 ? [m] : []), ...(bShape.length > 1 ? [n] : [])];
  return { shape, out };
}

/** Counts the addon calls made while fn runs. */
function countCalls(fn: () => void): { gemm: { batch: number; m: number }[]; copies: number } {
  const addon = native();
  const gemm = vi.spyOn(addon, "gemm");
  const copy = vi.spyOn(addon, "copyStrided");
  fn();
  const calls = { gemm: gemm.mock.calls.map(([a]) => ({ m: a.m, batch: a.batch })), copies: copy.mock.calls.length };
  gemm.mockRestore();
  copy.mockRestore();
  return calls;
}

afterEach(() => vi.restoreAllMocks());

describe("matmul", () => {
  const cases: [number[], number[]][] = [
    [[7], [7]], // dot product
    [[5], [5, 3]], // vector @ matrix
    [[4, 6], [6]], // matrix @ vector
    [[1, 1], [1, 1]],
    [[13, 17], [17, 11]], // primes: no tile size divides them
    [[33, 9], [9, 19]], // just past multiples of 8/16/32
    [[3, 4, 5], [5, 2]], // batch @ shared matrix
    [[4, 5], [3, 5, 2]], // shared matrix @ batch
    [[2, 3, 4], [2, 4, 5]],
    [[2, 1, 3, 4], [3, 4, 2]], // broadcast batch dims: [2,1] with [3] -> [2,3]
    [[2, 1, 3, 4], [1, 3, 4, 2]], // each side broadcasts the other's batch dim
    [[6], [2, 6, 3]], // vector @ batch
    [[2, 3, 6], [6]], // batch @ vector
  ];
  for (const [sa, sb] of cases) {
    it(`${JSON.stringify(sa)} @ ${JSON.stringify(sb)}: float64 reference and finite differences`, () => {
      tidy(() => {
        const a = t(sa, 1), b = t(sb, 2);
        const ref = refMatmul(values(a), sa, values(b), sb);
        const out = matmul(a, b);
        expect(out.shape).toEqual(ref.shape);
        expectClose(out, ref.out, TOL);
        gradcheck((x, y) => matmul(x!, y!), [a, b]);
      });
    });
  }

  it("reads plain transposes in place: one gemm, no copy, in forward and backward", () => {
    tidy(() => {
      // a = Pᵀ and b = Qᵀ with P, Q contiguous: gemm gets trans flags and the stored row strides.
      const p = t([9, 7], 3), q = t([5, 9], 4);
      const ref = refMatmul(values(p.transpose(0, 1).contiguous()), [7, 9], values(q.transpose(0, 1).contiguous()), [9, 5]);
      let out!: Tensor;
      const fwd = countCalls(() => (out = matmul(p.transpose(0, 1), q.transpose(0, 1))));
      expect(fwd).toEqual({ gemm: [{ m: 7, batch: 1 }], copies: 0 });
      expectClose(out, ref.out, TOL);
      gradcheck((x, y) => matmul(x!.transpose(0, 1), y!.transpose(0, 1)), [p, q]);
      // A batched transpose (the attention pattern q @ kᵀ) and a permuted batch are read in place too.
      const x = t([2, 3, 6, 4], 5), y = t([2, 3, 5, 4], 6);
      expect(countCalls(() => matmul(x, y.transpose(-2, -1))).copies).toBe(0);
      const z = t([6, 2, 4], 7); // [m, batch, k] permuted to [batch, m, k]: batch stride k, row stride 2k
      expect(countCalls(() => matmul(z.permute(1, 0, 2), t([4, 3], 8))).copies).toBe(0);
      gradcheck((u, v) => matmul(u!, v!.transpose(-2, -1)), [x, y]);
      gradcheck((u, v) => matmul(u!.permute(1, 0, 2), v!), [z, t([4, 3], 8)]);
    });
  });

  it("copies only layouts gemm cannot read, and still gets them right", () => {
    tidy(() => {
      // Rows at stride 0 (an expanded row): no trans flag or row stride describes them, so a copy.
      const row = t([1, 5], 9), b = t([5, 3], 10);
      const ref = refMatmul(Array.from({ length: 4 }, () => values(row)).flat(), [4, 5], values(b), [5, 3]);
      let out!: Tensor;
      expect(countCalls(() => (out = matmul(expand(row, [4, 5]), b))).copies).toBe(1);
      expectClose(out, ref.out, TOL);
      // Batch dims where each side broadcasts the other ([2,1] with [1,3]) have no single batch stride.
      const x = t([2, 1, 3, 4], 11), y = t([1, 3, 4, 2], 12);
      const refXY = refMatmul(values(x), [2, 1, 3, 4], values(y), [1, 3, 4, 2]);
      expect(countCalls(() => (out = matmul(x, y))).copies).toBe(2);
      expectClose(out, refXY.out, TOL);
      gradcheck((u, v) => matmul(expand(u!, [4, 5]), v!), [row, b]);
    });
  });

  it("a batch times a shared matrix is one gemm in forward and in backward, without reductions", () => {
    tidy(() => {
      const x = t([3, 4, 6], 11).requireGrad(), w = t([6, 5], 12).requireGrad();
      let out!: Tensor;
      const fwd = countCalls(() => (out = matmul(x, w)));
      expect(fwd).toEqual({ gemm: [{ m: 12, batch: 1 }], copies: 0 });
      const g = t([3, 4, 5], 13);
      const bwd = countCalls(() => out.backward(g));
      // dX = dY·Wᵀ stacks the batch into 12 rows; dW = Σ_b X_bᵀ·dY_b is one gemm with k = 12.
      expect(bwd.gemm.map((c) => c.batch)).toEqual([1, 1]);
      expect(bwd.copies).toBe(0);
      const ref = refMatmul(
        (() => { const xv = values(x); const tr: number[] = []; for (let p = 0; p < 6; p++) for (let r = 0; r < 12; r++) tr.push(xv[r * 6 + p]!); return tr; })(),
        [6, 12], values(g), [12, 5],
      );
      expectClose(w.grad!, ref.out, TOL);
    });
  });

  it("names the shapes and the fix on bad arguments", () => {
    tidy(() => {
      expect(() => matmul(zeros([2, 3]), zeros([4, 5]))).toThrow(/matmul: \[2, 3\] @ \[4, 5\]: the inner dimensions differ \(3 vs 4\)/);
      expect(() => matmul(zeros([2, 3, 4]), zeros([3, 4, 5]))).toThrow(/matmul: shapes \[2\] and \[3\] cannot be broadcast/);
      expect(() => matmul(zeros([]), zeros([3]))).toThrow(/at least one dimension.*use mul\(\)/);
      expect(() => matmul(zeros([2, 2], { dtype: "int32" }), zeros([2, 2]))).toThrow(/expects float32/);
    });
  });

  it("handles empty dimensions", () => {
    tidy(() => {
      expect(matmul(zeros([0, 3]), zeros([3, 4])).shape).toEqual([0, 4]);
      expect(values(matmul(t([2, 0], 1), t([0, 3], 2)))).toEqual([0, 0, 0, 0, 0, 0]);
    });
  });
});

describe("linear and conv1dLinear", () => {
  /** y = x·W (+ b) in float64, W given as [in, out]. */
  function refAffine(x: number[], rows: number, w: number[], inF: number, outF: number, b: number[] | null): number[] {
    const out: number[] = [];
    for (let r = 0; r < rows; r++) for (let j = 0; j < outF; j++) {
      let acc = b ? b[j]! : 0;
      for (let p = 0; p < inF; p++) acc += x[r * inF + p]! * w[p * outF + j]!;
      out.push(acc);
    }
    return out;
  }

  for (const withBias of [true, false]) {
    it(`linear ${withBias ? "with" : "without"} bias over [2, 3, 7] inputs: reference and gradients`, () => {
      tidy(() => {
        const x = t([2, 3, 7], 21), w = t([5, 7], 22), b = withBias ? t([5], 23) : null;
        const wIO = values(w.transpose(0, 1).contiguous());
        const y = linear(x, w, b);
        expect(y.shape).toEqual([2, 3, 5]);
        expectClose(y, refAffine(values(x), 6, wIO, 7, 5, b && values(b)), TOL);
        if (b) gradcheck((u, v, c) => linear(u!, v!, c!), [x, w, b]);
        else gradcheck((u, v) => linear(u!, v!), [x, w]);
      });
    });

    it(`conv1dLinear ${withBias ? "with" : "without"} bias: reference and gradients`, () => {
      tidy(() => {
        const x = t([4, 6], 31), w = t([6, 3], 32), b = withBias ? t([3], 33) : null;
        expectClose(conv1dLinear(x, w, b), refAffine(values(x), 4, values(w), 6, 3, b && values(b)), TOL);
        if (b) gradcheck((u, v, c) => conv1dLinear(u!, v!, c!), [x, w, b]);
        else gradcheck((u, v) => conv1dLinear(u!, v!), [x, w]);
      });
    });
  }

  // activation "gelu": the GEMM's epilogue (gemmEpilogue) against gelu(x·W + b) in float64, and the
  // same ops unfused (linear, then gelu) to float32 rounding; gradients by finite differences.
  it('activation "gelu": gelu(x·W + b) in one call, float32 and bf16 weights, with and without bias; gradients', () => {
    const geluRef = (v: number) => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3)));
    const bf = (v: number[]) => v.map((x) => bf16BitsToF32(f32ToBf16Bits(x)));
    tidy(() => {
      for (const outIn of [true, false]) for (const withBias of [true, false]) for (const dtype of ["float32", "bfloat16"] as const) {
        const x = t([2, 5, 9], 71), w32 = outIn ? t([11, 9], 72) : t([9, 11], 72), b = withBias ? t([11], 73) : null;
        const w = w32.to("cpu", dtype);
        const f = outIn ? linear : conv1dLinear;
        const y = f(x, w, b, { activation: "gelu" });
        const wIO = outIn ? values(w.to("cpu", "float32").transpose(0, 1).contiguous()) : values(w.to("cpu", "float32"));
        const xs = dtype === "bfloat16" ? bf(values(x)) : values(x);
        expectClose(y, refAffine(xs, 10, wIO, 9, 11, b && values(b)).map(geluRef), TOL);
        expectClose(y, values(gelu(f(x, w, b))), 1e-6);
      }
      const x = t([3, 4], 74), w = t([4, 5], 75), b = t([5], 76);
      gradcheck((u, v, c) => conv1dLinear(u!, v!, c!, { activation: "gelu" }), [x, w, b]);
      gradcheck((u, v) => linear(u!, v!, null, { activation: "gelu" }), [x, t([6, 4], 77)]);
      // bf16 weights are frozen (and x is rounded to bf16, which finite differences cannot see
      // through): the gradient of x as the unfused ops give it, also at a size whose gelu gradient
      // spans several of the CPU kernel's chunks and both threads
      for (const [rows, k, n, seed] of [[3, 4, 5, 78], [40, 16, 1100, 81]]) {
        const xs = rows === 3 ? x : t([rows, k], seed + 1), wb = t([k, n], seed).to("cpu", "bfloat16");
        const bias = rows === 3 ? b : t([n], seed + 2), g = t([rows, n], seed + 3);
        const gradX = (fused: boolean) => {
          const u = xs.detach().requireGrad();
          (fused ? conv1dLinear(u, wb, bias, { activation: "gelu" }) : gelu(conv1dLinear(u, wb, bias))).backward(g);
          return values(u.grad!);
        };
        expectClose(tensor(gradX(true)), gradX(false), 1e-6);
      }
      expect(() => linear(x, t([2, 4], 79), null, { activation: "relu" as "gelu" })).toThrow(/linear: activation must be "gelu" or null, got "relu"/);
    });
  });

  it("takes a 1-D input and transposed inputs", () => {
    tidy(() => {
      const x = t([7], 41), w = t([3, 7], 42), b = t([3], 43);
      const y = linear(x, w, b);
      expect(y.shape).toEqual([3]);
      expectClose(y, refAffine(values(x), 1, values(w.transpose(0, 1).contiguous()), 7, 3, values(b)), TOL);
      const xt = t([7, 5], 44); // x = xtᵀ: rows at stride 1, read with a trans flag, not copied
      const refT = refAffine(values(xt.transpose(0, 1).contiguous()), 5, values(w.transpose(0, 1).contiguous()), 7, 3, null);
      let yt!: Tensor;
      expect(countCalls(() => (yt = linear(xt.transpose(0, 1), w))).copies).toBe(0);
      expectClose(yt, refT, TOL);
      gradcheck((u, v) => linear(u!.transpose(0, 1), v!), [xt, w]);
    });
  });

  // A bfloat16 weight is multiplied as autocast does: x (and dY in the backward) rounded to bf16,
  // float32 products and sums. The reference rounds the same inputs and sums in float64; the CPU
  // widens to float32 exactly, so only float32 summation separates them (1e-5 relative).
  it("bfloat16 weights: x and dY rounded to bf16, float32 output and dX; frozen; bias in float32", () => {
    const bf = (v: number[]) => v.map((x) => bf16BitsToF32(f32ToBf16Bits(x)));
    tidy(() => {
      for (const outIn of [true, false]) {
        const x = t([3, 5, 33], 61), w32 = outIn ? t([17, 33], 62) : t([33, 17], 62), b = t([17], 63);
        const w = w32.to("cpu", "bfloat16");
        x.requiresGrad = true;
        const y = outIn ? linear(x, w, b) : conv1dLinear(x, w, b);
        expect(y.dtype).toBe("float32");
        const wIO = outIn ? values(w.to("cpu", "float32").transpose(0, 1).contiguous()) : values(w.to("cpu", "float32"));
        expectClose(y, refAffine(bf(values(x)), 15, wIO, 33, 17, values(b)), 1e-5);
        const g = t([3, 5, 17], 64);
        y.backward(g);
        // dX = bf16(dY)·Wᵀ
        const gx: number[] = [], gv = bf(values(g));
        for (let r = 0; r < 15; r++) for (let p = 0; p < 33; p++) {
          let acc = 0;
          for (let j = 0; j < 17; j++) acc += gv[r * 17 + j]! * wIO[p * 17 + j]!;
          gx.push(acc);
        }
        expectClose(x.grad!, gx, 1e-5);
        expect(w.grad).toBeNull();
        x.grad = null;
      }
      const w = t([4, 6], 65).to("cpu", "bfloat16");
      w.requiresGrad = true;
      expect(() => linear(t([2, 6], 66), w)).toThrow(/weight \[4, 6\] is bfloat16 and requires grad; bfloat16 weights are frozen/);
    });
  });

  // gemm rounds a float32 x (and dY) to bf16 as it reads them, with no bf16 copy: the results must be
  // those of inputs rounded beforehand, bit for bit (rounding twice changes nothing), through the
  // plain GEMM and the epilogue one (bias, gelu), x as stored and transposed, and one row (GEMV).
  it("bfloat16 weights: the rounding inside gemm equals rounding x and dY first, bit for bit", () => {
    const round = (v: Tensor) => v.to("cpu", "bfloat16").to("cpu", "float32");
    const bits = (v: Tensor) => Array.from(f32Bits(v));
    tidy(() => {
      for (const outIn of [true, false]) for (const bias of [null, t([17], 93)]) for (const activation of [null, "gelu"] as const) {
        const f = outIn ? linear : conv1dLinear;
        const w = (outIn ? t([17, 33], 92) : t([33, 17], 92)).to("cpu", "bfloat16");
        for (const x of [t([3, 5, 33], 91), t([33, 7], 94).transpose(0, 1), t([33], 95)]) {
          expect(bits(f(x, w, bias, { activation })), `${f.name} bias=${!!bias} ${activation}`).toEqual(bits(f(round(x), w, bias, { activation })));
          if (activation) continue;  // dX = bf16(dY)·Wᵀ: the same bits from a rounded dY
          const g = t([...x.shape.slice(0, -1), 17], 96);
          const gradX = (gy: Tensor) => {
            const u = x.detach().requireGrad();
            f(u, w, bias).backward(gy);
            return bits(u.grad!);
          };
          expect(gradX(g), `${f.name} dX`).toEqual(gradX(round(g)));
        }
      }
    });
  });

  it("a frozen weight gets no gradient and costs no gemm", () => {
    tidy(() => {
      const x = t([3, 4], 51).requireGrad(), w = t([2, 4], 52), b = t([2], 53);
      const y = linear(x, w, b);
      const calls = countCalls(() => y.backward(t([3, 2], 54)));
      expect(w.grad).toBeNull();
      expect(b.grad).toBeNull();
      expect(calls.gemm).toHaveLength(1); // dX only
      expect(x.grad!.shape).toEqual([3, 4]);
      // A frozen input with a trainable weight: dW and db only.
      const x2 = t([3, 4], 55), w2 = t([2, 4], 56).requireGrad(), b2 = t([2], 57).requireGrad();
      const y2 = linear(x2, w2, b2);
      const calls2 = countCalls(() => y2.backward(t([3, 2], 58)));
      expect(calls2.gemm).toHaveLength(2); // dW and the bias column sums
      expect(x2.grad).toBeNull();
    });
  });

  it("explains shape mistakes", () => {
    tidy(() => {
      expect(() => linear(zeros([2, 4]), zeros([4, 3]))).toThrow(/linear: input \[2, 4\] does not end in 3 features.*weight looks transposed/);
      expect(() => conv1dLinear(zeros([2, 4]), zeros([4, 3]), zeros([4]))).toThrow(/bias must have shape \[3\]/);
      expect(() => linear(zeros([2, 4]), zeros([4]))).toThrow(/weight must be 2-D \[out, in\]/);
    });
  });
});

// ---- the CPU GEMM kernel ----------------------------------------------------------------------

interface Case {
  ta: boolean;
  tb: boolean;
  m: number;
  n: number;
  k: number;
  alpha?: number;
  beta?: number;
  batch?: number;
  // Row strides as stored (default: the width) and batch strides (default: packed; 0 broadcasts).
  lda?: number;
  ldb?: number;
  ldc?: number;
  sa?: number;
  sb?: number;
  sc?: number;
  // Element offsets of the first matrix inside its buffer (sub-matrix views).
  offA?: number;
  offB?: number;
  offC?: number;
  nanC?: boolean;  // fill C with NaN (only valid with beta = 0, which must not read C)
  bf16?: boolean;  // A and B in bfloat16 (gemm_bf16), C float32
}

/**
 * float32 values whose low 16 bits (what rounding to bf16 drops) are the cases of round-to-nearest-
 * even: exact, just below half, ties (bit 16 odd or even, random), just above half, all ones (the
 * carry may reach the exponent); every 7th random. With `specials`, one value in 11 is a special:
 * ±0, ±Inf, NaNs (quiet, signaling, negative), the largest float (rounds to Inf), denormals (one
 * rounding up to the smallest normal, a tie, the smallest).
 */
function roundingCases(n: number, specials: boolean): Tensor {
  const SPECIAL = [0x00000000, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000, 0x7f800001, 0xffffffff, 0x7f7fffff, 0xff7fffff,
    0x007fffff, 0x00008000, 0x00018000, 0x80000001, 0x00800000];
  const LOW = [0x0000, 0x7fff, 0x8000, 0x8001, 0xffff];
  const base = new Uint32Array(Float32Array.from(uniform(n).dataSync()).buffer);
  const out = new Uint32Array(Math.max(n, 1));
  for (let i = 0; i < n; i++) {
    if (specials && i % 11 === 5) out[i] = SPECIAL[(i / 11 | 0) % SPECIAL.length]!;
    else out[i] = i % 7 === 6 ? base[i]! : ((base[i]! & 0xffff0000) | LOW[i % LOW.length]!) >>> 0;
  }
  return tensor(new Float32Array(out.buffer));
}

/**
 * gemm_f32_bf16 (A float32, rounded to bf16 as it is read; B bf16) against gemm_bf16 on A cast to
 * bf16 (the cast rounds the same way): C bit for bit, inside and outside the matrices.
 */
function checkRounded(c: Case & { specials?: boolean }): void {
  const { ta, tb, m, n, k } = c;
  const alpha = c.alpha ?? 1, beta = c.beta ?? 0, batch = c.batch ?? 1;
  const [ar, ac] = ta ? [k, m] : [m, k];
  const [br, bc] = tb ? [n, k] : [k, n];
  const lda = c.lda ?? ac, ldb = c.ldb ?? bc, ldc = c.ldc ?? n;
  const sa = c.sa ?? ar * lda, sb = c.sb ?? br * ldb, sc = c.sc ?? m * ldc;
  const offA = c.offA ?? 0, offB = c.offB ?? 0, offC = c.offC ?? 0;
  tidy(() => {
    const A = roundingCases(offA + span(ar, ac, lda, sa, batch), c.specials ?? false), A16 = A.to("cpu", "bfloat16");
    const B = uniform(offB + span(br, bc, ldb, sb, batch)).to("cpu", "bfloat16");
    const cLen = Math.max(offC + span(m, n, ldc, sc, batch), 1);
    const C0 = c.nanC ? full([cLen], NaN) : uniform(cLen);
    const run = (a: Tensor) => {
      const C = C0.clone();
      const at = (x: Tensor, elements: number) => ({ storage: x.storage.native, offset: x.byteOffset + (x.dtype === "bfloat16" ? 2 : 4) * elements });
      native().gemm({
        transA: ta, transB: tb, m, n, k, alpha, a: at(a, offA), lda, strideA: sa, b: at(B, offB), ldb, strideB: sb,
        beta, c: at(C, offC), ldc, strideC: sc, batch, dtypeA: DTYPE_CODE[a.dtype], dtypeB: DTYPE_CODE.bfloat16,
      });
      return f32Bits(C);
    };
    const got = run(A), want = run(A16);
    const label = `gemm f32·bf16 ta=${ta} tb=${tb} m=${m} n=${n} k=${k} alpha=${alpha} beta=${beta} batch=${batch}`;
    let bad = -1;
    for (let i = 0; i < want.length && bad < 0; i++) if (got[i] !== want[i]) bad = i;
    expect(bad, `${label}: element ${bad} is 0x${got[bad]?.toString(16)}, the cast gives 0x${want[bad]?.toString(16)}`).toBe(-1);
  });
}

let seed = 1;
const uniform = (n: number): Tensor => rand([Math.max(n, 1)], { low: -1, high: 1, generator: new Generator(seed++) });

// Elements a batch of `rows × cols` matrices with row stride ld spans (as the binding computes).
const span = (rows: number, cols: number, ld: number, stride: number, batch: number) =>
  rows === 0 || cols === 0 || batch === 0 ? 0 : (batch - 1) * stride + (rows - 1) * ld + cols;

/** Runs native gemm on fresh buffers and checks every element of C against float64. */
function check(c: Case): void {
  const { ta, tb, m, n, k } = c;
  const alpha = c.alpha ?? 1, beta = c.beta ?? 0, batch = c.batch ?? 1;
  const [ar, ac] = ta ? [k, m] : [m, k];  // A as stored
  const [br, bc] = tb ? [n, k] : [k, n];
  const lda = c.lda ?? ac, ldb = c.ldb ?? bc, ldc = c.ldc ?? n;
  const sa = c.sa ?? ar * lda, sb = c.sb ?? br * ldb, sc = c.sc ?? m * ldc;
  const offA = c.offA ?? 0, offB = c.offB ?? 0, offC = c.offC ?? 0;
  tidy(() => {
    const operand = (n: number) => (c.bf16 ? uniform(n).to("cpu", "bfloat16") : uniform(n));
    const A = operand(offA + span(ar, ac, lda, sa, batch));
    const B = operand(offB + span(br, bc, ldb, sb, batch));
    const C = c.nanC ? full([Math.max(offC + span(m, n, ldc, sc, batch), 1)], NaN) : uniform(offC + span(m, n, ldc, sc, batch));
    // The reference reads the bf16 values exactly (dataSync widens them).
    const a = A.dataSync(), b = B.dataSync(), c0 = C.dataSync();
    const at = (t: typeof A, elements: number) => ({ storage: t.storage.native, offset: t.byteOffset + (t.dtype === "bfloat16" ? 2 : 4) * elements });
    native().gemm({
      transA: ta, transB: tb, m, n, k, alpha, a: at(A, offA), lda, strideA: sa, b: at(B, offB), ldb, strideB: sb,
      beta, c: at(C, offC), ldc, strideC: sc, batch, dtypeA: DTYPE_CODE[A.dtype], dtypeB: DTYPE_CODE[B.dtype],
    });
    const got = C.dataSync();
    // Reference: every C element inside a matrix of the batch, and the rest must be untouched.
    const inside = new Uint8Array(got.length);
    const want: number[] = [], have: number[] = [];
    for (let bi = 0; bi < batch; bi++) {
      for (let i = 0; i < m; i++) {
        for (let j = 0; j < n; j++) {
          let acc = 0;
          for (let p = 0; p < k; p++) {
            const av = a[offA + bi * sa + (ta ? p * lda + i : i * lda + p)]!;
            const bv = b[offB + bi * sb + (tb ? j * ldb + p : p * ldb + j)]!;
            acc += av * bv;
          }
          const ci = offC + bi * sc + i * ldc + j;
          inside[ci] = 1;
          want.push(alpha * acc + (beta === 0 ? 0 : beta * c0[ci]!));
          have.push(got[ci]!);
        }
      }
    }
    const err = relError(have, want);
    const label = `gemm${c.bf16 ? " bf16" : ""} ta=${ta} tb=${tb} m=${m} n=${n} k=${k} alpha=${alpha} beta=${beta} batch=${batch}`;
    expect(err, `${label}: relative error ${err}`).toBeLessThanOrEqual(TOL);
    for (let i = 0; i < got.length; i++) {
      if (!inside[i]) expect(Object.is(got[i], c0[i]), `${label}: element ${i} outside C was written`).toBe(true);
    }
  });
}

const TRANSPOSES = [[false, false], [false, true], [true, false], [true, true]] as const;
const SIMD_ORDER = ["scalar", "avx2", "avx512", "avx512bf16"];

describe(`cpu gemm (${info().simd} kernel)`, () => {
  it("dispatches to the level LOWRANK_SIMD asks for", () => {
    const want = process.env.LOWRANK_SIMD;
    if (want) expect(info().simd).toBe(want);
    else expect(SIMD_ORDER).toContain(info().simd);
  });

  // Shapes: single elements, primes, non-multiples of every tile (8×32, 16×16, 6×16, 4×16), k in
  // two cache blocks (k > 256 with m > 512; k > 768 with m ≤ 512, where A is read in place and k
  // blocks are longer), m over several A blocks (m > 2048, small enough to stay on one
  // thread), n over several B blocks (n > 512), wide-and-short (split along n), n = 16 (a LoRA
  // rank, where the 16-wide kernel is chosen) and k = 16.
  const SHAPES: [number, number, number][] = [
    [1, 1, 1], [1, 5, 3], [5, 1, 3], [7, 13, 17], [65, 129, 31], [43, 69, 300], [15, 33, 2],
    [509, 21, 9], [2100, 3, 4], [3, 4133, 5], [6, 300, 40], [256, 16, 96], [37, 16, 300], [96, 256, 16],
    [600, 40, 300], [29, 97, 1601],
  ];
  for (const [ta, tb] of TRANSPOSES) {
    it(`op(A)=${ta ? "Aᵀ" : "A"}, op(B)=${tb ? "Bᵀ" : "B"}: odd shapes, beta=0 overwrites NaN C`, () => {
      for (const [m, n, k] of SHAPES) check({ ta, tb, m, n, k, nanC: true });
    });
    it(`op(A)=${ta ? "Aᵀ" : "A"}, op(B)=${tb ? "Bᵀ" : "B"}: alpha and beta`, () => {
      for (const [m, n, k] of [[7, 13, 17], [43, 69, 300], [29, 70, 11]] as const) {
        check({ ta, tb, m, n, k, alpha: 0.75, beta: -1.5 });
        check({ ta, tb, m, n, k, alpha: -2, beta: 1 });
      }
    });
    it(`op(A)=${ta ? "Aᵀ" : "A"}, op(B)=${tb ? "Bᵀ" : "B"}: sub-matrix views (ld > width, offsets)`, () => {
      const [m, n, k] = [37, 45, 23];
      check({ ta, tb, m, n, k, lda: (ta ? m : k) + 3, ldb: (tb ? k : n) + 7, ldc: n + 5, offA: 2, offB: 9, offC: 4, beta: 0.5 });
      check({ ta, tb, m, n, k, lda: (ta ? m : k) + 64, ldb: (tb ? k : n) + 1, ldc: n + 32, offC: 1, nanC: true });
      // Few rows or columns: the kernel reads B or A in place through the padded strides.
      check({ ta, tb, m: 5, n: 70, k, lda: (ta ? 5 : k) + 3, ldb: (tb ? k : 70) + 9, ldc: 75, offB: 3, beta: 2 });
      check({ ta, tb, m: 70, n: 5, k, lda: (ta ? 70 : k) + 9, ldb: (tb ? k : 5) + 3, ldc: 6, offA: 5, beta: 2 });
    });
  }

  it("batches, with one operand broadcast (batch stride 0) or both, and padded batch strides", () => {
    for (const [ta, tb] of TRANSPOSES) {
      check({ ta, tb, m: 19, n: 35, k: 27, batch: 3 });
      check({ ta, tb, m: 19, n: 35, k: 27, batch: 3, sa: 0, beta: 0.25 });
      check({ ta, tb, m: 19, n: 35, k: 27, batch: 4, sb: 0 });
      check({ ta, tb, m: 9, n: 11, k: 5, batch: 2, sa: 0, sb: 0, nanC: true });
    }
    // Padded batch strides; many tiny matrices (enough work for the threads, which share them out
    // whole); a small batch of big matrices (each split between the threads).
    check({ ta: false, tb: true, m: 8, n: 10, k: 6, batch: 3, sa: 100, sb: 70, sc: 90 });
    check({ ta: false, tb: false, m: 6, n: 10, k: 12, batch: 6000, nanC: true });
    check({ ta: false, tb: true, m: 130, n: 96, k: 200, batch: 2, beta: 1 });
  });

  it("products big enough for both threads, split along m and along n", () => {
    for (const [ta, tb] of TRANSPOSES) {
      check({ ta, tb, m: 301, n: 130, k: 120, alpha: 0.5, beta: 0.5 });
      check({ ta, tb, m: 20, n: 701, k: 320, nanC: true });
    }
  });

  // m = 1 (decoding one token) takes the GEMV path (native/cpu/gemv.cc): rows of op(B) streamed
  // four at a time into 1024-column blocks (B as stored), or four dot products at a time (B
  // transposed). Shapes around its edges: n and k off the 16 lanes and the 4-row step, n over
  // several blocks, one thread (n·k < 2^18) and both (the split along n in 16-column lines, uneven
  // when the line count is odd).
  it("m = 1 (GEMV): odd sizes, all transposes, one thread and both", () => {
    for (const [ta, tb] of TRANSPOSES) {
      for (const [n, k] of [[1, 1], [3, 5], [17, 33], [16, 16], [31, 7], [1025, 19], [2049, 6]] as const) {
        check({ ta, tb, m: 1, n, k, nanC: true });
      }
      for (const [n, k] of [[769, 341], [2304, 115], [4097, 67], [50, 5243]] as const) {
        check({ ta, tb, m: 1, n, k, nanC: true });
        check({ ta, tb, m: 1, n, k, alpha: 0.75, beta: -1.5 });
      }
      // Padded strides and offsets, and batches (one operand broadcast).
      check({ ta, tb, m: 1, n: 45, k: 23, lda: ta ? 4 : 30, ldb: (tb ? 23 : 45) + 7, ldc: 50, offA: 2, offB: 9, offC: 4, beta: 0.5 });
      check({ ta, tb, m: 1, n: 1030, k: 300, ldb: (tb ? 300 : 1030) + 3, offB: 5, nanC: true });
      check({ ta, tb, m: 1, n: 35, k: 27, batch: 3, sa: 0, beta: 0.25 });
      check({ ta, tb, m: 1, n: 600, k: 500, batch: 2, sb: 0, nanC: true });
    }
  });

  // gemm_bf16: bf16 A and B (a frozen bf16 weight and x rounded to bf16), float32 C. At avx512bf16
  // the GEMM packs both into bf16 pairs along k for vdpbf16ps micro-kernels (matmul_avx512.cc);
  // below it, its packing widens each panel to float32 (matmul*.cc); m = 1 reads bf16 in gemv.cc
  // (at avx512bf16 with vdpbf16ps: pairs along k, B's rows interleaved in registers when B is as
  // stored). The reference multiplies the same bf16 values in float64: products of bf16 values are
  // exact in float32 and vdpbf16ps rounds once per product added, as an FMA chain does, so only
  // float32 summation (in another order) separates them, and the tolerance is float32's (1e-5).
  it("bfloat16 operands: odd shapes, all transposes, alpha and beta, views, batches, both threads", () => {
    for (const [ta, tb] of TRANSPOSES) {
      for (const [m, n, k] of SHAPES) check({ ta, tb, m, n, k, nanC: true, bf16: true });
      check({ ta, tb, m: 43, n: 69, k: 300, alpha: 0.75, beta: -1.5, bf16: true });
      check({ ta, tb, m: 37, n: 45, k: 23, lda: (ta ? 37 : 23) + 3, ldb: (tb ? 23 : 45) + 7, ldc: 50, offA: 1, offB: 9, offC: 4, beta: 0.5, bf16: true });
      check({ ta, tb, m: 19, n: 35, k: 27, batch: 3, sa: 0, beta: 0.25, bf16: true });
      check({ ta, tb, m: 301, n: 130, k: 120, alpha: 0.5, beta: 0.5, bf16: true });
      check({ ta, tb, m: 20, n: 701, k: 320, nanC: true, bf16: true });
    }
  });

  // Edges of the bf16-pair packing and tiles: every m and k of {1, 2, 3, 17, 31, 33, 65, 257} (k
  // odd: the last pair half zero; k = 1: one half pair; m and n off the 8×32 and 16×16 tiles),
  // each with n cycling through the same sizes; alpha/beta and batches on every fourth shape; k
  // blocks ending in half a pair (k = 1025 with m > 512, k = 1601 and 3073 with small m).
  it("bfloat16 operands: odd m, n and k mixed, all transposes, alpha and beta, batches, odd k blocks", () => {
    const E = [1, 2, 3, 17, 31, 33, 65, 257];
    for (const [ta, tb] of TRANSPOSES) {
      E.forEach((k, ik) =>
        E.forEach((m, im) => {
          const n = E[(im + 3 * ik + 1) % E.length]!;
          check({ ta, tb, m, n, k, nanC: true, bf16: true });
          if ((im + ik) % 4 === 0) {
            check({ ta, tb, m, n, k, alpha: -0.75, beta: 1.5, bf16: true });
            check({ ta, tb, m, n, k, batch: 2, sb: (im + ik) % 8 === 0 ? 0 : undefined, beta: 0.5, bf16: true });
          }
        }),
      );
      for (const [m, n, k] of [[520, 40, 1025], [29, 97, 1601], [3, 70, 3073]] as const) check({ ta, tb, m, n, k, alpha: 0.5, beta: -1, bf16: true });
    }
  });

  // vdpbf16ps flushes denormal inputs to zero (matmul_avx512.cc), the widening kernels multiply
  // them exactly: this tells which kernel ran for m > 1, and documents the difference. 2^-130 is a
  // bf16 denormal; times 1 it stays one in float32.
  it(`bfloat16 operands: denormals ${info().simd === "avx512bf16" ? "flushed to zero (vdpbf16ps)" : "multiplied exactly"} at m > 1`, () => {
    tidy(() => {
      const tiny = 2 ** -130;
      const A = tensor([tiny, tiny, tiny, tiny], { shape: [4] }).to("cpu", "bfloat16");
      const B = tensor([1, 1, 1, 1], { shape: [4] }).to("cpu", "bfloat16");
      const C = zeros([4]);
      const at = (x: Tensor) => ({ storage: x.storage.native, offset: x.byteOffset });
      native().gemm({
        transA: false, transB: false, m: 2, n: 2, k: 2, alpha: 1, a: at(A), lda: 2, strideA: 4, b: at(B), ldb: 2, strideB: 4,
        beta: 0, c: at(C), ldc: 2, strideC: 4, batch: 1, dtypeA: DTYPE_CODE.bfloat16, dtypeB: DTYPE_CODE.bfloat16,
      });
      const want = info().simd === "avx512bf16" ? 0 : 2 * tiny;
      expect(Array.from(C.dataSync())).toEqual([want, want, want, want]);
    });
  });

  // Edges of the bf16 GEMV kernels: k odd (a row pair or a k pair half zero), k off the 32-wide
  // pairs and the 4-row step, n off 16 and 32 lanes and over the 4096-column block, odd element
  // offsets (loads not 4-byte aligned), one thread and both.
  it("bfloat16 operands, m = 1 (GEMV): odd sizes, all transposes, one thread and both", () => {
    for (const [ta, tb] of TRANSPOSES) {
      for (const [n, k] of [[1, 1], [3, 5], [17, 33], [33, 7], [31, 2], [64, 65], [47, 3], [1025, 19], [2049, 6], [769, 341], [4097, 67], [50, 5243]] as const) {
        check({ ta, tb, m: 1, n, k, nanC: true, bf16: true });
      }
      check({ ta, tb, m: 1, n: 2304, k: 115, alpha: 0.75, beta: -1.5, bf16: true });
      check({ ta, tb, m: 1, n: 45, k: 23, lda: ta ? 4 : 30, ldb: (tb ? 23 : 45) + 7, ldc: 50, offA: 3, offB: 9, offC: 4, beta: 0.5, bf16: true });
      check({ ta, tb, m: 1, n: 1030, k: 300, ldb: (tb ? 300 : 1030) + 3, offB: 5, nanC: true, bf16: true });
      check({ ta, tb, m: 1, n: 600, k: 500, batch: 2, sb: 0, nanC: true, bf16: true });
    }
  });

  // gemm_f32_bf16: A float32, rounded to bf16 while it is packed (matmul*.cc) or gathered (gemv.cc,
  // m = 1), B bf16. Every m, n, k of {1, 2, 3, 17, 33, 65, 257} appears with the others (n cycles
  // through them for each m, k); then views, batches, both threads, k blocks ending in half a pair,
  // the GEMV's edges, and NaN, Inf and denormal inputs.
  it("float32 A rounded to bf16 times bfloat16 B: bit for bit the product of a cast A, all transposes", () => {
    const E = [1, 2, 3, 17, 33, 65, 257];
    for (const [ta, tb] of TRANSPOSES) {
      E.forEach((k, ik) =>
        E.forEach((m, im) => {
          for (const n of [E[(im + 2 * ik) % E.length]!, E[(im + 2 * ik + 3) % E.length]!]) checkRounded({ ta, tb, m, n, k, nanC: true });
          if ((im + ik) % 3 === 0) checkRounded({ ta, tb, m, n: E[(ik + 1) % E.length]!, k, alpha: -0.75, beta: 1.5 });
        }),
      );
      checkRounded({ ta, tb, m: 37, n: 45, k: 23, lda: (ta ? 37 : 23) + 3, ldb: (tb ? 23 : 45) + 7, ldc: 50, offA: 1, offB: 9, offC: 4, beta: 0.5 });
      checkRounded({ ta, tb, m: 19, n: 35, k: 27, batch: 3, beta: 0.25 });
      checkRounded({ ta, tb, m: 19, n: 35, k: 27, batch: 3, sa: 0, nanC: true });
      checkRounded({ ta, tb, m: 19, n: 35, k: 27, batch: 2, sb: 0, nanC: true });
      checkRounded({ ta, tb, m: 301, n: 130, k: 120, alpha: 0.5, beta: 0.5 });
      checkRounded({ ta, tb, m: 20, n: 701, k: 320, nanC: true });
      for (const [m, n, k] of [[520, 40, 1025], [29, 97, 1601], [3, 70, 3073]] as const) checkRounded({ ta, tb, m, n, k, nanC: true });
      for (const [n, k] of [[1, 1], [33, 7], [64, 65], [1025, 19], [769, 341], [4097, 67]] as const) checkRounded({ ta, tb, m: 1, n, k, nanC: true });
      checkRounded({ ta, tb, m: 1, n: 45, k: 23, lda: ta ? 4 : 30, ldb: (tb ? 23 : 45) + 7, ldc: 50, offA: 3, offB: 9, offC: 4, beta: 0.5 });
      checkRounded({ ta, tb, m: 1, n: 600, k: 500, batch: 2, sb: 0, nanC: true });
      for (const [m, n, k] of [[33, 65, 257], [1, 257, 65], [17, 3, 33]] as const) checkRounded({ ta, tb, m, n, k, nanC: true, specials: true });
    }
  });

  it("k = 0 and alpha = 0 scale C by beta without reading A and B; beta = 0 writes zeros", () => {
    for (const [ta, tb] of TRANSPOSES) {
      check({ ta, tb, m: 9, n: 7, k: 0, beta: 0, nanC: true });
      check({ ta, tb, m: 9, n: 7, k: 0, beta: 2.5 });
      check({ ta, tb, m: 9, n: 7, k: 5, alpha: 0, beta: -0.5 });
    }
  });

  it("empty m, n or batch leaves C untouched", () => {
    check({ ta: false, tb: false, m: 0, n: 5, k: 3 });
    check({ ta: false, tb: false, m: 5, n: 0, k: 3 });
    check({ ta: true, tb: true, m: 5, n: 4, k: 3, batch: 0 });
  });

  // Only the parent run spawns the other levels (children have LOWRANK_SIMD set): every level
  // below this host's (avx512 = AVX-512 without its BF16 instructions).
  const levels = SIMD_ORDER.slice(0, SIMD_ORDER.indexOf(info().simd));
  // The children run only this describe block (-t), not the op tests of this file.
  it.skipIf(process.env.LOWRANK_SIMD !== undefined)(`passes at every lower SIMD level (${levels.join(", ")})`, () => {
    const self = fileURLToPath(import.meta.url);
    const vitest = join(dirname(createRequire(import.meta.url).resolve("vitest/package.json")), "vitest.mjs");
    for (const level of levels) {
      const r = spawnSync(process.execPath, [vitest, "run", "--reporter=verbose", "--dir", dirname(self), "-t", "^cpu gemm ", self], {
        env: { ...process.env, LOWRANK_SIMD: level, NO_COLOR: "1" },
        encoding: "utf8",
      });
      expect(r.status, `LOWRANK_SIMD=${level}:\n${r.stdout}\n${r.stderr}`).toBe(0);
      expect(r.stdout).toContain(`cpu gemm (${level} kernel)`);
    }
  }, 360_000); // one child vitest run per level, each ~40 s on 2 busy cores
});
