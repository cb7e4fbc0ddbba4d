// The SVD of a product B·A (d×r times r×k, r small: a LoRA update) without forming the d×k
// matrix: with B = Q_B·R_B and Aᵀ = Q_A·R_A (thin QRs), B·A = Q_B·(R_B·R_Aᵀ)·Q_Aᵀ, and since
// Q_B and Q_A have orthonormal columns, the r×r core M = R_B·R_Aᵀ has the same nonzero singular
// values, and M = U_M·S·V_Mᵀ gives B·A = (Q_B·U_M)·S·(Q_A·V_M)ᵀ. Cost O((d + k)·r²), exact
// up to rounding (no Gram matrix is formed, so small singular values stay accurate).
import { applyProduct } from "./householder.js";
import { matmul, transpose, type Matrix } from "./matrix.js";
import { householderQR, type FactoredQR } from "./qr.js";
import { singularValues, svd, type SVD, type SvdOptions } from "./svd.js";

/** QRs of B and Aᵀ and their core R_B·R_Aᵀ. */
function core(op: string, b: Matrix, a: Matrix): { qb: FactoredQR; qa: FactoredQR; m: Matrix } {
  if (b.cols !== a.rows) throw new Error(`${op}: B is ${b.rows}×${b.cols} and A is ${a.rows}×${a.cols}: B's columns must equal A's rows`);
  const qb = householderQR(b), qa = householderQR(transpose(a));
  return { qb, qa, m: matmul(qb.R, transpose(qa.R)) };
}

/**
 * The singular values of B·A, largest first: min(d, r, k) of them (B·A has rank ≤ r; its other
 * min(d, k) − min(d, r, k) singular values are exactly zero and are not listed).
 */
export function lowRankSingularValues(b: Matrix, a: Matrix): Float64Array {
  return singularValues(core("lowRankSingularValues", b, a).m);
}

/** The thin SVD of B·A (U d×p, V k×p; p = min(d, r, k), or options.k), conventions as svd's. */
export function lowRankSvd(b: Matrix, a: Matrix, options: SvdOptions = {}): SVD {
  const { qb, qa, m } = core("lowRankSvd", b, a);
  const f = svd(m, options);
  return { U: lift(qb, f.U), S: f.S, V: lift(qa, f.V) };
}

/** Q·[X; 0] for a factored Q (rows × x.rows) and x with x.rows ≤ rows. */
function lift(q: FactoredQR, x: Matrix): Matrix {
  const out = new Float64Array(q.rows * x.cols);
  out.set(x.data);
  applyProduct(q.reflectors, out, x.cols);
  return { rows: q.rows, cols: x.cols, data: out };
}
