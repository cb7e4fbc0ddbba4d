// float64 references and inputs shared by the row-wise op tests (layernorm, softmax, crossentropy,
// dropout, attention, and the SIMD-level checks of rows.test.ts).
import { tensor, type Tensor } from "../../lib/index.js";
import { randomValues } from "../helpers.js";

export const size = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);
export const t = (shape: number[], seed: number, scale = 1, shift = 0) =>
  tensor(randomValues(size(shape), seed).map((v) => v * scale + shift), { shape });
export const arr = (x: Tensor) => Array.from(x.dataSync());

// ---- float64 references ---------------------------------------------------------------------------

export function layerNormRef(x: number[], C: number, w: number[] | null, b: number[] | null, eps: number, gy?: number[]) {
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

export function rmsNormRef(x: number[], C: number, w: number[] | null, eps: number, gy?: number[]) {
  const N = x.length / C;
  const y: number[] = [], dx: number[] = [], dw = new Array<number>(C).fill(0);
  for (let n = 0; n < N; n++) {
    const row = x.slice(n * C, (n + 1) * C);
    const rstd = 1 / Math.sqrt(row.reduce((a, v) => a + v * v, 0) / C + eps);
    const xhat = row.map((v) => v * rstd);
    xhat.forEach((h, j) => y.push(h * (w ? w[j]! : 1)));
    if (!gy) continue;
    const g = xhat.map((_, j) => gy[n * C + j]! * (w ? w[j]! : 1));
    const gxMean = g.reduce((a, v, j) => a + v * xhat[j]!, 0) / C;
    xhat.forEach((h, j) => {
      dx.push(rstd * (g[j]! - h * gxMean));
      dw[j]! += gy[n * C + j]! * h;
    });
  }
  return { y, dx, dw };
}

export function softmaxRef(x: number[], cols: number, log: boolean): number[] {
  const out: number[] = [];
  for (let r = 0; r < x.length / cols; r++) {
    const row = x.slice(r * cols, (r + 1) * cols);
    const m = Math.max(...row);
    const lse = m + Math.log(row.reduce((a, v) => a + Math.exp(v - m), 0));
    for (const v of row) out.push(log ? v - lse : Math.exp(v - lse));
  }
  return out;
}

export function crossEntropyRef(logits: number[], V: number, targets: number[], ignore: number) {
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

export interface AttnCase {
  B: number; H: number; Tq: number; Tk: number; D: number; causal: boolean; keep?: number[]; scale?: number;
  dropout?: { p: number; seed: bigint; offset: bigint };
  /** Sliding window: query i (at position Tk - Tq + i) also sees only keys j > Tk - Tq + i - window. */
  window?: number;
}

/**
 * Attention in float64, with the masking rules of native/ops/attention.h: causal query i sees keys
 * j <= Tk - Tq + i; padded keys get weight 0; a query whose visible keys are all padded outputs 0
 * and gets no gradient. With dropout, weight (b, h, i, j) is multiplied by M = keep / (1-p) with
 * keep = philoxKeep of element ((b*H + h)*Tq + i)*Tk + j. Tensors are row-major [B, H, T, D].
 *
 * `round` (default none) rounds the weights where precision "bfloat16" rounds them to bf16 for
 * their products (native/cpu/attention.cc): the forward's unnormalized E ∘ M (exp(s - max) · M,
 * the output divided by the sum afterwards), the backward's P ∘ M (for dv) and dS (for dq, dk).
 */
export function attentionRef(c: AttnCase, q: number[], k: number[], v: number[], gout: number[], round: (x: number) => number = (x) => x) {
  const { B, H, Tq, Tk, D } = c;
  const scale = c.scale ?? 1 / Math.sqrt(D);
  const out = new Array<number>(B * H * Tq * D).fill(0);
  const dq = out.slice(), dk = new Array<number>(B * H * Tk * D).fill(0), dv = dk.slice();
  const at = (T: number, b: number, h: number, i: number) => ((b * H + h) * T + i) * D;
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      for (let i = 0; i < Tq; i++) {
        const vis = c.causal ? Tk - Tq + i + 1 : Tk;
        const inWindow = (j: number) => c.window === undefined || j > Tk - Tq + i - c.window;
        const keep = (j: number) => inWindow(j) && (!c.keep || c.keep[b * Tk + j] !== 0);
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
          const kj = at(Tk, b, h, j), dS = round(pj * (dP[j]! - delta) * scale);
          const wOut = round(e[j]! * M[j]!) / z, wDv = round(pj * M[j]!);
          for (let d = 0; d < D; d++) {
            out[qi + d]! += wOut * v[kj + d]!;
            dv[kj + d]! += wDv * gout[qi + d]!;
            dq[qi + d]! += dS * k[kj + d]!;
            dk[kj + d]! += dS * q[qi + d]!;
          }
        });
      }
    }
  }
  return { out, dq, dk, dv };
}

/**
 * Dropout's keep rule of native/core/philox.h in BigInt: element j = offset + i takes word (j / 16) % 4
 * of the Philox4x32-10 block whose counter is 16·(j / 64) + j % 16 (words 0..1) with word 2 = 1.
 */
export function philoxKeep(seed: bigint, offset: bigint, i: bigint, p: number): boolean {
  const M = 0xffffffffn;
  const j = offset + i;
  const c = ((j >> 6n) << 4n) | (j & 15n);
  let [c0, c1, c2, c3] = [c & M, (c >> 32n) & M, 1n, 0n];
  let [k0, k1] = [seed & M, (seed >> 32n) & M];
  for (let r = 0; r < 10; r++) {
    const p0 = 0xd2511f53n * c0, p1 = 0xcd9e8d57n * c2;
    [c0, c1, c2, c3] = [(p1 >> 32n) ^ c1 ^ k0, p1 & M, (p0 >> 32n) ^ c3 ^ k1, p0 & M];
    k0 = (k0 + 0x9e3779b9n) & M;
    k1 = (k1 + 0xbb67ae85n) & M;
  }
  const word = [c0, c1, c2, c3][Number((j >> 4n) & 3n)]!;
  return Number(word >> 8n) / 16777216 >= Math.fround(p);
}
