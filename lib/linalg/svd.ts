// Singular value decomposition by Golub–Kahan–Reinsch: Householder reduction to upper-bidiagonal
// form (LAPACK dgebd2), preceded by a (blocked) QR factorization when the matrix is tall enough
// for that to save work (Chan's R-bidiagonalization; LAPACK's dgesvd switches near m = 1.6n),
// then implicit-shift QR sweeps on the bidiagonal (LINPACK dsvdc, as ported in JAMA). Backward
// stable: every singular value is accurate to about eps·σ₁, like LAPACK's (no Gram matrix is
// formed, so values far below √eps·σ₁ keep that absolute accuracy).
//
// Vectors: instead of accumulating every plane rotation into full n×n matrices, the sweeps record
// their rotations and replay them, last to first, on only the k columns asked for. For PiSSA's
// top-r triplets this saves most of the work; for k = min(m, n) it costs what accumulation does.
import { applyProduct, makeReflector, reflectCols, reflectRows, type Reflector } from "./householder.js";
import { descendingOrder } from "./eigen.js";
import { checkFinite, transpose, type Matrix } from "./matrix.js";
import { householderQR } from "./qr.js";

export interface SVD {
  /** m×p, orthonormal columns (left singular vectors). */
  readonly U: Matrix;
  /** p singular values, largest first, ≥ 0. */
  readonly S: Float64Array;
  /** n×p, orthonormal columns (right singular vectors): A ≈ U·diag(S)·Vᵀ. */
  readonly V: Matrix;
}

export interface SvdOptions {
  /** Keep only the k largest singular triplets (default min(m, n)): the truncated SVD. */
  readonly k?: number;
}

/**
 * The thin SVD A = U·diag(S)·Vᵀ (p = min(m, n) triplets, or the top k). Each (u, v) pair is
 * unique only up to a common sign (and within a subspace for repeated singular values), so
 * vectors can differ from LAPACK's by such a sign; U·diag(S)·Vᵀ and |u|, |v| do not.
 */
export function svd(a: Matrix, options: SvdOptions = {}): SVD {
  checkFinite("svd", a);
  const p = Math.min(a.rows, a.cols);
  const k = options.k ?? p;
  if (!Number.isInteger(k) || k < 0 || k > p) throw new Error(`svd: k must be an integer in [0, ${p}] for a ${a.rows}×${a.cols} matrix, got ${k}`);
  if (a.rows < a.cols) {
    const t = svd(transpose(a), options);
    return { U: t.V, S: t.S, V: t.U };
  }
  const m = a.rows, n = a.cols;
  const b = bidiagonalize(a);
  const uLog = new RotationLog(), vLog = new RotationLog();
  const vSigns = new Float64Array(n).fill(1);
  bidiagonalQR(b.d, b.e, { uLog, vLog, vSigns });
  const order = descendingOrder(b.d).slice(0, k);
  // U = Q_qr·Q_left·U_bd[:, order]: start from the chosen unit vectors, replay, then reflect.
  const u = new Float64Array(m * k);
  const v = new Float64Array(n * k);
  order.forEach((i, c) => {
    u[i * k + c] = 1;
    v[i * k + c] = vSigns[i]!;
  });
  uLog.replay(u, k);
  applyProduct(b.left, u, k);
  if (b.qr) applyProduct(b.qr, u, k);
  vLog.replay(v, k);
  applyProduct(b.right, v, k);
  return { U: { rows: m, cols: k, data: u }, S: Float64Array.from(order, (i) => b.d[i]!), V: { rows: n, cols: k, data: v } };
}

/** The min(m, n) singular values of a, largest first (the SVD without its vectors: O(mn²) + O(n²)). */
export function singularValues(a: Matrix): Float64Array {
  checkFinite("singularValues", a);
  const { d, e } = bidiagonalize(a.rows < a.cols ? transpose(a) : a);
  bidiagonalQR(d, e, null);
  return Float64Array.from(descendingOrder(d), (i) => d[i]!);
}

interface Bidiagonal {
  /** Diagonal (n) and superdiagonal (e[i] couples i and i+1; e[n−1] = 0) of B = Q_leftᵀ·A·Q_right. */
  readonly d: Float64Array;
  readonly e: Float64Array;
  readonly left: readonly Reflector[];
  readonly right: readonly Reflector[];
  /** The preliminary QR's reflectors, applied after `left`, when A was reduced through R. */
  readonly qr: readonly Reflector[] | null;
}

/**
 * Reduces an m×n matrix with m ≥ n to upper-bidiagonal form. For m ≥ 5n/3 it first factors
 * A = Q·R and reduces the n×n R instead: 2mn² + 2n³ flops instead of 4mn² − 4n³/3, fewer from
 * m = 5n/3 on, and the QR's share runs in the blocked kernel.
 */
function bidiagonalize(a: Matrix): Bidiagonal {
  const n = a.cols;
  let m = a.rows, data: Float64Array, qr: readonly Reflector[] | null = null;
  if (3 * m >= 5 * n) {
    const f = householderQR(a);
    qr = f.reflectors;
    data = f.R.data;
    m = n;
  } else {
    data = a.data.slice();
  }
  const d = new Float64Array(n), e = new Float64Array(n);
  const w = new Float64Array(n);
  const left: Reflector[] = [], right: Reflector[] = [];
  for (let j = 0; j < n; j++) {
    // dgebd2: a left reflector zeroes column j below the diagonal ...
    const at = j * n + j;
    const l = makeReflector(data, at, n, m - j, j);
    reflectRows(l, data, n, j + 1, n, w);
    left.push(l);
    d[j] = data[at]!;
    if (j + 1 === n) break;
    // ... and a right reflector zeroes row j right of the superdiagonal.
    const rat = at + 1;
    const r = makeReflector(data, rat, 1, n - j - 1, j + 1);
    reflectCols(r, data, n, j + 1, m);
    right.push(r);
    e[j] = data[rat]!;
  }
  return { d, e, left, right, qr };
}

/** Plane rotations in the order applied (each U ← U·G on columns i, j), for replay on chosen columns. */
class RotationLog {
  private planes = new Int32Array(2048);
  private cs = new Float64Array(2048);
  private count = 0;

  /** Records G with (U·G)[:, i] = c·U[:, i] + s·U[:, j] and (U·G)[:, j] = −s·U[:, i] + c·U[:, j]. */
  push(i: number, j: number, c: number, s: number): void {
    if (2 * this.count === this.planes.length) {
      const planes = new Int32Array(2 * this.planes.length), cs = new Float64Array(2 * this.cs.length);
      planes.set(this.planes);
      cs.set(this.cs);
      this.planes = planes;
      this.cs = cs;
    }
    const t = 2 * this.count++;
    this.planes[t] = i;
    this.planes[t + 1] = j;
    this.cs[t] = c;
    this.cs[t + 1] = s;
  }

  /** x ← G₁·G₂⋯G_N·x for a row-major x with `cols` columns (rotations on its rows, last first). */
  replay(x: Float64Array, cols: number): void {
    const { planes, cs } = this;
    for (let t = 2 * (this.count - 1); t >= 0; t -= 2) {
      const xi = planes[t]! * cols, xj = planes[t + 1]! * cols, c = cs[t]!, s = cs[t + 1]!;
      for (let q = 0; q < cols; q++) {
        const a = x[xi + q]!, b = x[xj + q]!;
        x[xi + q] = c * a - s * b;
        x[xj + q] = s * a + c * b;
      }
    }
  }
}

interface VectorLogs {
  readonly uLog: RotationLog;
  readonly vLog: RotationLog;
  /** −1 where a converged value was negative and V's column must be negated to make it positive. */
  readonly vSigns: Float64Array;
}

/** The rotation that maps (f, g) to (r, 0): c = f/r, s = g/r (the identity when both are zero). */
function givens(f: number, g: number): [c: number, s: number, r: number] {
  const r = Math.hypot(f, g);
  return r === 0 ? [1, 0, 0] : [f / r, g / r, r];
}

/**
 * LINPACK dsvdc's iteration (JAMA's port) on the bidiagonal (d, e): finds the trailing unreduced
 * block, then either deflates a negligible diagonal entry by rotations (cases 1 and 2), takes one
 * implicit QR step with the shift from the trailing 2×2 of BᵀB (case 3), or accepts a converged
 * value (case 4). On return d holds the singular values (unsorted, ≥ 0).
 */
function bidiagonalQR(d: Float64Array, e: Float64Array, logs: VectorLogs | null): void {
  const n = d.length;
  const eps = 2 ** -52, tiny = 2 ** -966;
  const maxSteps = Math.max(30, 6 * n * n);
  let steps = 0;
  let p = n;
  while (p > 0) {
    // e[k] negligible (or k = −1) and the block k+1 … p−1 unreduced.
    let k = p - 2;
    for (; k >= 0; k--) {
      if (Math.abs(e[k]!) <= tiny + eps * (Math.abs(d[k]!) + Math.abs(d[k + 1]!))) {
        e[k] = 0;
        break;
      }
    }
    if (k === p - 2) {
      // Case 4: d[p−1] has converged; make it non-negative.
      if (d[p - 1]! < 0) {
        d[p - 1] = -d[p - 1]!;
        if (logs) logs.vSigns[p - 1] = -logs.vSigns[p - 1]!;
      }
      p--;
      continue;
    }
    let ks = p - 1;
    for (; ks > k; ks--) {
      const t = Math.abs(e[ks]!) + (ks !== k + 1 ? Math.abs(e[ks - 1]!) : 0);
      if (Math.abs(d[ks]!) <= tiny + eps * t) {
        d[ks] = 0;
        break;
      }
    }
    if (ks === p - 1) {
      // Case 1: d[p−1] is negligible; chase e[p−2] up the block with rotations from the right.
      let f = e[p - 2]!;
      e[p - 2] = 0;
      for (let j = p - 2; j > k; j--) {
        const [c, s, r] = givens(d[j]!, f);
        d[j] = r;
        if (j !== k + 1) {
          f = -s * e[j - 1]!;
          e[j - 1] = c * e[j - 1]!;
        }
        logs?.vLog.push(j, p - 1, c, s);
      }
    } else if (ks > k) {
      // Case 2: d[ks] is negligible; chase e[ks] down the block with rotations from the left.
      let f = e[ks]!;
      e[ks] = 0;
      for (let j = ks + 1; j < p; j++) {
        const [c, s, r] = givens(d[j]!, f);
        d[j] = r;
        f = -s * e[j]!;
        e[j] = c * e[j]!;
        logs?.uLog.push(j, ks, c, s);
      }
    } else {
      // Case 3: one implicit QR step on the block lo … p−1.
      if (++steps > maxSteps) throw new Error(`svd: the bidiagonal QR iteration did not converge (n = ${n})`);
      const lo = k + 1;
      const scale = Math.max(Math.abs(d[p - 1]!), Math.abs(d[p - 2]!), Math.abs(e[p - 2]!), Math.abs(d[lo]!), Math.abs(e[lo]!));
      const sp = d[p - 1]! / scale, spm1 = d[p - 2]! / scale, epm1 = e[p - 2]! / scale;
      const sk = d[lo]! / scale, ek = e[lo]! / scale;
      const b = ((spm1 + sp) * (spm1 - sp) + epm1 * epm1) / 2;
      const cc = sp * epm1 * (sp * epm1);
      let shift = 0;
      if (b !== 0 || cc !== 0) {
        shift = Math.sqrt(b * b + cc);
        if (b < 0) shift = -shift;
        shift = cc / (b + shift);
      }
      let f = (sk + sp) * (sk - sp) + shift;
      let g = sk * ek;
      for (let j = lo; j < p - 1; j++) {
        let [c, s, r] = givens(f, g);
        if (j !== lo) e[j - 1] = r;
        f = c * d[j]! + s * e[j]!;
        e[j] = c * e[j]! - s * d[j]!;
        g = s * d[j + 1]!;
        d[j + 1] = c * d[j + 1]!;
        logs?.vLog.push(j, j + 1, c, s);
        [c, s, r] = givens(f, g);
        d[j] = r;
        f = c * e[j]! + s * d[j + 1]!;
        d[j + 1] = -s * e[j]! + c * d[j + 1]!;
        g = s * e[j + 1]!;
        e[j + 1] = c * e[j + 1]!;
        logs?.uLog.push(j, j + 1, c, s);
      }
      e[p - 2] = f;
    }
  }
}
