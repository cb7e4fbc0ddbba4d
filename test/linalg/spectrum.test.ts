import { describe, expect, it } from "vitest";
import { effectiveRank, energyCaptured, rankForEnergy } from "../../lib/linalg/index.js";

describe("spectrum summaries", () => {
  const s = [4, 2, 1, 0];
  // energies 16, 4, 1, 0 of 21

  it("energyCaptured is the top-k share of Σσ²", () => {
    expect(energyCaptured(s, 0)).toBe(0);
    expect(energyCaptured(s, 1)).toBeCloseTo(16 / 21, 15);
    expect(energyCaptured(s, 2)).toBeCloseTo(20 / 21, 15);
    expect(energyCaptured(s, 3)).toBe(1);
    expect(energyCaptured(s, 10)).toBe(1);
    expect(energyCaptured([0, 0], 1)).toBe(1);
  });

  it("rankForEnergy is the smallest k reaching the fraction", () => {
    expect(rankForEnergy(s, 0)).toBe(0);
    expect(rankForEnergy(s, 0.7)).toBe(1);
    expect(rankForEnergy(s, 0.9)).toBe(2); // 16/21 = 0.762 < 0.9 ≤ 20/21 = 0.952
    expect(rankForEnergy(s, 0.99)).toBe(3);
    expect(rankForEnergy(s, 1)).toBe(3);
    expect(rankForEnergy([0, 0, 0], 0.9)).toBe(0);
  });

  it("effectiveRank is exp of the entropy of σ/Σσ (Roy & Vetterli)", () => {
    expect(effectiveRank([3, 3, 3, 0])).toBeCloseTo(3, 14);
    expect(effectiveRank([5, 0, 0])).toBe(1);
    expect(effectiveRank([0, 0])).toBe(0);
    // p = (4, 2, 1)/7: exp(−Σ p ln p)
    const p = [4 / 7, 2 / 7, 1 / 7];
    expect(effectiveRank(s)).toBeCloseTo(Math.exp(-p.reduce((h, x) => h + x * Math.log(x), 0)), 14);
  });

  it("rejects spectra that are not descending and non-negative", () => {
    expect(() => energyCaptured([1, 2], 1)).toThrow(/descending/);
    expect(() => effectiveRank([1, -1])).toThrow(/value 1 is -1/);
    expect(() => rankForEnergy([1, NaN], 0.5)).toThrow(/NaN/);
    expect(() => rankForEnergy([1], 1.5)).toThrow(/fraction/);
  });
});
