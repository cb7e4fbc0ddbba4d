import { describe, expect, it } from "vitest";
import { matmul, matrix, qr } from "../../lib/linalg/index.js";
import { fromFixture, orthogonalityError, randomMatrix, reference, relError } from "./util.js";

describe("qr", () => {
  // 70×50 and 50×70 span two 32-column panels, so the blocked (compact WY) update is used.
  for (const [m, n] of [[8, 5], [5, 8], [6, 6], [70, 50], [50, 70], [1, 4], [4, 1]] as const) {
    it(`factors a random ${m}×${n} matrix: A = Q·R, orthonormal Q, upper-trapezoidal R`, () => {
      const a = randomMatrix(m, n, 31 * m + n);
      const { Q, R } = qr(a);
      const k = Math.min(m, n);
      expect([Q.rows, Q.cols, R.rows, R.cols]).toEqual([m, k, k, n]);
      expect(relError(matmul(Q, R).data, a.data)).toBeLessThan(1e-14);
      expect(orthogonalityError(Q)).toBeLessThan(1e-14);
      for (let i = 0; i < k; i++) {
        for (let j = 0; j < i; j++) expect(R.data[i * n + j]).toBe(0);
      }
    });
  }

  for (const [name, { a, q, r }] of Object.entries(reference.qr)) {
    it(`equals torch.linalg.qr, signs included, on ${name}`, () => {
      const ours = qr(fromFixture(a));
      expect(relError(ours.R.data, r.data)).toBeLessThan(1e-13);
      expect(relError(ours.Q.data, q.data)).toBeLessThan(1e-13);
    });
  }

  it("keeps LAPACK's sign rule: R's diagonal is −sign(pivot)·‖column‖, unless the column is already reduced", () => {
    const { R } = qr(matrix(3, 2, [3, 1, 4, 2, 0, 5]));
    expect(R.data[0]).toBeCloseTo(-5, 14);
    const presolved = qr(matrix(2, 2, [-2, 1, 0, 3]));
    expect([...presolved.R.data]).toEqual([-2, 1, 0, 3]);
    expect([...presolved.Q.data]).toEqual([1, 0, 0, 1]);
  });

  it("factors the zero matrix as Q = I, R = 0", () => {
    const { Q, R } = qr(matrix(3, 2));
    expect([...Q.data]).toEqual([1, 0, 0, 1, 0, 0]);
    expect([...R.data]).toEqual([0, 0, 0, 0]);
  });
});
