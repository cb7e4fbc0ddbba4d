// nn ops (lib/ops/nn.ts, lib/ops/attention.ts; kernels native/cpu/nn.cc, attention.cc, nn_rows.cc):
// forward against float64 references written here, backward against finite differences
// (gradcheck) on small odd shapes and against float64 analytic gradients on larger ones, and
// against PyTorch's own numbers in test/fixtures/ops/reference.json when that file exists.
//
// Tolerances: forward 1e-5 relative L2. The kernels round inputs, partial sums and exp (the SIMD
// exp is within ~2 ulp) to float32, so errors sit around 1e-7..1e-6 of the row's scale; 1e-5
// leaves room for rows of ~1000 terms. Analytic gradients 1e-4 (they subtract nearly equal
// float32 sums, e.g. P·(dP - rowsum)). gradcheck's float32 central differences agree to ~1e-3.
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { Generator, info, memory, setNumThreads, Tensor, tensor, tidy, zeros } from "../../lib/index.js";
import { gelu, mul, sum } from "../../lib/ops/index.js";
import { scaledDotProductAttention } from "../../lib/ops/attention.js";
import { crossEntropy, dropout, layerNorm, logSoftmax, softmax } from "../../lib/ops/nn.js";
import { expectClose, gradcheck, randomValues } from "../helpers.js";

const size = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);
const t = (shape: number[], seed: number, scale = 1, shift = 0) =>
  tensor(randomValues(size(shape), seed).map((v) => v * scale + shift), { shape });
const arr = (x: Tensor) => Array.from(x.dataSync());

// ---- float64 references ---------------------------------------------------------------------------

function layerNormRef(x: number[], C: number, w: number[] | null, b: number[] | null, eps: number, gy?: number[]) {
  const N = x.length / C;
  const y: number[] = [], dx: number[] = [], dw = new Array<number>(C).fill(0), db = new Array<number>(C).fill(0);
  for (let n = 0; n < N; n++) {
    const row = x.slice(n * C, (n + 1) * C);
    const mean = row.reduce((a, v) => a + v, 0) / C;
    const rstd = 1 / Math.sqrt(row.reduce((a, v) => a + (v - mean) ** 2, 0) / C + eps);
    const xhat = row.map((v) => (v - mean) * rstd);
    xhat.forEach((h, j) => y.push(h * (w ? w[j]! : 1) + (b ? b[j]! : 0)));
    if (!gy) continue;
    const g = xhat.map((_, j) => gy[n * C + j]! * (w ? w[j]! : 1));
    const gMean = g.reduce((a, v) => a + v, 0) / C;
    const gxMean = g.reduce((a, v, j) => a + v * xhat[j]!, 0) / C;
    xhat.forEach((h, j) => {
      dx.push(rstd * (g[j]! - gMean - h * gxMean));
      dw[j]! += gy[n * C + j]! * h;
      db[j]! += gy[n * C + j]!;
    });
  }
  return { y, dx, dw, db };
}

function softmaxRef(x: number[], cols: number, log: boolean): number[] {
  const out: number[] = [];
  for (let r = 0; r < x.length / cols; r++) {
    const row = x.slice(r * cols, (r + 1) * cols);
    const m = Math.max(...row);
    const lse = m + Math.log(row.reduce((a, v) => a + Math.exp(v - m), 0));
    for (const v of row) out.push(log ? v - lse : Math.exp(v - lse));
  }
  return out;
}

function crossEntropyRef(logits: number[], V: number, targets: number[], ignore: number) {
  const losses: number[] = [], grad: number[] = [];
  let count = 0;
  targets.forEach((tg, n) => {
    const lsm = softmaxRef(logits.slice(n * V, (n + 1) * V), V, true);
    if (tg === ignore) {
      losses.push(0);
      grad.push(...new Array<number>(V).fill(0));
      return;
    }
    count++;
    losses.push(-lsm[tg]!);
    grad.push(...lsm.map((l, j) => Math.exp(l) - (j === tg ? 1 : 0)));
  });
  const total = losses.reduce((a, v) => a + v, 0);
  return { losses, sum: total, mean: total / count, count, gradSum: grad };
}

interface AttnCase {
  B: number; H: number; Tq: number; Tk: number; D: number; causal: boolean; keep?: number[]; scale?: number;
  dropout?: { p: number; seed: bigint; offset: bigint };
}

/**
 * Attention in float64, with the masking rules of native/ops/nn.h: causal query i sees keys
 * j <= Tk - Tq + i; padded keys get weight 0; a query whose visible keys are all padded outputs 0
 * and gets no gradient. With dropout, weight (b, h, i, j) is multiplied by M = keep / (1-p) with
 * keep = philoxKeep of element ((b*H + h)*Tq + i)*Tk + j. Tensors are row-major [B, H, T, D].
 */
function attentionRef(c: AttnCase, q: number[], k: number[], v: number[], gout: number[]) {
  const { B, H, Tq, Tk, D } = c;
  const scale = c.scale ?? 1 / Math.sqrt(D);
  const out = new Array<number>(B * H * Tq * D).fill(0);
  const dq = out.slice(), dk = new Array<number>(B * H * Tk * D).fill(0), dv = dk.slice();
  const at = (T: number, b: number, h: number, i: number) => ((b * H + h) * T + i) * D;
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      for (let i = 0; i < Tq; i++) {
        const vis = c.causal ? Tk - Tq + i + 1 : Tk;
        const keep = (j: number) => !c.keep || c.keep[b * Tk + j] !== 0;
        if (![...Array(vis).keys()].some(keep)) continue;
        const qi = at(Tq, b, h, i);
        const s = [...Array(vis).keys()].map((j) => {
          if (!keep(j)) return -Infinity;
          let dot = 0;
          for (let d = 0; d < D; d++) dot += q[qi + d]! * k[at(Tk, b, h, j) + d]!;
          return dot * scale;
        });
        const m = Math.max(...s);
        const e = s.map((x) => Math.exp(x - m));
        const z = e.reduce((a, x) => a + x, 0);
        const p = e.map((x) => x / z);
        const drop = c.dropout;
        const M = p.map((_, j) =>
          !drop ? 1 : philoxKeep(drop.seed, drop.offset, BigInt(((b * H + h) * Tq + i) * Tk + j), drop.p) ? Math.fround(1 / (1 - drop.p)) : 0,
        );
        const dP = p.map((_, j) => {
          let dot = 0;
          for (let d = 0; d < D; d++) dot += gout[qi + d]! * v[at(Tk, b, h, j) + d]!;
          return dot * M[j]!;
        });
        const delta = p.reduce((a, pj, j) => a + pj * dP[j]!, 0);
        p.forEach((pj, j) => {
          const kj = at(Tk, b, h, j), dS = pj * (dP[j]! - delta) * scale;
          for (let d = 0; d < D; d++) {
            out[qi + d]! += pj * M[j]! * v[kj + d]!;
            dv[kj + d]! += pj * M[j]! * gout[qi + d]!;
            dq[qi + d]! += dS * k[kj + d]!;
            dk[kj + d]! += dS * q[qi + d]!;
          }
        });
      }
    }
  }
  return { out, dq, dk, dv };
}

/** Philox4x32-10 lane 0 of block (offset + i) under key seed, in BigInt: the keep rule of native/core/philox.h. */
function philoxKeep(seed: bigint, offset: bigint, i: bigint, p: number): boolean {
  const M = 0xffffffffn;
  const c = offset + i;
  let [c0, c1, c2, c3] = [c & M, (c >> 32n) & M, 0n, 0n];
  let [k0, k1] = [seed & M, (seed >> 32n) & M];
  for (let r = 0; r < 10; r++) {
    const p0 = 0xd2511f53n * c0, p1 = 0xcd9e8d57n * c2;
    [c0, c1, c2, c3] = [(p1 >> 32n) ^ c1 ^ k0, p1 & M, (p0 >> 32n) ^ c3 ^ k1, p0 & M];
    k0 = (k0 + 0x9e3779b9n) & M;
    k1 = (k1 + 0xbb67ae85n) & M;
  }
  return Number(c0 >> 8n) / 16777216 >= Math.fround(p);
}

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

// ---- dropout --------------------------------------------------------------------------------------

describe("dropout", () => {
  it("keeps element i when philox_keep(seed, offset, i, p): checked against a BigInt Philox", () => {
    tidy(() => {
      const gen = new Generator(0x1234_5678_9abcn);
      gen.next(1000); // start at offset 1000
      const x = t([7, 143], 40, 1, 2); // all > 0, so zero means dropped
      const y = arr(dropout(x, 0.3, { generator: gen }));
      expect(gen.offset).toBe(1000n + 1001n);
      const kept = y.map((v) => v !== 0);
      expect(kept).toEqual(kept.map((_, i) => philoxKeep(0x1234_5678_9abcn, 1000n, BigInt(i), 0.3)));
    });
  });

  it("is a deterministic function of (seed, offset), keeps about 1 - p, scales by 1/(1-p)", () => {
    tidy(() => {
      const x = t([100_000], 41, 1, 2);
      const a = arr(dropout(x, 0.25, { generator: new Generator(7) }));
      const g = new Generator(7);
      g.setState({ seed: "7", offset: "0" });
      expect(arr(dropout(x, 0.25, { generator: g }))).toEqual(a);
      const other = arr(dropout(x, 0.25, { generator: g })); // offset 100000 now: another mask
      expect(other).not.toEqual(a);
      const keptFrac = a.filter((v) => v !== 0).length / a.length;
      expect(Math.abs(keptFrac - 0.75)).toBeLessThan(0.01); // 7 standard deviations
      const xs = arr(x), scale = Math.fround(1 / 0.75);
      expect(a.filter((v, i) => v !== 0 && v !== Math.fround(xs[i]! * scale))).toEqual([]);
    });
  });

  it("backward recomputes the forward mask: dx = g * mask / (1 - p) exactly", () => {
    tidy(() => {
      const x = t([33, 17], 42, 1, 2).requireGrad(), g = t([33, 17], 43);
      const y = dropout(x, 0.4, { generator: new Generator(99) });
      y.backward(g);
      const ys = arr(y), gs = arr(g), dx = arr(x.grad!), scale = Math.fround(1 / 0.6);
      expect(dx).toEqual(ys.map((y, i) => (y === 0 ? 0 : Math.fround(gs[i]! * scale))));
    });
  });

  it("p = 0 or training = false passes through (values and gradient); p = 1 gives zeros", () => {
    tidy(() => {
      const gen = new Generator(3);
      const x = t([4, 5], 44).requireGrad(), g = t([4, 5], 45);
      for (const y of [dropout(x, 0, { generator: gen }), dropout(x, 0.5, { training: false, generator: gen })]) {
        expect(arr(y)).toEqual(arr(x));
        y.backward(g);
        expect(arr(x.grad!)).toEqual(arr(g));
        x.grad!.dispose();
        x.grad = null;
      }
      expect(gen.offset).toBe(0n); // identity draws no numbers
      const z = dropout(x, 1, { generator: gen });
      expect(arr(z)).toEqual(new Array(20).fill(0));
      z.backward(g);
      expect(arr(x.grad!)).toEqual(new Array(20).fill(0));
      expect(() => dropout(x, 1.5)).toThrow(/p must be a probability in \[0, 1\], got 1.5/);
    });
  });
});

// ---- attention ------------------------------------------------------------------------------------

describe("scaledDotProductAttention", () => {
  const run = (c: AttnCase, seed: number, check: "forward" | "grad" | "gradcheck") =>
    tidy(() => {
      const q = t([c.B, c.H, c.Tq, c.D], seed, 1.5), k = t([c.B, c.H, c.Tk, c.D], seed + 1, 1.5), v = t([c.B, c.H, c.Tk, c.D], seed + 2);
      const attnMask = c.keep ? tensor(new Int32Array(c.keep), { shape: [c.B, c.Tk] }) : null;
      // A fresh generator at the same state for every call: finite differences see one mask.
      const generator = () => new Generator(c.dropout?.seed ?? 0).setState({ seed: String(c.dropout?.seed ?? 0), offset: String(c.dropout?.offset ?? 0) });
      const opts = { causal: c.causal, attnMask, scale: c.scale, dropout: c.dropout?.p, get generator() { return generator(); } };
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
      const [b1, t3] = [1, 3]; // through slice/reshape/permute, with a smaller batch for finite differences
      gradcheck((x) => {
        const s = (i: number) => x!.slice(2, i * C, (i + 1) * C).reshape(b1, t3, H, D).permute(0, 2, 1, 3);
        return scaledDotProductAttention(s(0), s(1), s(2)).transpose(1, 2).reshape(b1, t3, C);
      }, [t([b1, t3, 3 * C], 252)]);
    });
  });

  it("names the shapes on bad input", () => {
    tidy(() => {
      const q = zeros([1, 2, 4, 8]);
      expect(() => scaledDotProductAttention(q, zeros([1, 2, 4, 7]), zeros([1, 2, 4, 7]))).toThrow(/must both be \[1, 2, 4, 8\]/);
      expect(() => scaledDotProductAttention(q, zeros([1, 2, 3, 8]), zeros([1, 2, 3, 8]))).toThrow(/Tq must be <= Tk/);
      expect(() => scaledDotProductAttention(q, q, q, { attnMask: zeros([1, 4]) })).toThrow(/attnMask must be an int32 key-padding mask \[B, Tk\] = \[1, 4\]/);
    });
  });
});

// ---- leaks, fixtures, SIMD levels ----------------------------------------------------------------

it("forward + backward of every op leaves no tensor or buffer behind", () => {
  const step = () =>
    tidy(() => {
      const x = t([4, 6, 8], 300).requireGrad(), w = t([8], 301).requireGrad(), b = t([8], 302).requireGrad();
      const h = dropout(layerNorm(x, w, b), 0.1, { generator: new Generator(1) });
      const att = scaledDotProductAttention(h.reshape(1, 4, 6, 8), h.reshape(1, 4, 6, 8), h.reshape(1, 4, 6, 8), {
        attnMask: tensor(new Int32Array([1, 1, 1, 1, 0, 0]), { shape: [1, 6] }),
        dropout: 0.2,
        generator: new Generator(2),
      });
      const logits = logSoftmax(softmax(att.reshape(24, 8), 0));
      const loss = crossEntropy(logits, tensor(new Int32Array(24).map((_, i) => (i % 3 ? i % 8 : -100)), { shape: [24] }));
      loss.backward();
      [x, w, b].forEach((p) => p.grad?.dispose());
    });
  step();
  const before = memory().cpu!;
  step();
  expect(memory().cpu).toMatchObject({ bytes: before.bytes, buffers: before.buffers, tensors: before.tensors });
});

const here = dirname(fileURLToPath(import.meta.url));
const fixturePath = join(here, "../fixtures/ops/reference.json");

describe.skipIf(!existsSync(fixturePath))("PyTorch fixtures (test/fixtures/ops/reference.json)", () => {
  // Numbers are float32 values written in shortest form; "NaN" is a string.
  const F = existsSync(fixturePath) ? JSON.parse(readFileSync(fixturePath, "utf8")) : {};
  const flat = (v: unknown): number[] => (Array.isArray(v) ? v.flatMap(flat) : [v === "NaN" ? NaN : Number(v)]);
  const fromJson = (v: unknown, shape?: number[]) => {
    const values = flat(v);
    return tensor(values, { shape: shape ?? [values.length] });
  };

  it("layer_norm: output and gradients", () => {
    tidy(() => {
      const L = F.layer_norm;
      const x = fromJson(L.x, [3, 8]).requireGrad(), w = fromJson(L.weight).requireGrad(), b = fromJson(L.bias).requireGrad();
      const y = layerNorm(x, w, b, L.eps);
      expectClose(y, flat(L.y), 1e-6);
      y.backward(fromJson(L.grad_y, [3, 8]));
      expectClose(x.grad!, flat(L.grad_x), 1e-5);
      expectClose(w.grad!, flat(L.grad_weight), 1e-6);
      expectClose(b.grad!, flat(L.grad_bias), 1e-6);
    });
  });

  it("scaled_dot_product_attention (is_causal): output and gradients", () => {
    tidy(() => {
      const S = F.sdpa_causal;
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

  it("cross_entropy: mean, sum, none, all-ignored and the gradient", () => {
    tidy(() => {
      const C = F.cross_entropy;
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

  it("gelu_new (elementwise gelu) matches transformers' NewGELUActivation", () => {
    tidy(() => {
      const G = F.gelu_new;
      const x = fromJson(G.x).requireGrad();
      const y = gelu(x);
      expectClose(y, flat(G.y), 1e-6);
      sum(mul(y, 1)).backward();
      expectClose(x.grad!, flat(G.dy_dx), 1e-6);
    });
  });
});

// The exp behind softmax, cross-entropy, attention and GELU has AVX-512, AVX2 and scalar versions
// (nn_rows.cc), picked once per process from LOWRANK_SIMD: the first test runs at this process's
// level, the second re-runs it in child processes at the lower ones.
const simdTest = "exp-based kernels are accurate at this SIMD level";
it(simdTest, () => {
  tidy(() => {
    // Row lengths around the 8- and 16-wide vectors and their tails; arguments from 0 down to -87
    // (the last normal float) element by element, plus -inf (exactly 0) and huge ones (shifted away).
    for (const n of [1, 7, 8, 9, 15, 16, 17, 33, 88]) {
      const row = Array.from({ length: n }, (_, j) => -j);
      const ref = softmaxRef(row, n, false);
      const y = arr(softmax(tensor(row)));
      const worst = Math.max(...y.map((v, j) => Math.abs(v - ref[j]!) / ref[j]!));
      expect(worst, `softmax of [0, -1, ..., ${1 - n}]: worst element-wise relative error`).toBeLessThan(1e-5);
      expectClose(logSoftmax(tensor(row)), softmaxRef(row, n, true), 1e-6);
    }
    expect(arr(softmax(tensor([3e38, -Infinity, 3e38, 0])))).toEqual([0.5, 0, 0.5, 0]);
    const logits = t([3, 1001], 60, 20).requireGrad(), tg = [1000, 0, 517];
    const ref = crossEntropyRef(arr(logits), 1001, tg, -100);
    const loss = crossEntropy(logits, tensor(new Int32Array(tg), { shape: [3] }), { reduction: "sum" });
    expectClose([loss.item()], [ref.sum], 1e-5);
    loss.backward();
    expectClose(logits.grad!, ref.gradSum, 1e-5);
    // GELU goes through the same exp (x·sigmoid(2u)): element-wise error against float64 over
    // -12..12 (vector bodies and tails), and the saturated ends (exactly x, and -0 for large -x).
    const gx = Array.from({ length: 241 }, (_, j) => -12 + 0.1 * j);
    const geluRef = (v: number) => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3)));
    const geluGradRef = (v: number) => {
      const k = Math.sqrt(2 / Math.PI), th = Math.tanh(k * (v + 0.044715 * v ** 3));
      return 0.5 * (1 + th) + 0.5 * v * (1 - th * th) * k * (1 + 3 * 0.044715 * v * v);
    };
    const gIn = tensor(gx).requireGrad();
    const gy = arr(gelu(gIn));
    gx.forEach((v, j) => expect(Math.abs(gy[j]! - geluRef(v)), `gelu(${v})`).toBeLessThanOrEqual(2e-6 * Math.max(1, Math.abs(v))));
    sum(gelu(gIn)).backward();
    const gg = arr(gIn.grad!);
    gx.forEach((v, j) => expect(Math.abs(gg[j]! - geluGradRef(v)), `gelu'(${v})`).toBeLessThanOrEqual(2e-6 * Math.max(1, Math.abs(v))));
    expect(arr(gelu(tensor([100, -100, 0, -3e38])))).toEqual([100, -0, 0, -0]);
    // Dropout's 16-lane Philox (AVX-512): lanes, tails and the carry into the counter's high word.
    const seed = 0xfeed_beef_1234n, offset = 2n ** 32n - 7n;
    const x = t([3, 53], 61, 1, 2);
    const kept = arr(dropout(x, 0.5, { generator: new Generator(seed).setState({ seed: String(seed), offset: String(offset) }) })).map((v) => v !== 0);
    expect(kept).toEqual(kept.map((_, i) => philoxKeep(seed, offset, BigInt(i), 0.5)));
  });
  const drop = { p: 0.2, seed: 5n, offset: 2n ** 32n - 100n };
  for (const [i, c] of ([
    { B: 1, H: 2, Tq: 70, Tk: 70, D: 9, causal: true },
    { B: 2, H: 1, Tq: 5, Tk: 7, D: 3, causal: true, keep: [0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0], dropout: drop },
  ] as AttnCase[]).entries()) {
    tidy(() => {
      const q = t([c.B, c.H, c.Tq, c.D], 70 + i, 2).requireGrad(), k = t([c.B, c.H, c.Tk, c.D], 80 + i, 2).requireGrad();
      const v = t([c.B, c.H, c.Tk, c.D], 90 + i).requireGrad(), g = t([c.B, c.H, c.Tq, c.D], 100 + i);
      const ref = attentionRef(c, arr(q), arr(k), arr(v), arr(g));
      const out = scaledDotProductAttention(q, k, v, {
        attnMask: c.keep ? tensor(new Int32Array(c.keep), { shape: [c.B, c.Tk] }) : null,
        dropout: c.dropout?.p,
        generator: new Generator(0).setState({ seed: String(c.dropout?.seed ?? 0), offset: String(c.dropout?.offset ?? 0) }),
      });
      expectClose(out, ref.out, 1e-5);
      out.backward(g);
      expectClose(q.grad!, ref.dq, 1e-4);
      expectClose(k.grad!, ref.dk, 1e-4);
      expectClose(v.grad!, ref.dv, 1e-4);
    });
  }
});

const levels = ["avx512", "avx2", "scalar"].filter((l, i, all) => i > all.indexOf(info().simd));
it.skipIf(process.env.LOWRANK_SIMD !== undefined || levels.length === 0)(`the same at SIMD levels ${levels.join(", ")} (child processes)`, () => {
  const vitest = join(dirname(createRequire(import.meta.url).resolve("vitest/package.json")), "vitest.mjs");
  for (const level of levels) {
    const r = spawnSync(process.execPath, [vitest, "run", "test/ops/nn.test.ts", "-t", simdTest], {
      env: { ...process.env, LOWRANK_SIMD: level, NO_COLOR: "1" },
      encoding: "utf8",
    });
    expect(r.status, `LOWRANK_SIMD=${level}:\n${r.stdout}\n${r.stderr}`).toBe(0);
    expect(r.stdout).toMatch(/1 passed/);
  }
});
