import { describe, expect, it } from "vitest";
import { matmul, matrix, oloraFactors, pissaFactors, quantileClamp, svdMergeFactors, transpose, type Matrix } from "../../lib/linalg/index.js";
import { fromFixture, orthogonalityError, reference, relError } from "./util.js";

/**
 * Flips the sign of each (row i of A, column i of B) pair of `ours` so that A's row points the
 * way `ref`'s does: the one freedom an SVD leaves (distinct singular values assumed).
 */
function alignSigns(ours: { A: Matrix; B: Matrix }, refA: Matrix): { A: Matrix; B: Matrix } {
  const a = matrix(ours.A.rows, ours.A.cols, ours.A.data), b = matrix(ours.B.rows, ours.B.cols, ours.B.data);
  for (let i = 0; i < a.rows; i++) {
    let dot = 0;
    for (let j = 0; j < a.cols; j++) dot += a.data[i * a.cols + j]! * refA.data[i * a.cols + j]!;
    if (dot >= 0) continue;
    for (let j = 0; j < a.cols; j++) a.data[i * a.cols + j] = -a.data[i * a.cols + j]!;
    for (let o = 0; o < b.rows; o++) b.data[o * b.cols + i] = -b.data[o * b.cols + i]!;
  }
  return { A: a, B: b };
}

// PEFT runs in float32: its singular vectors carry errors of about eps₃₂·σ₁/gap (2.3e-6 seen
// here), its QR factors about eps₃₂ (1e-7). A wrong sign or formula shows as an error near 1.
const F32 = 1e-5;

describe("PEFT initializations and merges, against PEFT 0.21.0", () => {
  for (const [name, c] of Object.entries(reference.pissa)) {
    it(`pissaFactors equals init_lora_weights="pissa" on ${name} (r=${c.r}, scaling ${c.scaling})`, () => {
      const ours = pissaFactors(fromFixture(c.weight), c.r, c.scaling);
      const refA = fromFixture(c.lora_A), refB = fromFixture(c.lora_B);
      const aligned = alignSigns(ours, refA);
      expect(relError(aligned.A.data, refA.data)).toBeLessThan(F32);
      expect(relError(aligned.B.data, refB.data)).toBeLessThan(F32);
      expect(relError(ours.residual.data, c.weight_after.data)).toBeLessThan(F32);
    });
  }

  for (const [name, c] of Object.entries(reference.olora)) {
    it(`oloraFactors equals init_lora_weights="olora" on ${name}, signs included`, () => {
      const ours = oloraFactors(fromFixture(c.weight), c.r, c.scaling);
      expect(relError(ours.A.data, c.lora_A.data)).toBeLessThan(F32);
      expect(relError(ours.B.data, c.lora_B.data)).toBeLessThan(F32);
      expect(relError(ours.residual.data, c.weight_after.data)).toBeLessThan(F32);
    });
  }

  const { weights, adapters, results } = reference.merge;
  const weighted = adapters.map((ad, i) => ({ A: fromFixture(ad.lora_A), B: fromFixture(ad.lora_B), scale: weights[i]! * ad.scaling }));
  const delta = weighted
    .map(({ A, B, scale }) => matmul(B, A).data.map((x) => scale * x))
    .reduce((sum, d) => sum.map((x, i) => x + d[i]!));

  it("svdMergeFactors equals add_weighted_adapter(combination_type=\"svd\") at svd_rank 4", () => {
    const ref = results["svd_rank4"]!;
    const ours = svdMergeFactors(weighted, ref.svd_rank);
    const aligned = alignSigns(ours, fromFixture(ref.lora_A));
    expect(relError(aligned.A.data, ref.lora_A.data)).toBeLessThan(F32);
    expect(relError(aligned.B.data, ref.lora_B.data)).toBeLessThan(F32);
    expect(ref.lora_alpha).toBe(ref.r); // the merged adapter has scaling 1: S went into B
  });

  it("completes A with orthonormal rows and B with zero columns beyond the adapters' total rank (svd_rank 7 > 3 + 2)", () => {
    const ref = results["svd_rank7"]!;
    const ours = svdMergeFactors(weighted, ref.svd_rank);
    expect([ours.A.rows, ours.A.cols, ours.B.rows, ours.B.cols]).toEqual([7, 12, 10, 7]);
    expect(orthogonalityError(transpose(ours.A))).toBeLessThan(1e-13);
    expect(relError(matmul(ours.B, ours.A).data, delta)).toBeLessThan(1e-13);
    const refB = fromFixture(ref.lora_B);
    const refBA = matmul(refB, fromFixture(ref.lora_A));
    expect(relError(refBA.data, delta)).toBeLessThan(F32);
    for (let o = 0; o < 10; o++) {
      for (const i of [5, 6]) expect(ours.B.data[o * 7 + i]).toBe(0);
    }
  });

  it("quantileClamp turns PEFT's unclamped merge into its svd_clamp=0.9 merge", () => {
    const plain = results["svd_rank4"]!, clamped = results["svd_rank4_clamp90"]!;
    const ours = quantileClamp(fromFixture(plain.lora_A), fromFixture(plain.lora_B), clamped.svd_clamp!);
    expect(relError(ours.A.data, clamped.lora_A.data)).toBeLessThan(F32);
    expect(relError(ours.B.data, clamped.lora_B.data)).toBeLessThan(F32);
  });
});
