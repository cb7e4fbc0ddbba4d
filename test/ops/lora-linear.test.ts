// loraLinear, the one-GEMM LoRA of a frozen bf16 weight (lib/ops/lora.ts), on the CPU (its twin on
// CUDA: test/gpu/twins.test.ts), against a float64 reference of the same arithmetic:
//   y  = bf16(x)·W + bf16(b) + bf16(s·u)·bf16(B)ᵀ,   u = drop(x)·Aᵀ
//   gx = bf16(g)·Wᵀ + bf16(s·v)·bf16(A)      (dropout: bf16(g)·Wᵀ + s·(v·A) ⊙ mask/(1-p)),  v = g·B
//   gA = s·vᵀ·drop(bf16(x)),  gB = s·bf16(g)ᵀ·u
// The op rounds its GEMM operands to bf16 (as autocast does), so finite differences of it are steps
// of a staircase and say nothing; the rounding is reproduced in the reference instead, and the
// product of the rounded values is checked in float64. Tolerance 1e-5 relative L2 (float32 sums of
// up to a few hundred terms), except where s·u and s·v are rounded to bf16: the op's float32 u
// may sit on the other side of a rounding boundary than the reference's float64 u, moving that
// term by one bf16 ulp (2^-8 relative) in rare elements; 2e-4 covers a few such flips.
import { describe, expect, it } from "vitest";
import { Generator, tensor, tidy } from "../../lib/index.js";
import { AugmentedWeight, loraDelta, loraLinear, loraMerge } from "../../lib/ops/lora.js";
import { conv1dLinear, linear } from "../../lib/ops/matmul.js";
import { bf16BitsToF32, f32ToBf16Bits } from "../../lib/tensor/dtype.js";
import { expectClose, randomValues } from "../helpers.js";
import { philoxKeep } from "./reference.js";

const bf = (v: number) => bf16BitsToF32(f32ToBf16Bits(v));
const f32 = (v: number) => Math.fround(v);
const t = (shape: number[], seed: number, scale = 1) => tensor(randomValues(shape.reduce((a, b) => a * b, 1), seed).map((v) => v * scale), { shape });

interface Case { N: number; k: number; d: number; r: number; transposed: boolean; bias: boolean; p: number }

function run(c: Case) {
  const { N, k, d, r, transposed, bias, p } = c;
  const s = 1.75;
  const W = t(transposed ? [k, d] : [d, k], 1, 0.5).to("cpu", "bfloat16");
  const b = bias ? t([d], 2) : null;
  const x = t([N, k], 3).requireGrad(), A = t([r, k], 4, 0.5).requireGrad(), B = t([d, r], 5, 0.5).requireGrad(), g = t([N, d], 6);
  const Wv = Array.from(W.dataSync()); // bf16 values, widened
  const aug = new AugmentedWeight(W, AugmentedWeight.padFor(r), transposed);
  const draw = new Generator(21).next(N * k);
  const y = loraLinear(x, aug, A, B, b, { scaling: s, dropout: p, generator: new Generator(21) });
  y.backward(g);
  const w = (i: number, o: number) => (transposed ? Wv[i * d + o]! : Wv[o * k + i]!); // W as [in, out]

  const X = Array.from(x.dataSync()), Av = Array.from(A.dataSync()), Bv = Array.from(B.dataSync()), G = Array.from(g.dataSync());
  const bv = b ? Array.from(b.dataSync()) : null;
  const mult = (n: number, c2: number) => (p === 0 ? 1 : philoxKeep(draw.seed, draw.offset, BigInt(n * k + c2), p) ? f32(1 / (1 - p)) : 0);
  const yRef: number[] = [], gxRef: number[] = [], gARef = new Array<number>(r * k).fill(0), gBRef = new Array<number>(d * r).fill(0);
  for (let n = 0; n < N; n++) {
    const u = Array.from({ length: r }, (_, j) => X.slice(n * k, n * k + k).reduce((acc, xv, c2) => acc + f32(xv * mult(n, c2)) * Av[j * k + c2]!, 0));
    const v = Array.from({ length: r }, (_, j) => G.slice(n * d, n * d + d).reduce((acc, gv, o) => acc + gv * Bv[o * r + j]!, 0));
    for (let o = 0; o < d; o++) {
      let acc = bv ? bf(bv[o]!) : 0;
      for (let i = 0; i < k; i++) acc += bf(X[n * k + i]!) * w(i, o);
      for (let j = 0; j < r; j++) acc += bf(s * u[j]!) * bf(Bv[o * r + j]!);
      yRef.push(acc);
      for (let j = 0; j < r; j++) gBRef[o * r + j]! += s * bf(G[n * d + o]!) * u[j]!;
    }
    for (let i = 0; i < k; i++) {
      let acc = 0;
      for (let o = 0; o < d; o++) acc += bf(G[n * d + o]!) * w(i, o);
      for (let j = 0; j < r; j++) acc += p === 0 ? bf(s * v[j]!) * bf(Av[j * k + i]!) : s * v[j]! * Av[j * k + i]! * mult(n, i);
      gxRef.push(acc);
      for (let j = 0; j < r; j++) gARef[j * k + i]! += s * v[j]! * f32(bf(X[n * k + i]!) * mult(n, i));
    }
  }
  return { y, x, A, B, yRef, gxRef, gARef, gBRef, aug, W };
}

describe("loraLinear: one GEMM for the frozen bf16 layer, its bias and the adapter (CPU)", () => {
  const cases: Case[] = [
    { N: 5, k: 17, d: 13, r: 3, transposed: true, bias: true, p: 0 },
    { N: 5, k: 17, d: 13, r: 3, transposed: false, bias: false, p: 0 },
    { N: 9, k: 40, d: 24, r: 17, transposed: true, bias: false, p: 0.2 },
    { N: 7, k: 33, d: 19, r: 8, transposed: false, bias: true, p: 0.3 },
    { N: 1, k: 1, d: 1, r: 1, transposed: true, bias: true, p: 0 },
    { N: 6, k: 70, d: 30, r: 64, transposed: false, bias: true, p: 0.1 },
    { N: 4, k: 33, d: 130, r: 128, transposed: true, bias: true, p: 0 },
  ];
  for (const c of cases) {
    it(`matches float64 of the same roundings: N=${c.N} k=${c.k} d=${c.d} r=${c.r} ${c.transposed ? "Conv1D" : "Linear"}${c.bias ? " +bias" : ""} dropout ${c.p}`, () => {
      tidy(() => {
        const o = run(c);
        expect(o.y.shape).toEqual([c.N, c.d]);
        expectClose(o.y, o.yRef, 2e-4);
        expectClose(o.x.grad!, o.gxRef, c.p === 0 ? 2e-4 : 1e-5);
        expectClose(o.A.grad!, o.gARef, 1e-5);
        expectClose(o.B.grad!, o.gBRef, 1e-5);
        o.aug.dispose();
        o.W.dispose();
      });
    });
  }

  it("agrees with the base layer plus loraDelta within bf16 rounding, for batched [B, T, k] inputs", () => {
    tidy(() => {
      for (const transposed of [true, false]) {
        const [k, d, r] = [24, 16, 4];
        const W = t(transposed ? [k, d] : [d, k], 7).to("cpu", "bfloat16"), Wc = W.to("cpu", "bfloat16");
        const b = t([d], 8), x = t([2, 3, k], 9), A = t([r, k], 10), B = t([d, r], 11);
        const aug = new AugmentedWeight(W, AugmentedWeight.padFor(r), transposed);
        const fused = loraLinear(x, aug, A, B, b, { scaling: 2, dropout: 0.1, generator: new Generator(5) });
        const base = transposed ? conv1dLinear(x, Wc, b) : linear(x, Wc, b);
        const plain = loraDelta(base, x, A, B, { scaling: 2, dropout: 0.1, generator: new Generator(5) });
        expect(fused.shape).toEqual([2, 3, d]);
        expectClose(fused, plain.dataSync(), 1e-2); // the fused GEMM rounds s·u, B and b to bf16 (2^-8 relative)
        aug.dispose();
      }
    });
  });

  it("keeps the weight in the buffer's corner: the same values, merges and unmerges in place", () => {
    tidy(() => {
      const [k, d, r] = [12, 20, 5];
      const W = t([k, d], 12).to("cpu", "bfloat16");
      const before = Array.from(W.dataSync());
      const aug = new AugmentedWeight(W, AugmentedWeight.padFor(r), true);
      expect(aug.holds(W)).toBe(true);
      expect(W.isContiguous()).toBe(false);
      expect(W.strides).toEqual([d + aug.pad, 1]);
      expect(Array.from(W.dataSync())).toEqual(before);
      const A = t([r, k], 13), B = t([d, r], 14);
      const plain = tensor(before, { shape: [k, d] }).to("cpu", "bfloat16");
      loraMerge(W, A, B, 0.5, true);
      loraMerge(plain, A, B, 0.5, true);
      expect(Array.from(W.dataSync())).toEqual(Array.from(plain.dataSync())); // the same element-wise arithmetic
      // the padding is untouched by the merge
      const pad = Array.from(aug.buffer.slice(0, k, k + aug.pad).dataSync());
      expect(pad.every((v) => v === 0)).toBe(true);
      aug.dispose();
      W.dispose();
    });
  });

  it("names the problem on bad input", () => {
    tidy(() => {
      const W = t([8, 6], 15).to("cpu", "bfloat16");
      const aug = new AugmentedWeight(W, AugmentedWeight.padFor(3), true);
      const x = t([2, 8], 16);
      expect(() => loraLinear(x, aug, t([9, 8], 17), t([6, 9], 18), null, { scaling: 1 })).toThrow(/rank 9 does not fit the augmented weight's padding of 8/);
      expect(() => loraLinear(t([2, 7], 16), aug, t([3, 8], 17), t([6, 3], 18), null, { scaling: 1 })).toThrow(/does not end in the layer's 8 input features/);
      expect(() => loraLinear(x, aug, t([3, 8], 17), t([6, 3], 18), t([6], 19).requireGrad(), { scaling: 1 })).toThrow(/bias must be frozen/);
      expect(() => new AugmentedWeight(t([8, 6], 20), 8, true)).toThrow(/bfloat16 weight expected/);
      aug.dispose();
      W.dispose();
    });
  });
});
