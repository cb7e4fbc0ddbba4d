// Householder QR with LAPACK's conventions, blocked like dgeqrf (panels factored by dgeqr2, the
// rest updated with the compact-WY form of dlarft + dlarfb), so the factors equal
// torch.linalg.qr's (mode "reduced"), signs included: torch calls LAPACK geqrf/orgqr, whose
// reflectors make R's diagonal −sign(pivot)·‖column‖. PEFT's OLoRA init uses Q and R as they
// come, so matching the signs is what makes our OLoRA factors equal PEFT's.
import { applyProduct, makeReflector, reflectCols, type Reflector } from "./householder.js";
import { gemmNT } from "./kernels.js";
import { transpose, type Matrix } from "./matrix.js";

/** A factored m×n matrix: A = Q·R with Q = H₀·H₁⋯H_{k−1}, k = min(m, n). */
export interface FactoredQR {
  readonly rows: number;
  readonly cols: number;
  /** k×n, upper trapezoidal. */
  readonly R: Matrix;
  readonly reflectors: readonly Reflector[];
}

/** Panel width: wide enough that most of the work runs in gemmNT, narrow enough that V·T stays small. */
const BLOCK = 32;

/** LAPACK dgeqrf on a copy of a. */
export function householderQR(a: Matrix): FactoredQR {
  const m = a.rows, n = a.cols, k = Math.min(m, n);
  // Column j of A is row j of at, so each reflector and each update reads contiguous memory.
  const at = transpose(a).data;
  const reflectors: Reflector[] = [];
  for (let j0 = 0; j0 < k; j0 += BLOCK) {
    const end = Math.min(j0 + BLOCK, k);
    for (let j = j0; j < end; j++) {
      const h = makeReflector(at, j * m + j, 1, m - j, j);
      reflectCols(h, at, m, j + 1, end);
      reflectors.push(h);
    }
    if (end < n) applyBlockTransposed(reflectors.slice(j0, end), at, m, end, n);
  }
  const r = new Float64Array(k * n);
  for (let j = 0; j < n; j++) {
    for (let i = 0; i <= Math.min(j, k - 1); i++) r[i * n + j] = at[j * m + i]!;
  }
  return { rows: m, cols: n, R: { rows: k, cols: n, data: r }, reflectors };
}

/**
 * Applies Hᵀ = H_{b−1}⋯H₁·H₀ to columns c0 … c1−1 of A, held as rows of `at` (length m). With
 * H = H₀⋯H_{b−1} = I − V·T·Vᵀ (dlarft, forward and columnwise), Hᵀ·C = C − V·(Tᵀ·(Vᵀ·C)),
 * computed transposed so both large products are gemmNT calls (dlarfb).
 */
function applyBlockTransposed(hs: readonly Reflector[], at: Float64Array, m: number, c0: number, c1: number): void {
  const b = hs.length, lo = hs[0]!.lo, mp = m - lo, nc = c1 - c0;
  // V as rows (b×mp) and as columns (mp×b); reflector t starts t rows below the block's first.
  const vRows = new Float64Array(b * mp), vCols = new Float64Array(mp * b);
  hs.forEach((h, t) => {
    vRows.set(h.v, t * mp + t);
    for (let i = 0; i < h.v.length; i++) vCols[(t + i) * b + t] = h.v[i]!;
  });
  // T upper triangular: T[i][i] = τᵢ, T[0:i, i] = −τᵢ·T[0:i, 0:i]·(V[:, 0:i]ᵀ·vᵢ).
  const tm = new Float64Array(b * b), z = new Float64Array(b);
  for (let i = 0; i < b; i++) {
    const tau = hs[i]!.tau;
    for (let t = 0; t < i; t++) {
      let dot = 0;
      for (let q = i; q < mp; q++) dot += vRows[t * mp + q]! * vRows[i * mp + q]!;
      z[t] = -tau * dot;
    }
    for (let t = 0; t < i; t++) {
      let s = 0;
      for (let q = t; q < i; q++) s += tm[t * b + q]! * z[q]!;
      tm[t * b + i] = s;
    }
    tm[i * b + i] = tau;
  }
  // W = Cᵀ·V (nc×b), then W·T = (Tᵀ·Vᵀ·C)ᵀ, then Cᵀ −= (W·T)·Vᵀ.
  const w = new Float64Array(nc * b);
  gemmNT(nc, b, mp, 1, at, c0 * m + lo, m, vRows, 0, mp, w, 0, b);
  const wt = new Float64Array(nc * b);
  for (let c = 0; c < nc; c++) {
    for (let s = 0; s < b; s++) {
      let acc = 0;
      for (let t = 0; t <= s; t++) acc += w[c * b + t]! * tm[t * b + s]!;
      wt[c * b + s] = acc;
    }
  }
  gemmNT(nc, mp, b, -1, wt, 0, b, vCols, 0, b, at, c0 * m + lo, m);
}

/** The first `cols` columns of Q, i.e. Q·[I; 0] (dorg2r). */
export function factorQ(f: FactoredQR, cols = Math.min(f.rows, f.cols)): Matrix {
  const out = new Float64Array(f.rows * cols);
  for (let i = 0; i < cols; i++) out[i * cols + i] = 1;
  applyProduct(f.reflectors, out, cols);
  return { rows: f.rows, cols, data: out };
}

/** Thin QR, A = Q·R with Q m×k (orthonormal columns) and R k×n upper trapezoidal, k = min(m, n). */
export function qr(a: Matrix): { Q: Matrix; R: Matrix } {
  const f = householderQR(a);
  return { Q: factorQ(f), R: f.R };
}
