// Summaries of a spectrum σ₁ ≥ σ₂ ≥ … ≥ 0 (as svd and singularValues return it), for
// `lowrank svd`. Energy is Σσᵢ² = ‖A‖²_F, so "energy captured by the top k" is the fraction of
// ‖A‖²_F kept by the best rank-k approximation (Eckart–Young).

/** Throws unless s is finite, non-negative and non-increasing. */
function checkSpectrum(op: string, s: ArrayLike<number>): void {
  for (let i = 0; i < s.length; i++) {
    const x = s[i]!;
    if (!(Number.isFinite(x) && x >= 0) || (i > 0 && x > s[i - 1]!)) {
      throw new Error(`${op}: expects finite non-negative values in descending order (as svd returns them); value ${i} is ${x}`);
    }
  }
}

/** Σ_{i<k} σᵢ² / Σᵢ σᵢ²: 1 for k ≥ s.length, and 1 for an all-zero spectrum (nothing is missing). */
export function energyCaptured(s: ArrayLike<number>, k: number): number {
  checkSpectrum("energyCaptured", s);
  if (!Number.isInteger(k) || k < 0) throw new Error(`energyCaptured: k must be a non-negative integer, got ${k}`);
  let kept = 0, total = 0;
  for (let i = 0; i < s.length; i++) {
    const e = s[i]! * s[i]!;
    total += e;
    if (i < k) kept += e;
  }
  return total === 0 ? 1 : kept / total;
}

/** The smallest k whose top-k singular values hold at least `fraction` of the energy (0 for an all-zero spectrum). */
export function rankForEnergy(s: ArrayLike<number>, fraction: number): number {
  checkSpectrum("rankForEnergy", s);
  if (!(fraction >= 0 && fraction <= 1)) throw new Error(`rankForEnergy: fraction must be in [0, 1], got ${fraction}`);
  let total = 0;
  for (let i = 0; i < s.length; i++) total += s[i]! * s[i]!;
  let kept = 0, k = 0;
  while (kept < fraction * total) {
    kept += s[k]! * s[k]!;
    k++;
  }
  return k;
}

/**
 * The entropy effective rank of Roy & Vetterli (2007), exp(H(p)) with pᵢ = σᵢ/Σσⱼ and
 * H(p) = −Σ pᵢ·ln pᵢ (0·ln 0 = 0): a real number in [1, number of nonzero σ], equal to r for r
 * equal nonzero singular values. 0 for an all-zero spectrum.
 */
export function effectiveRank(s: ArrayLike<number>): number {
  checkSpectrum("effectiveRank", s);
  let sum = 0;
  for (let i = 0; i < s.length; i++) sum += s[i]!;
  if (sum === 0) return 0;
  let h = 0;
  for (let i = 0; i < s.length; i++) {
    const p = s[i]! / sum;
    if (p > 0) h -= p * Math.log(p);
  }
  return Math.exp(h);
}
