import { describe, expect, it } from "vitest";
import { matmul, matrix, qr, singularValues, symmetricEigen, transpose, type Matrix } from "../../lib/linalg/index.js";
import { orthogonalityError, randomMatrix, relError } from "./util.js";

/** The symmetric part (A + Aᵀ)/2 of a random matrix. */
function randomSymmetric(n: number, seed: number): Matrix {
  const a = randomMatrix(n, n, seed), at = transpose(a);
  return matrix(n, n, a.data.map((x, i) => (x + at.data[i]!) / 2));
}

/** V·diag(λ)·Vᵀ. */
function rebuild(values: Float64Array, v: Matrix): Matrix {
  const vl = matrix(v.rows, v.cols, v.data.map((x, i) => x * values[i % v.cols]!));
  return matmul(vl, transpose(v));
}

describe("symmetricEigen", () => {
  for (const n of [1, 2, 3, 10, 45]) {
    it(`decomposes a random symmetric ${n}×${n} matrix: A = V·Λ·Vᵀ, orthogonal V, Λ descending`, () => {
      const a = randomSymmetric(n, n);
      const { values, vectors } = symmetricEigen(a);
      expect(relError(rebuild(values, vectors).data, a.data)).toBeLessThan(1e-13);
      expect(orthogonalityError(vectors)).toBeLessThan(1e-13);
      for (let i = 1; i < n; i++) expect(values[i]!).toBeLessThanOrEqual(values[i - 1]!);
    });
  }

  it("recovers a prescribed spectrum, negative and repeated values included", () => {
    const spectrum = [7, 3, 3, 0.5, 0, -2, -2, -9];
    const { Q } = qr(randomMatrix(8, 8, 77));
    const a = rebuild(Float64Array.from(spectrum), Q);
    const { values, vectors } = symmetricEigen(a);
    values.forEach((x, i) => expect(Math.abs(x - spectrum[i]!)).toBeLessThan(1e-13));
    expect(orthogonalityError(vectors)).toBeLessThan(1e-13);
  });

  it("gives the squared singular values for a Gram matrix AᵀA", () => {
    const a = randomMatrix(20, 9, 4);
    const { values } = symmetricEigen(matmul(transpose(a), a));
    const s = singularValues(a);
    expect(relError(values, s.map((x) => x * x))).toBeLessThan(1e-14);
  });

  it("reads only the lower triangle", () => {
    const lower = matrix(3, 3, [2, 99, 99, 1, 3, 99, 0, 1, 4]);
    const full = matrix(3, 3, [2, 1, 0, 1, 3, 1, 0, 1, 4]);
    expect([...symmetricEigen(lower).values]).toEqual([...symmetricEigen(full).values]);
  });

  it("solves the 2×2 case exactly and keeps a diagonal matrix's unit vectors", () => {
    // [[2, 1], [1, 2]] has eigenvalues 3 and 1 with vectors (1, 1)/√2 and (1, −1)/√2.
    const { values, vectors } = symmetricEigen(matrix(2, 2, [2, 1, 1, 2]));
    expect(values[0]).toBeCloseTo(3, 15);
    expect(values[1]).toBeCloseTo(1, 15);
    expect(Math.abs(vectors.data[0]!)).toBeCloseTo(Math.SQRT1_2, 15);
    const diag = symmetricEigen(matrix(3, 3, [1, 0, 0, 0, 5, 0, 0, 0, 3]));
    expect([...diag.values]).toEqual([5, 3, 1]);
    expect([...diag.vectors.data].map(Math.abs)).toEqual([0, 0, 1, 1, 0, 0, 0, 1, 0]);
  });

  it("rejects non-square and non-finite input", () => {
    expect(() => symmetricEigen(matrix(2, 3))).toThrow(/square/);
    expect(() => symmetricEigen(matrix(2, 2, [1, 0, NaN, 1]))).toThrow(/NaN/);
  });
});
