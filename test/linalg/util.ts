// Shared checks for the lib/linalg tests: reconstruction and orthogonality errors, random and
// fixture matrices.
import { readFileSync } from "node:fs";
import { matmul, matrix, transpose, type Matrix } from "../../lib/linalg/index.js";
import { randomValues, relError } from "../helpers.js";

export { relError };

/** A rows×cols matrix of deterministic values in [-1, 1). */
export function randomMatrix(rows: number, cols: number, seed: number): Matrix {
  return matrix(rows, cols, randomValues(rows * cols, seed));
}

/** ‖U·diag(S)·Vᵀ − A‖_F / ‖A‖_F. */
export function reconstructionError(a: Matrix, u: Matrix, s: ArrayLike<number>, v: Matrix): number {
  const us = matrix(u.rows, u.cols, u.data.map((x, i) => x * s[i % u.cols]!));
  return relError(matmul(us, transpose(v)).data, a.data);
}

/** max |QᵀQ − I|: how far Q's columns are from orthonormal. */
export function orthogonalityError(q: Matrix): number {
  const g = matmul(transpose(q), q);
  let worst = 0;
  for (let i = 0; i < g.rows; i++) {
    for (let j = 0; j < g.cols; j++) worst = Math.max(worst, Math.abs(g.data[i * g.cols + j]! - (i === j ? 1 : 0)));
  }
  return worst;
}

export interface FixtureMatrix {
  rows: number;
  cols: number;
  data: number[];
}

export const fromFixture = (m: FixtureMatrix): Matrix => matrix(m.rows, m.cols, m.data);

interface InitCase {
  r: number;
  lora_alpha: number;
  scaling: number;
  weight: FixtureMatrix;
  lora_A: FixtureMatrix;
  lora_B: FixtureMatrix;
  weight_after: FixtureMatrix;
}

interface Reference {
  svd: Record<string, { a: FixtureMatrix; s: number[] }>;
  qr: Record<string, { a: FixtureMatrix; q: FixtureMatrix; r: FixtureMatrix }>;
  pissa: Record<string, InitCase>;
  olora: Record<string, InitCase>;
  merge: {
    weights: number[];
    adapters: { name: string; scaling: number; lora_A: FixtureMatrix; lora_B: FixtureMatrix }[];
    results: Record<string, { svd_rank: number; svd_clamp?: number; r: number; lora_alpha: number; lora_A: FixtureMatrix; lora_B: FixtureMatrix }>;
  };
}

/** test/fixtures/linalg/reference.json, made by test/fixtures/make_linalg_fixtures.py. */
export const reference = JSON.parse(readFileSync(new URL("../fixtures/linalg/reference.json", import.meta.url), "utf8")) as Reference;
