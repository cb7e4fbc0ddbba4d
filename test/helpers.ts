// Shared test utilities: float64 reference comparisons and device lists.
import { expect } from "vitest";
import { cudaAvailable, info, noGrad, tensor, tidy, type Tensor } from "../lib/index.js";
import { mul, sum } from "../lib/ops/index.js";

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
// On a host meant to have a GPU (test/gpu/device-run.sh sets LOWRANK_EXPECT_CUDA=1) skipping the GPU
// tests would hide a broken setup: the loader already refuses a missing CUDA build; an addon
// without CUDA, or a CUDA build that sees no device, fails here.
if (process.env.LOWRANK_EXPECT_CUDA === "1" && !hasCuda) {
  const i = info();
  throw new Error(
    `LOWRANK_EXPECT_CUDA=1 but ${i.cuda ? "the CUDA build sees no GPU (check nvidia-smi and CUDA_VISIBLE_DEVICES)" : `the addon ${i.addon} was built without CUDA`} (lowrank info: ${JSON.stringify(i)})`,
  );
}
export const noCudaReason = "no CUDA device (this build is CPU-only or no GPU is present): run `npm run test:gpu` on a GPU host";


/** mulberry32: a small seeded PRNG giving numbers in [0, 1), so every run tests the same inputs. */
export function prng(seed: number): () => number {
  let a = seed | 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Deterministic pseudo-random numbers in [-1, 1) for test inputs. */
export function randomValues(n: number, seed: number): number[] {
  const next = prng(seed);
  return Array.from({ length: n }, () => next() * 2 - 1);
}

/**
 * Checks the gradients of fn at `inputs` against central finite differences.
 * The output is reduced to a scalar with fixed random weights so every output element matters.
 * float32 evaluation: with eps = 1e-2 the truncation error is O(eps²) ≈ 1e-4 relative and the
 * rounding error ≈ 1e-7 / eps = 1e-5; across the op tests the worst case is 1e-4, so the default
 * tol of 1e-3 leaves a factor 10 (a wrong gradient term is off by far more).
 */
export function gradcheck(fn: (...xs: Tensor[]) => Tensor, inputs: Tensor[], opts: { eps?: number; tol?: number; check?: boolean[] } = {}): void {
  const eps = opts.eps ?? 1e-2, tol = opts.tol ?? 1e-3;
  const outShape = noGrad(() => tidy(() => [...fn(...inputs).shape]));
  const weights = tensor(randomValues(outShape.reduce((a, b) => a * b, 1), 99), { shape: outShape });
  const objective = (...xs: Tensor[]) => sum(mul(fn(...xs), weights));
  inputs.forEach((x) => (x.requiresGrad = true));
  tidy(() => objective(...inputs).backward());
  inputs.forEach((x, k) => {
    if (opts.check && !opts.check[k]) return;
    const base = Array.from(x.dataSync());
    const numeric = base.map((_, i) =>
      noGrad(() =>
        tidy(() => {
          const at = (delta: number) => {
            const vals = base.slice();
            vals[i]! += delta;
            const xi = tensor(vals, { shape: x.shape });
            return objective(...inputs.map((y, j) => (j === k ? xi : y))).item();
          };
          return (at(eps) - at(-eps)) / (2 * eps);
        }),
      ),
    );
    expect(x.grad, `input ${k} got no gradient`).not.toBeNull();
    const analytic = x.grad!.dataSync();
    const err = relError(analytic, numeric);
    expect(err, `input ${k}: analytic vs finite-difference gradient, relative error ${err}`).toBeLessThanOrEqual(tol);
  });
  inputs.forEach((x) => {
    x.grad?.dispose();
    x.grad = null;
  });
  weights.dispose();
}
