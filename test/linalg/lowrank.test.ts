import { describe, expect, it } from "vitest";
import { lowRankSingularValues, lowRankSvd, matmul, matrix, singularValues } from "../../lib/linalg/index.js";
import { orthogonalityError, randomMatrix, reconstructionError, relError } from "./util.js";

describe("lowRankSingularValues / lowRankSvd", () => {
  // (d, r, k): a LoRA-like tall B and wide A; r above d; and r above both sides.
  for (const [d, r, k] of [[40, 4, 30], [6, 8, 20], [5, 9, 3]] as const) {
    it(`gives the singular values of B·A without forming it (B ${d}×${r}, A ${r}×${k})`, () => {
      const b = randomMatrix(d, r, d + r), a = randomMatrix(r, k, r + k);
      const dense = singularValues(matmul(b, a));
      const p = Math.min(d, r, k);
      const ours = lowRankSingularValues(b, a);
      expect(ours.length).toBe(p);
      expect(relError(ours, dense.subarray(0, p))).toBeLessThan(1e-14);
      // B·A has rank ≤ r: the values not listed are zero.
      for (let i = p; i < dense.length; i++) expect(dense[i]!).toBeLessThan(1e-13 * dense[0]!);
    });
  }

  it("factors B·A = U·S·Vᵀ with orthonormal U and V, also truncated to k", () => {
    const b = randomMatrix(50, 6, 1), a = randomMatrix(6, 35, 2);
    const ba = matmul(b, a);
    const { U, S, V } = lowRankSvd(b, a);
    expect([U.rows, U.cols, V.rows, V.cols]).toEqual([50, 6, 35, 6]);
    expect(reconstructionError(ba, U, S, V)).toBeLessThan(1e-13);
    expect(orthogonalityError(U)).toBeLessThan(1e-13);
    expect(orthogonalityError(V)).toBeLessThan(1e-13);
    const top = lowRankSvd(b, a, { k: 2 });
    expect(relError(top.S, S.subarray(0, 2))).toBeLessThan(1e-15);
  });

  it("keeps small singular values accurate where a Gram matrix would lose them", () => {
    // B·A = diag(1, 1e-9) embedded: the Gram matrix would square 1e-9 to 1e-18, below eps.
    const b = matrix(3, 2, [1, 0, 0, 1e-9, 0, 0]), a = matrix(2, 3, [0, 1, 0, 0, 0, 1]);
    const s = lowRankSingularValues(b, a);
    expect(s[0]).toBe(1);
    expect(Math.abs(s[1]! - 1e-9)).toBeLessThan(1e-24);
  });

  it("gives zeros for B = 0 (a fresh LoRA adapter) and rejects mismatched factors", () => {
    expect([...lowRankSingularValues(matrix(4, 2), randomMatrix(2, 5, 3))]).toEqual([0, 0]);
    expect(() => lowRankSingularValues(matrix(4, 2), matrix(3, 5))).toThrow(/B's columns must equal A's rows/);
  });
});
