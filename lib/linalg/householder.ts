// Householder reflectors in LAPACK's conventions (dlarfg to make one, dlarf to apply one),
// shared by the QR, bidiagonal and tridiagonal reductions. A reflector is H = I − τ·v·vᵀ acting
// on indices lo … lo + v.length − 1, with v[0] = 1. Each keeps its own contiguous copy of v, so
// applying it never reads a strided column.
//
// Norms are plain sums of squares, without dnrm2's scaling: every matrix here comes from float32,
// float16 or bfloat16 tensors (|x| < 2¹²⁸, nonzero |x| ≥ 2⁻¹⁴⁹), and orthogonal transformations
// keep entries within the matrix norm, so squares cannot overflow or underflow a double.

export interface Reflector {
  readonly lo: number;
  readonly v: Float64Array;
  readonly tau: number;
}

/**
 * LAPACK dlarfg on x = data[at + t·stride], t < len, an index range starting at `lo`: returns H
 * with H·x = β·e₀ and writes β·e₀ over x. β = −sign(x₀)·‖x‖ (so R's diagonal signs are LAPACK's,
 * hence torch.linalg.qr's), τ = (β − x₀)/β, v = x/(x₀ − β). When x's tail is already zero,
 * H = I (τ = 0) and β = x₀ keeps its sign, as in dlarfg.
 */
export function makeReflector(data: Float64Array, at: number, stride: number, len: number, lo: number): Reflector {
  const v = new Float64Array(len);
  v[0] = 1;
  const alpha = data[at]!;
  let tail = 0;
  for (let t = 1; t < len; t++) {
    const x = data[at + t * stride]!;
    tail += x * x;
  }
  if (tail === 0) return { lo, v, tau: 0 };
  const norm = Math.sqrt(alpha * alpha + tail);
  const beta = alpha >= 0 ? -norm : norm;
  const scale = 1 / (alpha - beta);
  for (let t = 1; t < len; t++) {
    v[t] = data[at + t * stride]! * scale;
    data[at + t * stride] = 0;
  }
  data[at] = beta;
  return { lo, v, tau: (beta - alpha) / beta };
}

/**
 * x[lo:hi, c0:c1] ← H·x[lo:hi, c0:c1] for a row-major x with `ld` columns: w = τ·vᵀx, then
 * x −= v·w, two rows per pass so w is loaded once for both. `w` is scratch (≥ c1 values).
 */
export function reflectRows(r: Reflector, x: Float64Array, ld: number, c0: number, c1: number, w: Float64Array): void {
  const { lo, v, tau } = r;
  const len = v.length;
  if (tau === 0) return;
  w.fill(0, c0, c1);
  let t = 0;
  for (; t + 1 < len; t += 2) {
    const v0 = v[t]!, v1 = v[t + 1]!, o0 = (lo + t) * ld, o1 = o0 + ld;
    for (let c = c0; c < c1; c++) w[c] += v0 * x[o0 + c]! + v1 * x[o1 + c]!;
  }
  if (t < len) {
    const v0 = v[t]!, o0 = (lo + t) * ld;
    for (let c = c0; c < c1; c++) w[c] += v0 * x[o0 + c]!;
  }
  for (let c = c0; c < c1; c++) w[c] *= tau;
  for (t = 0; t + 1 < len; t += 2) {
    const v0 = v[t]!, v1 = v[t + 1]!, o0 = (lo + t) * ld, o1 = o0 + ld;
    for (let c = c0; c < c1; c++) {
      const wc = w[c]!;
      x[o0 + c] -= v0 * wc;
      x[o1 + c] -= v1 * wc;
    }
  }
  if (t < len) {
    const v0 = v[t]!, o0 = (lo + t) * ld;
    for (let c = c0; c < c1; c++) x[o0 + c] -= v0 * w[c]!;
  }
}

/**
 * x[r0:r1, lo:hi] ← x[r0:r1, lo:hi]·H for a row-major x with `ld` columns: per row a dot product
 * with v and an axpy, two rows per pass so v is loaded once for both.
 */
export function reflectCols(r: Reflector, x: Float64Array, ld: number, r0: number, r1: number): void {
  const { lo, v, tau } = r;
  const len = v.length;
  if (tau === 0) return;
  let i = r0;
  for (; i + 1 < r1; i += 2) {
    const o0 = i * ld + lo, o1 = o0 + ld;
    let d0 = 0, d1 = 0;
    for (let t = 0; t < len; t++) {
      const vt = v[t]!;
      d0 += x[o0 + t]! * vt;
      d1 += x[o1 + t]! * vt;
    }
    d0 *= tau;
    d1 *= tau;
    for (let t = 0; t < len; t++) {
      const vt = v[t]!;
      x[o0 + t] -= d0 * vt;
      x[o1 + t] -= d1 * vt;
    }
  }
  if (i < r1) {
    const o = i * ld + lo;
    let dot = 0;
    for (let t = 0; t < len; t++) dot += x[o + t]! * v[t]!;
    dot *= tau;
    for (let t = 0; t < len; t++) x[o + t] -= dot * v[t]!;
  }
}

/** x ← H₀·H₁⋯H_{k−1}·x (the reflectors applied last to first, as LAPACK dorm2r does for Q·x). */
export function applyProduct(reflectors: readonly Reflector[], x: Float64Array, ld: number): void {
  const w = new Float64Array(ld);
  for (let j = reflectors.length - 1; j >= 0; j--) reflectRows(reflectors[j]!, x, ld, 0, ld, w);
}
