// The one dense product kernel of lib/linalg, in the form where every operand is read along
// contiguous rows: C += α·X·Yᵀ. A 4×4 block of C stays in local variables (registers) while
// t runs, so each step loads 8 values for 16 multiply-adds; V8 then runs about 4× faster than
// over row-by-row rank-1 updates, which must load and store C for every multiply-add.

/**
 * C[i][j] += α·Σ_{t<k} X[i][t]·Y[j][t] for i < m, j < n, on row-major slices: X[i][t] at
 * x[xo + i·ldx + t], Y[j][t] at y[yo + j·ldy + t], C[i][j] at c[co + i·ldc + j].
 */
export function gemmNT(
  m: number, n: number, k: number, alpha: number,
  x: Float64Array, xo: number, ldx: number,
  y: Float64Array, yo: number, ldy: number,
  c: Float64Array, co: number, ldc: number,
): void {
  const m4 = m - (m % 4), n4 = n - (n % 4);
  for (let i = 0; i < m4; i += 4) {
    const x0 = xo + i * ldx, x1 = x0 + ldx, x2 = x1 + ldx, x3 = x2 + ldx;
    for (let j = 0; j < n4; j += 4) {
      const y0 = yo + j * ldy, y1 = y0 + ldy, y2 = y1 + ldy, y3 = y2 + ldy;
      let c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0;
      let c20 = 0, c21 = 0, c22 = 0, c23 = 0, c30 = 0, c31 = 0, c32 = 0, c33 = 0;
      for (let t = 0; t < k; t++) {
        const a0 = x[x0 + t]!, a1 = x[x1 + t]!, a2 = x[x2 + t]!, a3 = x[x3 + t]!;
        const b0 = y[y0 + t]!, b1 = y[y1 + t]!, b2 = y[y2 + t]!, b3 = y[y3 + t]!;
        c00 += a0 * b0; c01 += a0 * b1; c02 += a0 * b2; c03 += a0 * b3;
        c10 += a1 * b0; c11 += a1 * b1; c12 += a1 * b2; c13 += a1 * b3;
        c20 += a2 * b0; c21 += a2 * b1; c22 += a2 * b2; c23 += a2 * b3;
        c30 += a3 * b0; c31 += a3 * b1; c32 += a3 * b2; c33 += a3 * b3;
      }
      let o = co + i * ldc + j;
      c[o] += alpha * c00; c[o + 1] += alpha * c01; c[o + 2] += alpha * c02; c[o + 3] += alpha * c03;
      o += ldc;
      c[o] += alpha * c10; c[o + 1] += alpha * c11; c[o + 2] += alpha * c12; c[o + 3] += alpha * c13;
      o += ldc;
      c[o] += alpha * c20; c[o + 1] += alpha * c21; c[o + 2] += alpha * c22; c[o + 3] += alpha * c23;
      o += ldc;
      c[o] += alpha * c30; c[o + 1] += alpha * c31; c[o + 2] += alpha * c32; c[o + 3] += alpha * c33;
    }
  }
  // The ragged right columns and bottom rows, one dot product each.
  for (let i = 0; i < m; i++) {
    for (let j = i < m4 ? n4 : 0; j < n; j++) {
      const xi = xo + i * ldx, yj = yo + j * ldy;
      let s = 0;
      for (let t = 0; t < k; t++) s += x[xi + t]! * y[yj + t]!;
      c[co + i * ldc + j] += alpha * s;
    }
  }
}
