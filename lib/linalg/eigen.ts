// Symmetric eigendecomposition: Householder tridiagonalization (LAPACK dsytd2's reflectors),
// then the implicit QL iteration with Wilkinson shifts of EISPACK tql2 (as ported in JAMA),
// O(n³) with a small constant; accurate to about eps·‖A‖ in every eigenvalue.
import { makeReflector, reflectCols, reflectRows, type Reflector } from "./householder.js";
import { checkFinite, type Matrix } from "./matrix.js";

export interface SymmetricEigen {
  /** Eigenvalues, largest first. */
  readonly values: Float64Array;
  /** n×n orthogonal; column j is the unit eigenvector of values[j]. */
  readonly vectors: Matrix;
}

/** Eigenvalues and eigenvectors of a symmetric matrix; only its lower triangle is read (as LAPACK's uplo = "L"). */
export function symmetricEigen(a: Matrix): SymmetricEigen {
  if (a.rows !== a.cols) throw new Error(`symmetricEigen: expects a square matrix, got ${a.rows}×${a.cols}`);
  checkFinite("symmetricEigen", a);
  const n = a.rows;
  const work = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) work[i * n + j] = work[j * n + i] = a.data[i * n + j]!;
  }
  const { d, e, zt } = tridiagonalize(work, n);
  tql2(d, e, zt, n);
  const order = descendingOrder(d);
  const vectors = new Float64Array(n * n);
  order.forEach((src, j) => {
    for (let i = 0; i < n; i++) vectors[i * n + j] = zt[src * n + i]!;
  });
  return { values: Float64Array.from(order, (i) => d[i]!), vectors: { rows: n, cols: n, data: vectors } };
}

/** Indices of v sorted by decreasing value (stable, so ties keep their order). */
export function descendingOrder(v: Float64Array): number[] {
  return Array.from(v.keys()).sort((i, j) => v[j]! - v[i]! || i - j);
}

/**
 * A = Q·T·Qᵀ with T tridiagonal (diagonal d, e[i] coupling i and i+1, e[n−1] = 0). Reflector k
 * zeroes column k below the subdiagonal and is applied on both sides of the trailing block.
 * Returns zt = Qᵀ, whose rows the QL rotations then turn into eigenvectors.
 */
function tridiagonalize(work: Float64Array, n: number): { d: Float64Array; e: Float64Array; zt: Float64Array } {
  const d = new Float64Array(n), e = new Float64Array(n);
  const w = new Float64Array(n);
  const reflectors: Reflector[] = [];
  for (let k = 0; k < n - 1; k++) {
    const at = (k + 1) * n + k;
    const reflector = makeReflector(work, at, n, n - k - 1, k + 1);
    reflectRows(reflector, work, n, k + 1, n, w);
    reflectCols(reflector, work, n, k + 1, n);
    reflectors.push(reflector);
    d[k] = work[k * n + k]!;
    e[k] = work[at]!;
  }
  if (n > 0) d[n - 1] = work[n * n - 1]!;
  // Qᵀ = H_{n−2}⋯H₁·H₀ (each H is symmetric): apply H₀ first to the identity.
  const zt = new Float64Array(n * n);
  for (let i = 0; i < n; i++) zt[i * n + i] = 1;
  for (const r of reflectors) reflectRows(r, zt, n, 0, n, w);
  return { d, e, zt };
}

/**
 * EISPACK tql2 (JAMA's port): implicit QL with a Wilkinson shift on the unreduced block starting
 * at l, deflating when |e[m]| ≤ eps·max(|d|+|e|) so far. Each plane rotation on (i, i+1) is
 * applied to rows i and i+1 of zt (contiguous, unlike the column updates of the original).
 */
function tql2(d: Float64Array, e: Float64Array, zt: Float64Array, n: number): void {
  const eps = 2 ** -52;
  let f = 0, tst1 = 0;
  for (let l = 0; l < n; l++) {
    tst1 = Math.max(tst1, Math.abs(d[l]!) + Math.abs(e[l]!));
    let m = l;
    while (m < n - 1 && Math.abs(e[m]!) > eps * tst1) m++;
    let iterations = 0;
    while (m > l && Math.abs(e[l]!) > eps * tst1) {
      if (++iterations > 60) throw new Error(`symmetricEigen: the QL iteration did not converge for eigenvalue ${l} of ${n}`);
      // Wilkinson shift from the leading 2×2 of the block.
      let g = d[l]!;
      let p = (d[l + 1]! - g) / (2 * e[l]!);
      let r = Math.hypot(p, 1);
      if (p < 0) r = -r;
      d[l] = e[l]! / (p + r);
      d[l + 1] = e[l]! * (p + r);
      const dl1 = d[l + 1]!;
      let h = g - d[l]!;
      for (let i = l + 2; i < n; i++) d[i] -= h;
      f += h;
      // Implicit QL sweep from m up to l.
      p = d[m]!;
      let c = 1, c2 = 1, c3 = 1, s = 0, s2 = 0;
      const el1 = e[l + 1]!;
      for (let i = m - 1; i >= l; i--) {
        c3 = c2;
        c2 = c;
        s2 = s;
        g = c * e[i]!;
        h = c * p;
        r = Math.hypot(p, e[i]!);
        e[i + 1] = s * r;
        s = e[i]! / r;
        c = p / r;
        p = c * d[i]! - s * g;
        d[i + 1] = h + s * (c * g + s * d[i]!);
        const zi = i * n, zj = zi + n;
        for (let k = 0; k < n; k++) {
          const t = zt[zj + k]!;
          zt[zj + k] = s * zt[zi + k]! + c * t;
          zt[zi + k] = c * zt[zi + k]! - s * t;
        }
      }
      p = (-s * s2 * c3 * el1 * e[l]!) / dl1;
      e[l] = s * p;
      d[l] = c * p;
    }
    d[l] = d[l]! + f;
    e[l] = 0;
  }
}
