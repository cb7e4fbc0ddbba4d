import { describe, expect, it } from "vitest";
import { matmul, matrix, singularValues, svd, transpose } from "../../lib/linalg/index.js";
import { fromFixture, orthogonalityError, randomMatrix, reconstructionError, reference, relError } from "./util.js";

function expectDescendingNonNegative(s: Float64Array): void {
  for (let i = 0; i < s.length; i++) {
    expect(s[i]!).toBeGreaterThanOrEqual(0);
    if (i > 0) expect(s[i]!).toBeLessThanOrEqual(s[i - 1]!);
  }
}

describe("svd", () => {
  // Shapes that take each path: square, tall below and above the QR-first crossover (m ≥ 5n/3),
  // wide (solved through the transpose), blocked QR (more than 32 columns), vectors.
  const shapes: [number, number][] = [[9, 9], [11, 8], [30, 7], [6, 13], [90, 40], [40, 90], [1, 6], [6, 1], [1, 1]];
  for (const [m, n] of shapes) {
    it(`factors a random ${m}×${n} matrix: A = U·S·Vᵀ, orthonormal U and V, S descending`, () => {
      const a = randomMatrix(m, n, 100 * m + n);
      const { U, S, V } = svd(a);
      const p = Math.min(m, n);
      expect([U.rows, U.cols, S.length, V.rows, V.cols]).toEqual([m, p, p, n, p]);
      expect(reconstructionError(a, U, S, V)).toBeLessThan(1e-13);
      expect(orthogonalityError(U)).toBeLessThan(1e-13);
      expect(orthogonalityError(V)).toBeLessThan(1e-13);
      expectDescendingNonNegative(S);
      // singularValues runs the same iteration without vectors and must agree
      expect(relError(singularValues(a), S)).toBeLessThan(1e-14);
    });
  }

  for (const [name, { a, s }] of Object.entries(reference.svd)) {
    it(`matches numpy's singular values for ${name} (${a.rows}×${a.cols})`, () => {
      const m = fromFixture(a);
      const ours = singularValues(m);
      // Backward stability bounds every value's error by a small multiple of eps·σ₁.
      ours.forEach((x, i) => expect(Math.abs(x - s[i]!)).toBeLessThan(1e-14 * Math.max(8, a.rows, a.cols) * s[0]!));
      const f = svd(m);
      expect(reconstructionError(m, f.U, f.S, f.V)).toBeLessThan(1e-13);
      expect(orthogonalityError(f.U)).toBeLessThan(1e-13);
      expect(orthogonalityError(f.V)).toBeLessThan(1e-13);
    });
  }

  it("finds the zero singular values of a rank-deficient matrix, with orthonormal vectors for them", () => {
    const f = fromFixture(reference.svd["rank3_10x8"]!.a);
    const { U, S, V } = svd(f);
    for (let i = 3; i < 8; i++) expect(S[i]!).toBeLessThan(1e-14 * S[0]!);
    expect(S[2]!).toBeGreaterThan(0.1);
    expect(orthogonalityError(U)).toBeLessThan(1e-13);
    expect(orthogonalityError(V)).toBeLessThan(1e-13);
  });

  it("returns zeros and orthonormal vectors for the zero matrix", () => {
    const { U, S, V } = svd(matrix(5, 3));
    expect([...S]).toEqual([0, 0, 0]);
    expect(orthogonalityError(U)).toBe(0);
    expect(orthogonalityError(V)).toBe(0);
  });

  it("gives the top-k triplets of the full decomposition when asked for k", () => {
    const a = randomMatrix(50, 20, 5);
    const full = svd(a), top = svd(a, { k: 4 });
    expect([top.U.rows, top.U.cols, top.S.length, top.V.rows, top.V.cols]).toEqual([50, 4, 4, 20, 4]);
    expect(relError(top.S, full.S.subarray(0, 4))).toBeLessThan(1e-15);
    // The same pairs up to a common sign: |uᵢᵀ·u'ᵢ| = 1.
    const cross = matmul(transpose(top.U), full.U);
    for (let i = 0; i < 4; i++) expect(Math.abs(cross.data[i * 20 + i]!)).toBeCloseTo(1, 12);
    expect(orthogonalityError(top.V)).toBeLessThan(1e-13);
  });

  it("gives the transposed matrix the same values with U and V swapped", () => {
    const a = randomMatrix(12, 7, 9);
    const f = svd(a), g = svd(transpose(a));
    expect(relError(g.S, f.S)).toBeLessThan(1e-14);
    expect(reconstructionError(transpose(a), g.U, g.S, g.V)).toBeLessThan(1e-13);
  });

  it("rejects non-finite entries and a bad k", () => {
    expect(() => svd(matrix(2, 2, [1, NaN, 0, 1]))).toThrow(/entry \(0, 1\).*NaN/);
    expect(() => singularValues(matrix(1, 2, [Infinity, 0]))).toThrow(/Infinity/);
    expect(() => svd(matrix(3, 2), { k: 3 })).toThrow(/k must be an integer in \[0, 2\]/);
  });
});
