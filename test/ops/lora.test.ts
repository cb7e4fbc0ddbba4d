import { describe, expect, it } from "vitest";
import { dropout, Generator, info, memory, noGrad, ones, scale, setNumThreads, tensor, tidy, zeros } from "../../lib/index.js";
import { loraDelta, loraMerge } from "../../lib/ops/lora.js";
import { gemm2d } from "../../lib/ops/matmul.js";
import { expectClose, gradcheck, randomValues } from "../helpers.js";

const t = (shape: number[], seed: number) => tensor(randomValues(shape.reduce((a, b) => a * b, 1), seed), { shape });

/** float64 y + s·x·Aᵀ·Bᵀ. */
function reference(y: number[], x: number[], A: number[], B: number[], N: number, k: number, r: number, d: number, s: number): number[] {
  const out = y.slice();
  for (let n = 0; n < N; n++) {
    const u = Array.from({ length: r }, (_, j) => x.slice(n * k, n * k + k).reduce((acc, xv, c) => acc + xv * A[j * k + c]!, 0));
    for (let o = 0; o < d; o++) out[n * d + o]! += s * u.reduce((acc, uv, j) => acc + uv * B[o * r + j]!, 0);
  }
  return out;
}

describe("loraDelta (y + s·drop(x)·Aᵀ·Bᵀ)", () => {
  for (const [N, k, r, d] of [[1, 1, 1, 1], [7, 13, 3, 11], [2 * 5, 17, 4, 9]] as const) {
    it(`matches float64 and finite differences for N=${N} k=${k} r=${r} d=${d}`, () => {
      tidy(() => {
        const y = t([N, d], 1), x = t([N, k], 2), A = t([r, k], 3), B = t([d, r], 4);
        const out = loraDelta(y, x, A, B, { scaling: 2.5 });
        expectClose(out, reference([...y.dataSync()], [...x.dataSync()], [...A.dataSync()], [...B.dataSync()], N, k, r, d, 2.5), 1e-5);
        gradcheck((a, b, c, e) => loraDelta(a!, b!, c!, e!, { scaling: 2.5 }), [y, x, A, B]);
      });
    });
  }

  it("accepts batched inputs [B, T, k] and non-contiguous x", () => {
    tidy(() => {
      const x = t([3, 2, 5], 5).transpose(0, 1); // [2, 3, 5] view
      const y = t([2, 3, 4], 6), A = t([2, 5], 7), B = t([4, 2], 8);
      const out = loraDelta(y, x, A, B, { scaling: 0.5 });
      expect(out.shape).toEqual([2, 3, 4]);
      const ref = reference([...y.dataSync()], [...x.contiguous().dataSync()], [...A.dataSync()], [...B.dataSync()], 6, 5, 2, 4, 0.5);
      expectClose(out, ref, 1e-5);
      gradcheck((a, b) => loraDelta(y, a!.transpose(0, 1), b!, B, { scaling: 0.5 }), [t([3, 2, 5], 5), A]);
    });
  });

  it("dropout: the mask drawn in forward is recomputed in backward (finite differences with a fixed stream)", () => {
    tidy(() => {
      const y = t([6, 4], 1), x = t([6, 8], 2), A = t([3, 8], 3), B = t([4, 3], 4);
      const f = (a: any, b: any, c: any, e: any) => loraDelta(a, b, c, e, { scaling: 1.5, dropout: 0.4, generator: new Generator(11) });
      gradcheck(f, [y, x, A, B]);
      // Dropout changes the result, and eval mode turns it off.
      const train = f(y, x, A, B).dataSync(), plain = loraDelta(y, x, A, B, { scaling: 1.5 }).dataSync();
      expect(train).not.toEqual(plain);
      expect(loraDelta(y, x, A, B, { scaling: 1.5, dropout: 0.4, training: false }).dataSync()).toEqual(plain);
    });
  });

  it("dropout: forward values equal y + s·(x ⊙ keep/(1-p))·Aᵀ·Bᵀ in float64 with the same keep mask", () => {
    tidy(() => {
      const [N, k, r, d, p, s] = [16, 32, 3, 5, 0.25, 1.5];
      const y = t([N, d], 1), x = t([N, k], 2), A = t([r, k], 3), B = t([d, r], 4);
      const out = loraDelta(y, x, A, B, { scaling: s, dropout: p, generator: new Generator(11) });
      // The same Philox stream drives dropout() itself: which elements it keeps is the mask; the
      // 1/(1-p) scale is applied here, independently of the op under test.
      const keep = Array.from(dropout(ones([N, k]), p, { generator: new Generator(11) }).dataSync(), (v) => v !== 0);
      const kept = keep.filter(Boolean).length / keep.length;
      expect(Math.abs(kept - (1 - p))).toBeLessThan(0.06); // 512 draws: a few standard errors (0.019)
      const xd = Array.from(x.dataSync(), (v, i) => (keep[i] ? v / (1 - p) : 0));
      expectClose(out, reference([...y.dataSync()], xd, [...A.dataSync()], [...B.dataSync()], N, k, r, d, s), 1e-6);
    });
  });

  /**
   * loraDelta(y, x, A, B) with dropout p from Generator(seed) run forward and backward (gradient g),
   * next to the same products composed by hand from gemm2d and dropout(): [op, composed], each as
   * { out, gx, gA, gB } arrays, and the mask function. `skip` counters are drawn from the
   * generator first: a stream offset inside Philox's groups of 64 elements, so that the CPU's
   * dropout runs (a block, or a row of a block) start and end inside groups.
   */
  function opAndComposed(N: number, k: number, r: number, d: number, p: number, s: number, seed: number, skip = 0) {
    const generator = (): Generator => {
      const gen = new Generator(seed);
      gen.next(skip);
      return gen;
    };
    const y = t([N, d], 1), x = t([N, k], 2).requireGrad(), A = t([r, k], 3).requireGrad(), B = t([d, r], 4).requireGrad(), g = t([N, d], 5);
    const out = loraDelta(y, x, A, B, { scaling: s, dropout: p, generator: generator() });
    out.backward(g);
    const op = { out: Array.from(out.dataSync()), gx: Array.from(x.grad!.dataSync()), gA: Array.from(A.grad!.dataSync()), gB: Array.from(B.grad!.dataSync()) };
    // The op draws its mask as dropout() does from the same generator: N·k counters, the next draw.
    const mask = (src: ReturnType<typeof t>) => noGrad(() => dropout(src, p, { generator: generator() }));
    const composed = noGrad(() => {
      const xd = mask(x.detach());
      const u = zeros([N, r]), v = zeros([N, r]), vA = zeros([N, k]), gA = zeros([r, k]), gB = zeros([d, r]), want = zeros([N, d]);
      gemm2d(u, xd, false, A.detach(), true, 1, 0);
      gemm2d(want, u, false, B.detach(), true, s, 0);
      gemm2d(v, g, false, B.detach(), false, 1, 0);
      gemm2d(vA, v, false, A.detach(), false, s, 0);
      gemm2d(gA, v, true, xd, false, s, 0);
      gemm2d(gB, g, true, u, false, s, 0);
      const ys = y.dataSync();
      return { out: Array.from(want.dataSync(), (w, i) => Math.fround(ys[i]! + w)), gx: Array.from(mask(vA).dataSync()), gA: Array.from(gA.dataSync()), gB: Array.from(gB.dataSync()) };
    });
    return { op, composed, mask, x, A, g };
  }

  it("dropout: output and gradients equal, bit for bit, the same kernels composed by hand", () => {
    tidy(() => {
      const { op, composed } = opAndComposed(12, 20, 3, 7, 0.3, 1.5, 11);
      expect(op).toEqual(composed);
      const shifted = opAndComposed(12, 20, 3, 7, 0.3, 1.5, 11, 5);
      expect(shifted.op).toEqual(shifted.composed);
    });
  });

  // On the CPU the op is one native call each way (native/cpu/lora.cc), by blocks of rows of at most
  // 128K elements of x in multiples of 16 rows, the gradients of A and B summed in up to 8
  // partitions of blocks. N = 700, k = 600 gives 4 blocks (176 rows, the last 172) and 4
  // partitions: rows, masks and sums cross them.
  it("several row blocks: gx equals the composed kernels bit for bit, out, gA and gB within float32 sums, float64 agrees", () => {
    tidy(() => {
      const [N, k, r, d, p, s] = [700, 600, 5, 40, 0.2, 1.5];
      const { op, composed, mask, x, A, g } = opAndComposed(N, k, r, d, p, s, 12, 3);
      noGrad(() => {
        // The products over k = 600 (u) and over the 700 rows (gA, gB) add in another order than the
        // composed GEMMs' (other blocking): float32 rounding, ~1e-7 relative per term.
        expectClose(op.out, composed.out, 1e-6);
        expect(op.gx).toEqual(composed.gx);
        expectClose(op.gA, composed.gA, 1e-6);
        expectClose(op.gB, composed.gB, 1e-6);
        // float64: gB = s·gᵀ·u with u from the float64 forward
        const xs = x.dataSync(), As = A.dataSync(), gs = g.dataSync(), keep = Array.from(mask(ones([N, k])).dataSync(), (m) => m !== 0);
        const u64 = Array.from({ length: N * r }, (_, i) => {
          const n = Math.floor(i / r), j = i % r;
          let acc = 0;
          for (let c = 0; c < k; c++) if (keep[n * k + c]) acc += (xs[n * k + c]! / (1 - p)) * As[j * k + c]!;
          return acc;
        });
        const gB64 = Array.from({ length: d * r }, (_, i) => {
          const o = Math.floor(i / r), j = i % r;
          let acc = 0;
          for (let n = 0; n < N; n++) acc += gs[n * d + o]! * u64[n * r + j]!;
          return s * acc;
        });
        expectClose(op.gB, gB64, 1e-5);
      });
    });
  });

  // k a multiple of 512: the CPU keeps drop(x) in a scratch buffer whose rows are k + 16 apart
  // (against L1 aliasing), masked row by row. N = 300 gives 3 blocks (112, 112, 76 rows).
  it("several row blocks, k = 1024: gx equals the composed kernels bit for bit, out, gA and gB within float32 sums", () => {
    tidy(() => {
      const { op, composed } = opAndComposed(300, 1024, 3, 8, 0.3, 1.5, 13, 7);
      expectClose(op.out, composed.out, 1e-6);
      expect(op.gx.filter((v, i) => !Object.is(v, composed.gx[i])).length).toBe(0); // bit for bit (a count: a diff of 307K values takes minutes)
      expectClose(op.gA, composed.gA, 1e-6);
      expectClose(op.gB, composed.gB, 1e-6);
    });
  });

  it("gA and gB do not depend on the number of threads; no rows give zero gradients", () => {
    const threads = info().threads;
    const grads = (n: number) => tidy(() => {
      setNumThreads(n);
      const x = t([700, 300], 2), A = t([5, 300], 3).requireGrad(), B = t([40, 5], 4).requireGrad();
      loraDelta(t([700, 40], 1), x, A, B, { scaling: 1.5, dropout: 0.2, generator: new Generator(12) }).backward(t([700, 40], 5));
      const got = [Array.from(A.grad!.dataSync()), Array.from(B.grad!.dataSync())];
      A.dispose();
      B.dispose();
      return got;
    });
    try {
      expect(grads(1)).toEqual(grads(3));
    } finally {
      setNumThreads(threads);
    }
    tidy(() => {
      const A = t([2, 6], 3).requireGrad(), B = t([4, 2], 4).requireGrad();
      const out = loraDelta(zeros([0, 4]), zeros([0, 6]), A, B, { scaling: 2, dropout: 0.1 });
      out.backward(zeros([0, 4]));
      expect(Array.from(A.grad!.dataSync())).toEqual(new Array(12).fill(0));
      expect(Array.from(B.grad!.dataSync())).toEqual(new Array(8).fill(0));
    });
  });

  it("consumeY: out is written into y's storage when nothing else shares it, into a new tensor otherwise", () => {
    tidy(() => {
      const x = t([5, 6], 1), A = t([2, 6], 2), B = t([4, 2], 3);
      const opts = { scaling: 2, consumeY: true };
      const want = Array.from(loraDelta(t([5, 4], 4), x, A, B, { scaling: 2 }).dataSync());
      const y = t([5, 4], 4);
      const out = loraDelta(y, x, A, B, opts);
      expect(out.storage).toBe(y.storage);
      expect(Array.from(out.dataSync())).toEqual(want);
      const shared = t([5, 4], 4), view = shared.reshape(20); // another view: shared is not the op's to overwrite
      const copied = loraDelta(shared, x, A, B, opts);
      expect(copied.storage).not.toBe(shared.storage);
      expect(Array.from(copied.dataSync())).toEqual(want);
      expect(Array.from(view.dataSync())).toEqual(Array.from(t([5, 4], 4).dataSync()));
      gradcheck((a, b, c, e) => loraDelta(scale(a!, 2), b!, c!, e!, { scaling: 2, consumeY: true }), [t([5, 4], 4), x, A, B]);
    });
  });

  it("frozen A/B/x get no gradient, and a step leaks nothing", () => {
    const A = t([2, 6], 3).requireGrad(), B = t([5, 2], 4).requireGrad();
    const step = () => tidy(() => {
      const x = t([4, 6], 1), y = t([4, 5], 2);
      const out = loraDelta(y, x, A, B, { scaling: 2, dropout: 0.1, generator: new Generator(3) });
      out.backward(tensor(randomValues(20, 9), { shape: [4, 5] }));
      expect(x.grad).toBeNull();
      expect(y.grad).toBeNull();
    });
    step();
    const before = memory().cpu!;
    step();
    expect(memory().cpu).toMatchObject({ bytes: before.bytes, buffers: before.buffers, tensors: before.tensors });
    expect(A.grad).not.toBeNull();
    A.dispose();
    B.dispose();
  });

  it("names the shapes when A or B do not fit", () => {
    tidy(() => expect(() => loraDelta(t([2, 4], 1), t([2, 3], 2), t([2, 5], 3), t([4, 2], 4), { scaling: 1 })).toThrow(/lora_A must be \[r, 3\] and lora_B \[4, r\]/));
  });
});

describe("loraMerge (W += s·B·A in place)", () => {
  /** float64 W + s·B·A, or W + s·(B·A)ᵀ when transposed (W [k, d]); `size`: |W| + |s|·Σ|B·A| per element. */
  function merged(W: number[], A: number[], B: number[], k: number, r: number, d: number, s: number, transposed: boolean, size: number[] = []): number[] {
    return W.map((w, e) => {
      const [o, c] = transposed ? [e % d, Math.floor(e / d)] : [Math.floor(e / k), e % k];
      let acc = 0, abs = 0;
      for (let j = 0; j < r; j++) {
        acc += B[o * r + j]! * A[j * k + c]!;
        abs += Math.abs(B[o * r + j]! * A[j * k + c]!);
      }
      size[e] = Math.abs(w) + Math.abs(s) * abs;
      return w + s * acc;
    });
  }

  for (const [k, r, d] of [[1, 1, 1], [13, 3, 11], [70, 17, 33], [300, 5, 400]] as const) { // the last: several row blocks on the CPU
    for (const transposed of [false, true]) {
      it(`float32 and bfloat16 W, k=${k} r=${r} d=${d}${transposed ? ", transposed (Conv1D, Embedding)" : ""}: float64 agrees, unmerge restores`, () => {
        tidy(() => {
          const A = t([r, k], 11), B = t([d, r], 12), W = t(transposed ? [k, d] : [d, k], 13);
          const W0 = [...W.dataSync()];
          const want = merged(W0, [...A.dataSync()], [...B.dataSync()], k, r, d, -1.7, transposed);
          // float32: sums of r products in float32 (~1e-7 relative each), then one add
          loraMerge(W, A, B, -1.7, transposed);
          expectClose(W, want, 1e-6);
          loraMerge(W, A, B, 1.7, transposed);
          expectClose(W, W0, 1e-6);
          // bfloat16: each element widened, changed in float32, rounded once: within a bf16 ulp (2^-8
          // relative) of the float64 result, plus the float32 sum's error relative to its terms' size
          // (where W and s·ΔW nearly cancel)
          const Wb = W.to("cpu", "bfloat16");
          const wb0 = [...Wb.to("cpu", "float32").dataSync()];
          loraMerge(Wb, A, B, -1.7, transposed);
          const got = [...Wb.to("cpu", "float32").dataSync()];
          const size: number[] = [];
          const wantB = merged(wb0, [...A.dataSync()], [...B.dataSync()], k, r, d, -1.7, transposed, size);
          got.forEach((g, e) => expect(Math.abs(g - wantB[e]!)).toBeLessThanOrEqual(Math.abs(wantB[e]!) * 2 ** -8 + size[e]! * 2 ** -22));
        });
      });
    }
  }

  it("names the shapes and refuses what it cannot update in place", () => {
    tidy(() => {
      expect(() => loraMerge(t([4, 3], 1), t([2, 3], 2), t([5, 2], 3), 1)).toThrow(/W must be \[d, k\].*got W \[4, 3\], A \[2, 3\], B \[5, 2\]/);
      expect(() => loraMerge(t([4, 3], 1), t([2, 3], 2), t([4, 2], 3), 1, true)).toThrow(/W must be \[k, d\] \(transposed\)/);
      expect(() => loraMerge(t([3, 4], 1).transpose(0, 1), t([2, 3], 2), t([4, 2], 3), 1)).toThrow(/must have contiguous rows/);
      expect(() => loraMerge(t([4, 3], 1).to("cpu", "int32"), t([2, 3], 2), t([4, 2], 3), 1)).toThrow(/W must be float32 or bfloat16, got int32/);
    });
  });
});
