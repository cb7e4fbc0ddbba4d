// Shared test utilities: float64 reference comparisons and device lists.
import { expect } from "vitest";
import { cudaAvailable, type Tensor } from "../lib/index.js";

/** ‖a − b‖ / ‖b‖ over flat arrays (0 when both are zero). */
export function relError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) {
    const d = a[i]! - b[i]!;
    num += d * d;
    den += b[i]! * b[i]!;
  }
  if (Number.isNaN(num)) return Infinity;
  return den === 0 ? Math.sqrt(num) : Math.sqrt(num / den);
}

/** Expects a tensor's values to match a float64 reference within a relative L2 tolerance. */
export function expectClose(t: Tensor | ArrayLike<number>, ref: ArrayLike<number>, tol: number): void {
  const got = "dataSync" in t ? t.dataSync() : t;
  const err = relError(got, ref);
  expect(err, `relative error ${err} exceeds ${tol}`).toBeLessThanOrEqual(tol);
}

/** The CUDA device name when a GPU is usable, for describe.skipIf. */
export const hasCuda = cudaAvailable();
export const noCudaReason = "no CUDA device (this build is CPU-only or no GPU is present): run `npm run test:gpu` on a GPU host";
