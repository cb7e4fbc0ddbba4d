// scaledDotProductAttention (lib/ops/attention.ts; kernels native/cpu/attention.cc) against float64,
// finite differences and PyTorch's numbers (test/fixtures/ops).
// Tolerances: forward 1e-5 relative L2. The kernels round inputs, partial sums and exp (the SIMD
// exp is within ~2 ulp) to float32, so errors sit around 1e-7..1e-6 of the row's scale; 1e-5
// leaves room for rows of ~1000 terms. Analytic gradients 1e-4 (they subtract nearly equal
// float32 sums, e.g. P·(dP - rowsum)). gradcheck's float32 central differences agree to ~1e-3.
// precision "bfloat16" on the CPU rounds q, k, v (and dout) to bf16, and the weights E, drop(P)
// and dS for their products, with float32 sums: the same tolerances against float64 that rounds
// the same values (attentionRef's `round`; measured 5e-8..9e-8 relative), while leaving the
// weights unrounded moves the results by ~1e-3. Its CUDA twin (bf16 tensor cores) is checked
// against it in test/gpu/attention-bf16.test.ts.
import { describe, expect, it } from "vitest";
import { expand, Generator, Tensor, tensor, tidy, zeros } from "../../lib/index.js";
import { expectClose, gradcheck, relError } from "../helpers.js";
import { bf16BitsToF32, f32ToBf16Bits } from "../../lib/tensor/dtype.js";
import { scaledDotProductAttention } from "../../lib/ops/attention.js";
import { arr, t, attentionRef, type AttnCase } from "./reference.js";
import { flat, fromJson, torchReference } from "./torch-reference.js";

// ---- attention ------------------------------------------------------------------------------------

describe("scaledDotProductAttention", () => {
  const run = (c: AttnCase, seed: number, check: "forward" | "grad" | "gradcheck") =>
    tidy(() => {
      const q = t([c.B, c.H, c.Tq, c.D], seed, 1.5), k = t([c.B, c.H, c.Tk, c.D], seed + 1, 1.5), v = t([c.B, c.H, c.Tk, c.D], seed + 2);
      const attnMask = c.keep ? tensor(new Int32Array(c.keep), { shape: [c.B, c.Tk] }) : null;
      // A fresh generator at the same state for every call: finite differences see one mask.
      const generator = () => new Generator(c.dropout?.seed ?? 0).setState({ seed: String(c.dropout?.seed ?? 0), offset: String(c.dropout?.offset ?? 0) });
      const opts = { causal: c.causal, attnMask, scale: c.scale, dropout: c.dropout?.p, window: c.window, get generator() { return generator(); } };
      if (check === "gradcheck") return gradcheck((a, b, d) => scaledDotProductAttention(a!, b!, d!, opts), [q, k, v]);
      const gout = t([c.B, c.H, c.Tq, c.D], seed + 3);
      const ref = attentionRef(c, arr(q), arr(k), arr(v), arr(gout));
      [q, k, v].forEach((x) => (x.requiresGrad = true));
      const out = scaledDotProductAttention(q, k, v, opts);
      expect(out.shape).toEqual([c.B, c.H, c.Tq, c.D]);
      expectClose(out, ref.out, 1e-5);
      if (check === "forward") return;
      out.backward(gout);
      expectClose(q.grad!, ref.dq, 1e-4);
      expectClose(k.grad!, ref.dk, 1e-4);
      expectClose(v.grad!, ref.dv, 1e-4);
    });

  it("forward and backward match float64: causal, non-causal, T=1, odd D, Tq < Tk, several query blocks", () => {
    const cases: AttnCase[] = [
      { B: 1, H: 1, Tq: 1, Tk: 1, D: 1, causal: true },
      { B: 2, H: 3, Tq: 5, Tk: 5, D: 4, causal: true },
      { B: 1, H: 2, Tq: 7, Tk: 7, D: 3, causal: false },
      { B: 2, H: 2, Tq: 3, Tk: 8, D: 5, causal: true }, // KV cache: queries at positions 5..7
      { B: 1, H: 2, Tq: 1, Tk: 9, D: 13, causal: true }, // one generated token
      { B: 2, H: 2, Tq: 4, Tk: 6, D: 6, causal: false, scale: 0.3 },
      { B: 1, H: 2, Tq: 150, Tk: 150, D: 17, causal: true }, // 3 query blocks of 64
      { B: 1, H: 1, Tq: 70, Tk: 131, D: 8, causal: true },
    ];
    cases.forEach((c, i) => run(c, 50 + 10 * i, "grad"));
  });

  it("dq stays accurate when the scores share a large per-row part and the values a common part", () => {
    // dS = P ∘ (dP - rowsum(P ∘ dP)). Keys with a common part k0 add q_i·k0 to a whole row of
    // scores (softmax ignores it, the logsumexp carries it); values with a common part c make dP_j
    // = dO·v_j ≈ dO·c along the row. P recomputed from the saved logsumexp sums to 1 only within
    // the rounding of that large logsumexp, and the old rowsum(P ∘ dP) passed that error times
    // dO·c into dS: dq was 1.6e-3..2.4e-3 off float64 here, and 1e-2 on a random Qwen2 LoRA
    // against PEFT. rowsum(P ∘ dP) / rowsum(P) cancels the common part whatever P's rounding.
    // What stays (~5e-5) is the float32 rounding of scores of magnitude ~100, as in eager PyTorch.
    for (const [i, c] of ([
      { B: 2, H: 2, Tq: 12, Tk: 12, D: 16, causal: true },
      { B: 1, H: 2, Tq: 90, Tk: 90, D: 8, causal: true, keep: [...new Array(3).fill(0), ...new Array(87).fill(1)] },
      { B: 1, H: 1, Tq: 5, Tk: 9, D: 4, causal: false },
    ] as AttnCase[]).entries()) {
      tidy(() => {
        const seed = 400 + 10 * i;
        const q = t([c.B, c.H, c.Tq, c.D], seed, 2), k = t([c.B, c.H, c.Tk, c.D], seed + 1, 2, 64);
        const v = t([c.B, c.H, c.Tk, c.D], seed + 2, 1, 3), gout = t([c.B, c.H, c.Tq, c.D], seed + 3);
        const ref = attentionRef(c, arr(q), arr(k), arr(v), arr(gout));
        [q, k, v].forEach((x) => (x.requiresGrad = true));
        const attnMask = c.keep ? tensor(new Int32Array(c.keep), { shape: [c.B, c.Tk] }) : null;
        scaledDotProductAttention(q, k, v, { causal: c.causal, attnMask }).backward(gout);
        expectClose(q.grad!, ref.dq, 1e-4);
        expectClose(k.grad!, ref.dk, 1e-4);
        expectClose(v.grad!, ref.dv, 1e-4);
      });
    }
  });

  it("key-padding mask: padded keys get weight 0; a query that sees only padding outputs 0 (PyTorch SDPA), never NaN", () => {
    // Row 0: right padding (last 2 keys). Row 1: left padding (first 3 keys): its queries 0..2 see only padding.
    const keep = [1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1, 1];
    run({ B: 2, H: 2, Tq: 7, Tk: 7, D: 5, causal: true, keep }, 150, "grad");
    run({ B: 2, H: 1, Tq: 7, Tk: 7, D: 3, causal: false, keep }, 160, "grad");
    run({ B: 2, H: 1, Tq: 3, Tk: 7, D: 4, causal: true, keep }, 170, "grad");
    tidy(() => {
      const q = t([2, 1, 7, 3], 180).requireGrad(), k = t([2, 1, 7, 3], 181).requireGrad(), v = t([2, 1, 7, 3], 182).requireGrad();
      const out = scaledDotProductAttention(q, k, v, { attnMask: tensor(new Int32Array(keep), { shape: [2, 7] }) });
      const o = arr(out);
      expect(o.every(Number.isFinite)).toBe(true);
      expect(o.slice(21, 30)).toEqual(new Array(9).fill(0)); // batch row 1, queries 0..2
      out.backward(t([2, 1, 7, 3], 183));
      expect(arr(q.grad!).slice(21, 30)).toEqual(new Array(9).fill(0));
      expect([q, k, v].every((x) => arr(x.grad!).every(Number.isFinite))).toBe(true);
    });
  });

  it("dropout on the weights: Philox mask per (b, h, i, j), recomputed in backward; generator advances by B·H·Tq·Tk", () => {
    const dropout = { p: 0.3, seed: 77n, offset: 5000n };
    run({ B: 2, H: 2, Tq: 6, Tk: 6, D: 5, causal: true, dropout }, 260, "grad");
    run({ B: 1, H: 2, Tq: 70, Tk: 75, D: 4, causal: true, keep: [...new Array(5).fill(0), ...new Array(70).fill(1)], dropout }, 270, "grad");
    run({ B: 2, H: 1, Tq: 3, Tk: 4, D: 3, causal: false, dropout }, 280, "gradcheck");
    tidy(() => {
      const gen = new Generator(1);
      const x = t([2, 3, 4, 5], 290);
      scaledDotProductAttention(x, x, x, { dropout: 0.1, generator: gen });
      expect(gen.offset).toBe(BigInt(2 * 3 * 4 * 4));
      scaledDotProductAttention(x, x, x, { generator: gen }); // no dropout: no counters
      expect(gen.offset).toBe(BigInt(2 * 3 * 4 * 4));
      expect(() => scaledDotProductAttention(x, x, x, { dropout: 1 })).toThrow(/dropout must be in \[0, 1\), got 1/);
    });
  });

  it("sliding window: keys older than the window get weight 0, forward and backward against float64, also with a KV cache", () => {
    const cases: AttnCase[] = [
      { B: 2, H: 3, Tq: 7, Tk: 7, D: 4, causal: true, window: 3 },
      { B: 1, H: 2, Tq: 9, Tk: 9, D: 5, causal: true, window: 1 }, // each query sees only itself
      { B: 1, H: 2, Tq: 2, Tk: 8, D: 3, causal: true, window: 4 }, // KV cache: queries at positions 6, 7
      { B: 1, H: 1, Tq: 5, Tk: 5, D: 4, causal: true, window: 5 }, // window not cutting
      { B: 1, H: 2, Tq: 150, Tk: 150, D: 6, causal: true, window: 70 }, // across query blocks of 64
      // with a padding mask (batch 1 left-padded by 2) and dropout
      { B: 2, H: 2, Tq: 8, Tk: 8, D: 3, causal: true, window: 3, keep: [1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1], dropout: { p: 0.3, seed: 7n, offset: 3n } },
    ];
    cases.forEach((c, i) => run(c, 400 + 10 * i, "grad"));
    run({ B: 1, H: 2, Tq: 5, Tk: 5, D: 3, causal: true, window: 2 }, 450, "gradcheck");
    tidy(() => {
      const q = t([1, 1, 6, 2], 1), k = t([1, 1, 6, 2], 2), v = t([1, 1, 6, 2], 3);
      expect(() => scaledDotProductAttention(q, k, v, { window: 0 })).toThrow(/window must be a positive integer.*got 0/);
      expect(() => scaledDotProductAttention(q, k, v, { causal: false, window: 3 })).toThrow(/sliding window needs causal attention/);
    });
  });

  it("backward matches finite differences", () => {
    run({ B: 1, H: 2, Tq: 5, Tk: 5, D: 3, causal: true }, 200, "gradcheck");
    run({ B: 2, H: 1, Tq: 2, Tk: 4, D: 3, causal: true }, 210, "gradcheck");
    run({ B: 1, H: 1, Tq: 3, Tk: 4, D: 2, causal: false }, 220, "gradcheck");
    run({ B: 2, H: 1, Tq: 4, Tk: 4, D: 2, causal: true, keep: [1, 1, 1, 0, 0, 0, 1, 1] }, 230, "gradcheck");
  });

  it("reads q, k, v as strided views into a fused qkv buffer and returns heads interleaved", () => {
    tidy(() => {
      const [B, T, H, D] = [2, 6, 3, 4], C = H * D;
      const qkv = t([B, T, 3 * C], 250);
      // Head h of q is qkv[b, t, h*D : (h+1)*D]: strides (T*3C, D, 3C, 1), as GPT-2's c_attn output is laid out.
      const head = (i: number) => new Tensor(qkv.storage.retain(), [B, H, T, D], "float32", [T * 3 * C, D, 3 * C, 1], i * C).requireGrad();
      const [q, k, v] = [head(0), head(1), head(2)];
      const g = t([B, H, T, D], 251);
      const ref = attentionRef({ B, H, Tq: T, Tk: T, D, causal: true }, arr(q), arr(k), arr(v), arr(g));
      const out = scaledDotProductAttention(q, k, v);
      expectClose(out, ref.out, 1e-5);
      expect(out.transpose(1, 2).isContiguous()).toBe(true); // merging heads to [B, T, C] is a free view
      out.backward(g);
      expectClose(q.grad!, ref.dq, 1e-4);
      expectClose(k.grad!, ref.dk, 1e-4);
      expectClose(v.grad!, ref.dv, 1e-4);
      // The same heads as slices of a leaf qkv (GPT-2's path): dq, dk, dv are written in place into
      // one buffer laid out as qkv, which becomes qkv's gradient (lib/autograd/engine.ts piecesInPlace).
      const x = qkv.detach().requireGrad();
      const s = (i: number) => x.slice(2, i * C, (i + 1) * C).reshape(B, T, H, D).permute(0, 2, 1, 3);
      scaledDotProductAttention(s(0), s(1), s(2)).backward(g);
      const want = new Float64Array(B * T * 3 * C);
      [ref.dq, ref.dk, ref.dv].forEach((d, i) => {
        for (let b = 0; b < B; b++) for (let h = 0; h < H; h++) for (let r = 0; r < T; r++) for (let e = 0; e < D; e++) {
          want[((b * T + r) * 3 + i) * C + h * D + e] = d[((b * H + h) * T + r) * D + e]!;
        }
      });
      expectClose(x.grad!, Array.from(want), 1e-4);
      const [b1, t3] = [1, 3]; // through slice/reshape/permute, with a smaller batch for finite differences
      gradcheck((x) => {
        const s = (i: number) => x!.slice(2, i * C, (i + 1) * C).reshape(b1, t3, H, D).permute(0, 2, 1, 3);
        return scaledDotProductAttention(s(0), s(1), s(2)).transpose(1, 2).reshape(b1, t3, C);
      }, [t([b1, t3, 3 * C], 252)]);
    });
  });

  it('precision "bfloat16": q, k, v, dout and the weights E, P, dS rounded to bf16 for their products, float32 sums', () => {
    const round = (x: number) => bf16BitsToF32(f32ToBf16Bits(x));
    const bf16 = (xs: number[]) => xs.map(round);
    const cases: AttnCase[] = [
      { B: 2, H: 2, Tq: 9, Tk: 9, D: 8, causal: true },
      { B: 1, H: 2, Tq: 3, Tk: 11, D: 16, causal: true }, // KV cache
      { B: 2, H: 1, Tq: 6, Tk: 6, D: 5, causal: false, keep: [1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1], dropout: { p: 0.25, seed: 9n, offset: 40n } },
      // 16 queries or more: the bf16 GEMMs on bf16 copies (native/cpu/attention.cc)
      { B: 2, H: 2, Tq: 70, Tk: 70, D: 4, causal: true, window: 20, keep: [...new Array(70).fill(1), 0, 0, 0, ...new Array(67).fill(1)] },
      { B: 1, H: 2, Tq: 80, Tk: 90, D: 64, causal: true, dropout: { p: 0.1, seed: 5n, offset: 7n } },
      { B: 1, H: 1, Tq: 20, Tk: 20, D: 32, causal: false },
    ];
    cases.forEach((c, n) =>
      tidy(() => {
        const seed = 600 + 10 * n;
        const q = t([c.B, c.H, c.Tq, c.D], seed, 1.5), k = t([c.B, c.H, c.Tk, c.D], seed + 1, 1.5), v = t([c.B, c.H, c.Tk, c.D], seed + 2);
        const gout = t([c.B, c.H, c.Tq, c.D], seed + 3);
        const attnMask = c.keep ? tensor(new Int32Array(c.keep), { shape: [c.B, c.Tk] }) : null;
        const generator = () => new Generator(0).setState({ seed: String(c.dropout?.seed ?? 0), offset: String(c.dropout?.offset ?? 0) });
        const opts = { causal: c.causal, attnMask, dropout: c.dropout?.p, window: c.window };
        const [qr, kr, vr, gr] = [q, k, v, gout].map((x) => bf16(arr(x))) as [number[], number[], number[], number[]];
        const ref = attentionRef(c, qr, kr, vr, gr, round);
        const unroundedWeights = attentionRef(c, qr, kr, vr, gr);
        [q, k, v].forEach((x) => (x.requiresGrad = true));
        const out = scaledDotProductAttention(q, k, v, { ...opts, generator: generator(), precision: "bfloat16" });
        expectClose(out, ref.out, 1e-5);
        // the rounding is real: float32 precision differs by far more than float32 noise, and so
        // does float64 attention of the rounded inputs that keeps the weights unrounded
        const f32 = scaledDotProductAttention(q.detach(), k.detach(), v.detach(), { ...opts, generator: generator() });
        expect(relError(arr(out), arr(f32))).toBeGreaterThan(1e-4);
        expect(relError(arr(out), unroundedWeights.out)).toBeGreaterThan(1e-4);
        // The backward is the float32 gradient at the rounded point (rounding passes gradients
        // straight through, as autocast's casts do), so it is checked against float64 there;
        // finite differences would see the rounding's steps instead.
        out.backward(gout);
        expectClose(q.grad!, ref.dq, 1e-4);
        expectClose(k.grad!, ref.dk, 1e-4);
        expectClose(v.grad!, ref.dv, 1e-4);
      }),
    );
    // Exact ties (the bits below bf16's mantissa are 0x8000) round to even, both ways: 1 + 2^-8
    // down to 1, 1 + 3·2^-8 up to 1 + 2^-6; and their negatives. Both attentions read the same
    // rounded values, so the outputs match exactly; 4 queries round q, k, v into float32 copies,
    // 16 into the bf16 copies of the bf16 GEMMs.
    for (const T of [4, 16])
      tidy(() => {
        const ties = [1 + 2 ** -8, 1 + 3 * 2 ** -8, -(1 + 2 ** -8), -(1 + 3 * 2 ** -8)];
        const x = tensor(new Float32Array(Array.from({ length: 4 * T }, (_, i) => ties[i % 4]! * (1 + (i >> 2)))), { shape: [1, 1, T, 4] });
        const rounded = tensor(new Float32Array(bf16(arr(x))), { shape: [1, 1, T, 4] });
        expect(arr(rounded).slice(0, 4)).toEqual([1, 1 + 2 ** -6, -1, -(1 + 2 ** -6)]);
        expect(arr(scaledDotProductAttention(x, x, x, { precision: "bfloat16" }))).toEqual(arr(scaledDotProductAttention(rounded, rounded, rounded, { precision: "bfloat16" })));
      });
    // kvRounded: k and v that already hold bf16 values are read as they are (a KV cache that
    // stores them rounded); the result is the same bits as rounding them, with a cache-like Tq < Tk:
    // 3 queries read the cache in place, 20 round it into the bf16 GEMMs' copies all the same.
    for (const Tq of [3, 20])
      tidy(() => {
        const q = t([1, 2, Tq, 8], 691), k = t([1, 2, Tq + 8, 8], 692), v = t([1, 2, Tq + 8, 8], 693);
        const round = (x: Tensor) => tensor(new Float32Array(bf16(arr(x))), { shape: [...x.shape] });
        const [kr, vr] = [round(k), round(v)];
        const want = arr(scaledDotProductAttention(q, k, v, { precision: "bfloat16" }));
        expect(arr(scaledDotProductAttention(q, kr, vr, { precision: "bfloat16", kvRounded: true }))).toEqual(want);
        // the flag is the caller's promise: with k, v that are not bf16 values it changes the
        // result where the cache is read in place
        if (Tq === 3) expect(arr(scaledDotProductAttention(q, k, v, { precision: "bfloat16", kvRounded: true }))).not.toEqual(want);
        // and float32 precision ignores it
        expect(arr(scaledDotProductAttention(q, k, v, { kvRounded: true }))).toEqual(arr(scaledDotProductAttention(q, k, v)));
      });
    tidy(() => {
      const q = t([1, 1, 4, 8], 690);
      // @ts-expect-error: a precision outside the type, as JavaScript callers can pass
      expect(() => scaledDotProductAttention(q, q, q, { precision: "float16" })).toThrow(/precision must be "float32" or "bfloat16", got "float16"/);
    });
  });

  // Grouped-query attention: the CPU reads each key/value head for its group of query heads in
  // place (kvGroup in native/ops/attention.h). The same as repeating the heads first
  // (transformers' repeat_kv): outputs bit for bit (each query head reads the same rows); dk and
  // dv sum the group's heads in another order, so within float32 rounding.
  for (const precision of ["float32", "bfloat16"] as const) {
    it(`grouped key/value heads equal the repeated heads (causal, Tq < Tk, padding, dropout, ${precision})`, () => {
      tidy(() => {
        const [B, H, Hkv, Tq, Tk, D] = [2, 6, 2, 9, 11, 8];
        const q = t([B, H, Tq, D], 31).requireGrad(), k = t([B, Hkv, Tk, D], 32).requireGrad(), v = t([B, Hkv, Tk, D], 33).requireGrad();
        const g = t([B, H, Tq, D], 34);
        const attnMask = tensor(Int32Array.from({ length: B * Tk }, (_, i) => (i === 0 || i === Tk + 3 ? 0 : 1)), { shape: [B, Tk] });
        const opts = () => ({ causal: true, attnMask, dropout: 0.2, generator: new Generator(5), precision });
        const run = (kk: Tensor, vv: Tensor) => {
          const out = scaledDotProductAttention(q, kk, vv, opts());
          out.backward(g);
          const got = { out: arr(out), dq: arr(q.grad!) };
          q.grad = null;
          return got;
        };
        const grouped = run(k, v);
        const [dk, dv] = [arr(k.grad!), arr(v.grad!)];
        k.grad = null;
        v.grad = null;
        const repeat = (x: Tensor) => expand(x.unsqueeze(2), [B, Hkv, H / Hkv, Tk, D]).reshape(B, H, Tk, D);
        const repeated = run(repeat(k), repeat(v));
        expect(grouped).toEqual(repeated);
        expectClose(dk, arr(k.grad!), 1e-6);
        expectClose(dv, arr(v.grad!), 1e-6);
      });
    });
  }

  it("names the shapes on bad input", () => {
    tidy(() => {
      const q = zeros([1, 2, 4, 8]);
      expect(() => scaledDotProductAttention(q, zeros([1, 2, 4, 7]), zeros([1, 2, 4, 7]))).toThrow(/must both be \[B, Hkv, Tk, D\] = \[1, Hkv, Tk, 8\]/);
      expect(() => scaledDotProductAttention(q, zeros([1, 3, 4, 8]), zeros([1, 3, 4, 8]))).toThrow(/with Hkv dividing the 2 query heads/);
      expect(() => scaledDotProductAttention(q, zeros([1, 2, 3, 8]), zeros([1, 2, 3, 8]))).toThrow(/Tq must be <= Tk/);
      expect(() => scaledDotProductAttention(q, q, q, { attnMask: zeros([1, 4]) })).toThrow(/attnMask must be an int32 key-padding mask \[B, Tk\] = \[1, 4\]/);
    });
  });
});

describe("scaledDotProductAttention against PyTorch (test/fixtures/ops/reference.json)", () => {
  it("scaled_dot_product_attention (is_causal): output and gradients", () => {
    tidy(() => {
      const S = torchReference().sdpa_causal;
      const shape = S.shape as number[];
      const [q, k, v] = [S.q, S.k, S.v].map((a: unknown) => fromJson(a, shape).requireGrad()) as [Tensor, Tensor, Tensor];
      const out = scaledDotProductAttention(q, k, v, { causal: true, scale: S.scale });
      expectClose(out, flat(S.out), 1e-5);
      out.backward(fromJson(S.grad_out, shape));
      expectClose(q.grad!, flat(S.grad_q), 1e-5);
      expectClose(k.grad!, flat(S.grad_k), 1e-5);
      expectClose(v.grad!, flat(S.grad_v), 1e-5);
      // out_with_bool_mask uses a full [T, T] mask that is not a key-padding mask: not applicable.
    });
  });
});
