// The PyTorch optimizer fixture (test/fixtures/adamw/reference.json, made by
// test/fixtures/make_fixtures.py `adamw`): a toy problem of three params fed fixed gradients.
import { readFileSync } from "node:fs";
import { expect } from "vitest";
import { tensor, type NestedArray, type Tensor } from "../../lib/index.js";

type Nested = NestedArray;
interface Run {
  hyperparams: Record<string, number | number[] | boolean>;
  params_after_step: Nested[][];
  final_state: Record<string, number | Nested>[];
}
export interface OptimFixture {
  shapes: number[][];
  initial_params: Nested[];
  grads: Nested[][];
  runs: Record<"adamw_wd0.01" | "adamw_wd0" | "sgd_momentum0.9", Run>;
  clip_grad_norm: Record<"clipped" | "unclipped_small", { grads_in: Nested[]; max_norm: number; norm_type: number; total_norm: number; grads_out: Nested[] }>;
}

export const fixture = JSON.parse(readFileSync(new URL("../fixtures/adamw/reference.json", import.meta.url), "utf8")) as OptimFixture;

/** A float32 tensor of the fixture's shape for param k (fixture values are float32 round-trip decimals). */
export function fixtureTensor(values: Nested, k: number): Tensor {
  return tensor([values].flat(Infinity as 1) as number[], { shape: fixture.shapes[k]! });
}

/** Fresh leaf params with the fixture's initial values. */
export function initialParams(): Tensor[] {
  return fixture.initial_params.map((v, k) => fixtureTensor(v, k).requireGrad());
}

/** Sets each param's .grad to the fixture gradients of `step` (disposing any old grad). */
export function setGrads(params: Tensor[], step: number): void {
  params.forEach((p, k) => {
    p.grad?.dispose();
    p.grad = fixtureTensor(fixture.grads[step]![k]!, k);
  });
}

/** Largest |a - b| over two flat arrays (Infinity on NaN). */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    m = Number.isNaN(d) ? Infinity : Math.max(m, d);
  }
  return m;
}

export const flat = (v: Nested): number[] => [v].flat(Infinity as 1) as number[];

/** Expects two float32 arrays to hold the same values bit for bit (fast on large arrays, unlike toEqual). */
export function expectBitEqual(got: ArrayLike<number>, want: ArrayLike<number>, label: string): void {
  expect(got.length, label).toBe(want.length);
  let first = -1, count = 0;
  for (let i = 0; i < got.length; i++) {
    if (!Object.is(got[i], want[i])) {
      count++;
      if (first < 0) first = i;
    }
  }
  expect(count, `${label}: ${count} element(s) differ, first at ${first}: ${got[first]} vs ${want[first]}`).toBe(0);
}
