import { describe, expect, it } from "vitest";
import { dropout, Generator, memory, noGrad, ones, scale, tensor, tidy, zeros } from "../../lib/index.js";
import { loraDelta } from "../../lib/ops/lora.js";
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

  it("dropout: output and gradients equal, bit for bit, the same kernels composed by hand", () => {
    tidy(() => {
      const [N, k, r, d, p, s] = [12, 20, 3, 7, 0.3, 1.5];
      const y = t([N, d], 1), x = t([N, k], 2).requireGrad(), A = t([r, k], 3).requireGrad(), B = t([d, r], 4).requireGrad(), g = t([N, d], 5);
      const out = loraDelta(y, x, A, B, { scaling: s, dropout: p, generator: new Generator(11) });
      out.backward(g);
      noGrad(() => {
        // The op draws its mask as dropout() does from a fresh Generator(11): N·k counters, first draw.
        const mask = (src: ReturnType<typeof t>) => dropout(src, p, { generator: new Generator(11) });
        const xd = mask(x.detach());
        const u = zeros([N, r]), v = zeros([N, r]), vA = zeros([N, k]), gA = zeros([r, k]), gB = zeros([d, r]), want = zeros([N, d]);
        gemm2d(u, xd, false, A.detach(), true, 1, 0);
        gemm2d(want, u, false, B.detach(), true, s, 0);
        gemm2d(v, g, false, B.detach(), false, 1, 0);
        gemm2d(vA, v, false, A.detach(), false, s, 0);
        gemm2d(gA, v, true, xd, false, s, 0);
        gemm2d(gB, g, true, u, false, s, 0);
        const yPlus = Array.from(want.dataSync(), (w, i) => Math.fround(y.dataSync()[i]! + w));
        expect(Array.from(out.dataSync())).toEqual(yPlus);
        expect(Array.from(x.grad!.dataSync())).toEqual(Array.from(mask(vA).dataSync()));
        expect(Array.from(A.grad!.dataSync())).toEqual(Array.from(gA.dataSync()));
        expect(Array.from(B.grad!.dataSync())).toEqual(Array.from(gB.dataSync()));
      });
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
