// cpu gemm_f32 (native/cpu/gemm.cc) against a float64 reference: all four transpose cases,
// alpha/beta, batches with broadcast operands, edge shapes around the register tiles and cache
// blocks, and sub-matrix views (ld > width, offsets).
//
// The file runs at the SIMD level this process dispatches to (avx512 on an AVX-512 host); the
// last test re-runs the whole file in child processes with LOWRANK_SIMD=scalar and =avx2, which
// the addon reads once at load, so every micro-kernel is proven on one machine.
//
// Tolerance: relative L2 error 1e-5. Inputs are U(-1, 1); fp32 accumulation over k ≤ 600 terms in
// a different order than the float64 reference gives errors around 1e-7..1e-6.
import { spawnSync } from "node:child_process";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { full, Generator, info, rand, type Tensor, tidy } from "../lib/index.js";
import { native } from "../lib/native/index.js";
import { relError } from "./helpers.js";

const TOL = 1e-5;

interface Case {
  ta: boolean;
  tb: boolean;
  m: number;
  n: number;
  k: number;
  alpha?: number;
  beta?: number;
  batch?: number;
  // Row strides as stored (default: the width) and batch strides (default: packed; 0 broadcasts).
  lda?: number;
  ldb?: number;
  ldc?: number;
  sa?: number;
  sb?: number;
  sc?: number;
  // Element offsets of the first matrix inside its buffer (sub-matrix views).
  offA?: number;
  offB?: number;
  offC?: number;
  nanC?: boolean;  // fill C with NaN (only valid with beta = 0, which must not read C)
}

let seed = 1;
const uniform = (n: number): Tensor => rand([Math.max(n, 1)], { low: -1, high: 1, generator: new Generator(seed++) });

// Elements a batch of `rows × cols` matrices with row stride ld spans (as the binding computes).
const span = (rows: number, cols: number, ld: number, stride: number, batch: number) =>
  rows === 0 || cols === 0 || batch === 0 ? 0 : (batch - 1) * stride + (rows - 1) * ld + cols;

/** Runs native gemm on fresh buffers and checks every element of C against float64. */
function check(c: Case): void {
  const { ta, tb, m, n, k } = c;
  const alpha = c.alpha ?? 1, beta = c.beta ?? 0, batch = c.batch ?? 1;
  const [ar, ac] = ta ? [k, m] : [m, k];  // A as stored
  const [br, bc] = tb ? [n, k] : [k, n];
  const lda = c.lda ?? ac, ldb = c.ldb ?? bc, ldc = c.ldc ?? n;
  const sa = c.sa ?? ar * lda, sb = c.sb ?? br * ldb, sc = c.sc ?? m * ldc;
  const offA = c.offA ?? 0, offB = c.offB ?? 0, offC = c.offC ?? 0;
  tidy(() => {
    const A = uniform(offA + span(ar, ac, lda, sa, batch));
    const B = uniform(offB + span(br, bc, ldb, sb, batch));
    const C = c.nanC ? full([Math.max(offC + span(m, n, ldc, sc, batch), 1)], NaN) : uniform(offC + span(m, n, ldc, sc, batch));
    const a = A.dataSync(), b = B.dataSync(), c0 = C.dataSync();
    const at = (t: typeof A, elements: number) => ({ storage: t.storage.native, offset: t.byteOffset + 4 * elements });
    native().gemm({
      transA: ta, transB: tb, m, n, k, alpha, a: at(A, offA), lda, strideA: sa, b: at(B, offB), ldb, strideB: sb,
      beta, c: at(C, offC), ldc, strideC: sc, batch,
    });
    const got = C.dataSync();
    // Reference: every C element inside a matrix of the batch, and the rest must be untouched.
    const inside = new Uint8Array(got.length);
    const want: number[] = [], have: number[] = [];
    for (let bi = 0; bi < batch; bi++) {
      for (let i = 0; i < m; i++) {
        for (let j = 0; j < n; j++) {
          let acc = 0;
          for (let p = 0; p < k; p++) {
            const av = a[offA + bi * sa + (ta ? p * lda + i : i * lda + p)]!;
            const bv = b[offB + bi * sb + (tb ? j * ldb + p : p * ldb + j)]!;
            acc += av * bv;
          }
          const ci = offC + bi * sc + i * ldc + j;
          inside[ci] = 1;
          want.push(alpha * acc + (beta === 0 ? 0 : beta * c0[ci]!));
          have.push(got[ci]!);
        }
      }
    }
    const err = relError(have, want);
    const label = `gemm ta=${ta} tb=${tb} m=${m} n=${n} k=${k} alpha=${alpha} beta=${beta} batch=${batch}`;
    expect(err, `${label}: relative error ${err}`).toBeLessThanOrEqual(TOL);
    for (let i = 0; i < got.length; i++) {
      if (!inside[i]) expect(Object.is(got[i], c0[i]), `${label}: element ${i} outside C was written`).toBe(true);
    }
  });
}

const TRANSPOSES = [[false, false], [false, true], [true, false], [true, true]] as const;

describe(`cpu gemm (${info().simd} kernel)`, () => {
  it("dispatches to the level LOWRANK_SIMD asks for", () => {
    const want = process.env.LOWRANK_SIMD;
    if (want) expect(info().simd).toBe(want);
    else expect(["avx512", "avx2", "scalar"]).toContain(info().simd);
  });

  // Shapes: single elements, primes, non-multiples of every tile (8×32, 16×16, 6×16, 4×16), k in
  // two cache blocks (k > 256), m over several A blocks (m > 2048, small enough to stay on one
  // thread), n over several B blocks (n > 512), wide-and-short (split along n), n = 16 (a LoRA
  // rank, where the 16-wide kernel is chosen) and k = 16.
  const SHAPES: [number, number, number][] = [
    [1, 1, 1], [1, 5, 3], [5, 1, 3], [7, 13, 17], [65, 129, 31], [43, 69, 300], [15, 33, 2],
    [509, 21, 9], [2100, 3, 4], [3, 4133, 5], [6, 300, 40], [256, 16, 96], [37, 16, 300], [96, 256, 16],
  ];
  for (const [ta, tb] of TRANSPOSES) {
    it(`op(A)=${ta ? "Aᵀ" : "A"}, op(B)=${tb ? "Bᵀ" : "B"}: odd shapes, beta=0 overwrites NaN C`, () => {
      for (const [m, n, k] of SHAPES) check({ ta, tb, m, n, k, nanC: true });
    });
    it(`op(A)=${ta ? "Aᵀ" : "A"}, op(B)=${tb ? "Bᵀ" : "B"}: alpha and beta`, () => {
      for (const [m, n, k] of [[7, 13, 17], [43, 69, 300], [29, 70, 11]] as const) {
        check({ ta, tb, m, n, k, alpha: 0.75, beta: -1.5 });
        check({ ta, tb, m, n, k, alpha: -2, beta: 1 });
      }
    });
    it(`op(A)=${ta ? "Aᵀ" : "A"}, op(B)=${tb ? "Bᵀ" : "B"}: sub-matrix views (ld > width, offsets)`, () => {
      const [m, n, k] = [37, 45, 23];
      check({ ta, tb, m, n, k, lda: (ta ? m : k) + 3, ldb: (tb ? k : n) + 7, ldc: n + 5, offA: 2, offB: 9, offC: 4, beta: 0.5 });
      check({ ta, tb, m, n, k, lda: (ta ? m : k) + 64, ldb: (tb ? k : n) + 1, ldc: n + 32, offC: 1, nanC: true });
      // Few rows or columns: the kernel reads B or A in place through the padded strides.
      check({ ta, tb, m: 5, n: 70, k, lda: (ta ? 5 : k) + 3, ldb: (tb ? k : 70) + 9, ldc: 75, offB: 3, beta: 2 });
      check({ ta, tb, m: 70, n: 5, k, lda: (ta ? 70 : k) + 9, ldb: (tb ? k : 5) + 3, ldc: 6, offA: 5, beta: 2 });
    });
  }

  it("batches, with one operand broadcast (batch stride 0) or both, and padded batch strides", () => {
    for (const [ta, tb] of TRANSPOSES) {
      check({ ta, tb, m: 19, n: 35, k: 27, batch: 3 });
      check({ ta, tb, m: 19, n: 35, k: 27, batch: 3, sa: 0, beta: 0.25 });
      check({ ta, tb, m: 19, n: 35, k: 27, batch: 4, sb: 0 });
      check({ ta, tb, m: 9, n: 11, k: 5, batch: 2, sa: 0, sb: 0, nanC: true });
    }
    // Padded batch strides; many tiny matrices (enough work for the threads, which share them out
    // whole); a small batch of big matrices (each split between the threads).
    check({ ta: false, tb: true, m: 8, n: 10, k: 6, batch: 3, sa: 100, sb: 70, sc: 90 });
    check({ ta: false, tb: false, m: 6, n: 10, k: 12, batch: 6000, nanC: true });
    check({ ta: false, tb: true, m: 130, n: 96, k: 200, batch: 2, beta: 1 });
  });

  it("products big enough for both threads, split along m and along n", () => {
    for (const [ta, tb] of TRANSPOSES) {
      check({ ta, tb, m: 301, n: 130, k: 120, alpha: 0.5, beta: 0.5 });
      check({ ta, tb, m: 20, n: 701, k: 320, nanC: true });
    }
  });

  it("k = 0 and alpha = 0 scale C by beta without reading A and B; beta = 0 writes zeros", () => {
    for (const [ta, tb] of TRANSPOSES) {
      check({ ta, tb, m: 9, n: 7, k: 0, beta: 0, nanC: true });
      check({ ta, tb, m: 9, n: 7, k: 0, beta: 2.5 });
      check({ ta, tb, m: 9, n: 7, k: 5, alpha: 0, beta: -0.5 });
    }
  });

  it("empty m, n or batch leaves C untouched", () => {
    check({ ta: false, tb: false, m: 0, n: 5, k: 3 });
    check({ ta: false, tb: false, m: 5, n: 0, k: 3 });
    check({ ta: true, tb: true, m: 5, n: 4, k: 3, batch: 0 });
  });

  // Only the parent run spawns the other levels (children have LOWRANK_SIMD set).
  const levels = ["scalar", "avx2"].filter((l) => l === "scalar" || ["avx2", "avx512"].includes(info().simd));
  it.skipIf(process.env.LOWRANK_SIMD !== undefined)(`passes at every lower SIMD level (${levels.join(", ")})`, () => {
    const self = fileURLToPath(import.meta.url);
    const vitest = join(dirname(createRequire(import.meta.url).resolve("vitest/package.json")), "vitest.mjs");
    for (const level of levels) {
      const r = spawnSync(process.execPath, [vitest, "run", "--reporter=verbose", "--dir", dirname(self), self], {
        env: { ...process.env, LOWRANK_SIMD: level, NO_COLOR: "1" },
        encoding: "utf8",
      });
      expect(r.status, `LOWRANK_SIMD=${level}:\n${r.stdout}\n${r.stderr}`).toBe(0);
      expect(r.stdout).toContain(`cpu gemm (${level} kernel)`);
    }
  });
});
