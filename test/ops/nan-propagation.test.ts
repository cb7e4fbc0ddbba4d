// NaN propagation through every op family, forward and backward: a NaN in an input (or in the
// upstream gradient) must come out as NaN wherever PyTorch's result is NaN, and every other
// element must stay finite. One table, run per device: here on the CPU, and on CUDA by
// test/gpu/nan-propagation.test.ts.
//
// Each expected pattern is what PyTorch 2.x (CPU, float32) gives for the same computation
// (test/fixtures/check_nan_table.py prints them). Where PyTorch's answer is finite, so is the
// expectation: relu and abs pass a finite gradient at a NaN input (relu'(NaN) = 1, sgn(NaN) = 0),
// and relu's gradient is exactly 0 where x <= 0 even for a NaN upstream gradient. Attention
// follows the math of softmax(QKᵀ·scale)·V (PyTorch's math backend and transformers' eager GPT-2);
// PyTorch's CPU flash kernel itself returns 0 for an all-NaN score row, the defect this table
// guards against.
import { spawnSync } from "node:child_process";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { describe, expect, it } from "vitest";
import {
  abs, add, AdamW, clipGradNorm, crossEntropy, div, dropout, embedding, exp, gelu, Generator, info, layerNorm, linear, log, logSoftmax,
  matmul, mean, mul, neg, pow, relu, rmsNorm, scale, addScalar, sigmoid, silu, softmax, sqrt, square, sub, sum, tanh, tensor, tidy, type Tensor,
} from "../../lib/index.js";
import { scaledDotProductAttention } from "../../lib/ops/attention.js";
import { loraDelta } from "../../lib/ops/lora.js";
import { applyRotary, rotaryCosSin } from "../../lib/ops/rope.js";
import { randomValues } from "../helpers.js";

/**
 * Flat indices expected NaN ("all", or a list); every other element must be finite, except the
 * `free` ones, which may be either (see the attention cases).
 */
type Expect = "all" | number[] | { nan: number[]; free: number[] };

interface Input {
  shape: number[];
  /** Explicit values; default: random in [-1, 1) (nonzero) from the input's position in the case. */
  values?: number[];
  /** Flat indices set to NaN (or to the value in `inf` when listed there). */
  nan?: number[];
  inf?: number[];
  /** int32 input (targets, token ids): no gradient. */
  int?: boolean;
  /** false: no gradient checked for this input. */
  grad?: boolean;
}

interface NanCase {
  family: string;
  name: string;
  inputs: Input[];
  run: (xs: Tensor[], device: string) => Tensor;
  out: Expect;
  /** NaN positions in the upstream gradient (default none: random finite values). */
  upstream?: number[];
  /** Expected gradient patterns, one per input (null: not checked); omitted: no backward. */
  grads?: (Expect | null)[];
}

const range = (a: number, b: number) => Array.from({ length: b - a }, (_, i) => a + i);
const size = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

function inputValues(spec: Input, seed: number): number[] {
  const v = spec.values ? [...spec.values] : randomValues(size(spec.shape), seed).map((x) => (x === 0 ? 0.5 : x));
  for (const i of spec.nan ?? []) v[i] = NaN;
  for (const i of spec.inf ?? []) v[i] = Infinity;
  return v;
}

// ---- the table -------------------------------------------------------------------------------

const positive = [0.5, 0.3, 0.2, 0.25];
const signed = [0.5, -0.5, 0, 0.25];
type Unary = [string, (x: Tensor) => Tensor, { domain?: number[]; gradAtNaN?: Expect; gradOfNaNUpstream?: Expect }];
const UNARY: Unary[] = [
  ["neg", neg, { gradAtNaN: [] }], // d(-x)/dx = -1 whatever x
  ["exp", exp, {}],
  ["log", log, { domain: positive }],
  ["sqrt", sqrt, { domain: positive }],
  ["tanh", tanh, {}],
  ["relu", relu, { gradAtNaN: [], gradOfNaNUpstream: [0] }], // torch: relu'(NaN) = 1; 0 exactly where x <= 0
  ["sigmoid", sigmoid, {}],
  ["square", square, {}],
  ["abs", abs, { gradAtNaN: [] }], // torch: sgn(NaN) = 0
  ["pow 2.5", (x) => pow(x, 2.5), { domain: positive }],
  ["gelu (tanh form)", gelu, {}],
  ["silu", silu, {}],
  ["scale", (x) => scale(x, 3), { gradAtNaN: [] }],
  ["addScalar", (x) => addScalar(x, 3), { gradAtNaN: [] }],
];

const unaryCases: NanCase[] = UNARY.flatMap(([name, f, o]): NanCase[] => [
  {
    family: "elementwise unary", name: `${name}: NaN input`,
    inputs: [{ shape: [4], values: positive, nan: [0] }], run: ([x]) => f(x!), out: [0], grads: [o.gradAtNaN ?? [0]],
  },
  {
    family: "elementwise unary", name: `${name}: NaN upstream gradient`,
    inputs: [{ shape: [4], values: o.domain ?? signed }], run: ([x]) => f(x!), out: [], upstream: [0, 1, 2], grads: [o.gradOfNaNUpstream ?? [0, 1, 2]],
  },
]);

const ab = [{ shape: [3], values: [0, 1.5, 2], nan: [0] }, { shape: [3], values: [0.5, 0, 3], nan: [1] }];
const binaryCases: NanCase[] = [
  { family: "elementwise binary", name: "add", inputs: ab, run: ([a, b]) => add(a!, b!), out: [0, 1], grads: [[], []] },
  { family: "elementwise binary", name: "sub", inputs: ab, run: ([a, b]) => sub(a!, b!), out: [0, 1], grads: [[], []] },
  { family: "elementwise binary", name: "mul", inputs: ab, run: ([a, b]) => mul(a!, b!), out: [0, 1], grads: [[1], [0]] },
  { family: "elementwise binary", name: "div", inputs: ab, run: ([a, b]) => div(a!, b!), out: [0, 1], grads: [[1], [0, 1]] },
  {
    family: "elementwise binary", name: "mul, broadcast [2, 3] · [3]",
    inputs: [{ shape: [2, 3], nan: [0] }, { shape: [3] }], run: ([a, b]) => mul(a!, b!), out: [0], grads: [[], [0]],
  },
  {
    family: "elementwise binary", name: "add, broadcast, NaN upstream gradient",
    inputs: [{ shape: [2, 3] }, { shape: [3] }], run: ([a, b]) => add(a!, b!), out: [], upstream: [2], grads: [[2], [2]],
  },
];

const reductionCases: NanCase[] = [
  { family: "reduction", name: "sum over a dim", inputs: [{ shape: [2, 3], nan: [1] }], run: ([x]) => sum(x!, 1), out: [0], grads: [[]] },
  { family: "reduction", name: "mean of all", inputs: [{ shape: [2, 3], nan: [4] }], run: ([x]) => mean(x!), out: "all", grads: [[]] },
  { family: "reduction", name: "sum of all, NaN upstream gradient", inputs: [{ shape: [2, 3] }], run: ([x]) => sum(x!), out: [], upstream: [0], grads: ["all"] },
  { family: "reduction", name: "mean over dim 0, NaN upstream gradient", inputs: [{ shape: [2, 3] }], run: ([x]) => mean(x!, 0), out: [], upstream: [2], grads: [[2, 5]] },
];

const matmulCases: NanCase[] = [
  // A [2, 3] with NaN at (0, 1): row 0 of the product; B's gradient Aᵀ·g is NaN in row 1
  { family: "matmul", name: "NaN in A", inputs: [{ shape: [2, 3], nan: [1] }, { shape: [3, 2] }], run: ([a, b]) => matmul(a!, b!), out: [0, 1], grads: [[], [2, 3]] },
  // 0 · NaN is NaN: a zero A still spreads B's NaN (B's column 0) into the product
  {
    family: "matmul", name: "zero A times NaN in B",
    inputs: [{ shape: [2, 3], values: [0, 0, 0, 0, 0, 0] }, { shape: [3, 2], nan: [0] }], run: ([a, b]) => matmul(a!, b!), out: [0, 2], grads: [[0, 3], []],
  },
  {
    family: "matmul", name: "NaN upstream gradient",
    inputs: [{ shape: [2, 3] }, { shape: [3, 2] }], run: ([a, b]) => matmul(a!, b!), out: [], upstream: [0], grads: [[0, 1, 2], [0, 2, 4]],
  },
  {
    family: "matmul", name: "linear with a NaN bias",
    inputs: [{ shape: [2, 3] }, { shape: [2, 3] }, { shape: [2], nan: [1] }], run: ([x, w, b]) => linear(x!, w!, b!), out: [1, 3], grads: [[], [], []],
  },
];

const normCases: NanCase[] = [
  {
    family: "layernorm", name: "NaN in a row",
    inputs: [{ shape: [2, 4], nan: [2] }, { shape: [4] }, { shape: [4] }], run: ([x, w, b]) => layerNorm(x!, w!, b!, 1e-5),
    out: [0, 1, 2, 3], grads: [[0, 1, 2, 3], "all", []],
  },
  {
    family: "layernorm", name: "NaN upstream gradient",
    inputs: [{ shape: [2, 4] }, { shape: [4] }, { shape: [4] }], run: ([x, w, b]) => layerNorm(x!, w!, b!, 1e-5),
    out: [], upstream: [5], grads: [[4, 5, 6, 7], [1], [1]],
  },
  {
    family: "rmsnorm", name: "NaN in a row",
    inputs: [{ shape: [2, 4], nan: [2] }, { shape: [4] }], run: ([x, w]) => rmsNorm(x!, w!, 1e-6),
    out: [0, 1, 2, 3], grads: [[0, 1, 2, 3], "all"],
  },
  {
    family: "rmsnorm", name: "NaN upstream gradient",
    inputs: [{ shape: [2, 4] }, { shape: [4] }], run: ([x, w]) => rmsNorm(x!, w!, 1e-6),
    out: [], upstream: [5], grads: [[4, 5, 6, 7], [1]],
  },
  {
    family: "rmsnorm", name: "NaN in a row, without weight",
    inputs: [{ shape: [2, 4], nan: [5] }], run: ([x]) => rmsNorm(x!, null, 1e-6), out: [4, 5, 6, 7], grads: [[4, 5, 6, 7]],
  },
];

// x [1, 1, 2, 4] at positions 3 and 4: element j pairs with j ± 2, forward and backward.
const rotary = ([x]: Tensor[], device: string) => {
  const { cos, sin } = rotaryCosSin(2, 4, { offset: 3, device });
  return applyRotary(x!, cos, sin);
};
const ropeCases: NanCase[] = [
  { family: "rope", name: "NaN in x", inputs: [{ shape: [1, 1, 2, 4], nan: [1] }], run: rotary, out: [1, 3], grads: [[]] },
  { family: "rope", name: "NaN upstream gradient", inputs: [{ shape: [1, 1, 2, 4] }], run: rotary, out: [], upstream: [6], grads: [[4, 6]] },
];

const softmaxCases: NanCase[] = ([["softmax", softmax], ["logSoftmax", logSoftmax]] as const).flatMap(([name, f]): NanCase[] => [
  { family: "softmax", name: `${name}: NaN in a row`, inputs: [{ shape: [2, 3], nan: [1] }], run: ([x]) => f(x!), out: [0, 1, 2], grads: [[0, 1, 2]] },
  { family: "softmax", name: `${name}: a row of NaN`, inputs: [{ shape: [2, 3], nan: [0, 1, 2] }], run: ([x]) => f(x!), out: [0, 1, 2], grads: [[0, 1, 2]] },
  { family: "softmax", name: `${name}: +Inf in a row`, inputs: [{ shape: [2, 3], inf: [4] }], run: ([x]) => f(x!), out: [3, 4, 5], grads: [[3, 4, 5]] },
  { family: "softmax", name: `${name}: NaN upstream gradient`, inputs: [{ shape: [2, 3] }], run: ([x]) => f(x!), out: [], upstream: [4], grads: [[3, 4, 5]] },
]);

const targets = (values: number[]): Input => ({ shape: [values.length], values, int: true });
const ceCases: NanCase[] = [
  {
    family: "cross-entropy", name: "NaN logit, mean",
    inputs: [{ shape: [3, 4], nan: [2] }, targets([1, 0, 2])], run: ([x, t]) => crossEntropy(x!, t!), out: "all", grads: [[0, 1, 2, 3], null],
  },
  {
    family: "cross-entropy", name: "NaN logit, reduction none",
    inputs: [{ shape: [3, 4], nan: [6] }, targets([1, 0, 2])], run: ([x, t]) => crossEntropy(x!, t!, { reduction: "none" }), out: [1], grads: [[4, 5, 6, 7], null],
  },
  {
    // PyTorch: the loss ignores the row, its gradient 0 - softmax·0 is NaN
    family: "cross-entropy", name: "NaN logit in an ignored row: finite loss, NaN gradient for that row",
    inputs: [{ shape: [3, 4], nan: [1] }, targets([-100, 0, 2])], run: ([x, t]) => crossEntropy(x!, t!), out: [], grads: [[0, 1, 2, 3], null],
  },
  {
    family: "cross-entropy", name: "NaN upstream gradient, reduction none",
    inputs: [{ shape: [3, 4] }, targets([1, 0, 2])], run: ([x, t]) => crossEntropy(x!, t!, { reduction: "none" }), out: [], upstream: [2], grads: [[8, 9, 10, 11], null],
  },
  {
    family: "cross-entropy", name: "NaN upstream gradient, mean",
    inputs: [{ shape: [3, 4] }, targets([1, 0, 2])], run: ([x, t]) => crossEntropy(x!, t!), out: [], upstream: [0], grads: ["all", null],
  },
];

// x · keep / (1 - p): a dropped NaN is NaN · 0 = NaN, in the forward and the backward, as in PyTorch.
const dropoutCases: NanCase[] = [
  {
    family: "dropout", name: "NaN input (dropped elements too)",
    inputs: [{ shape: [40], nan: range(0, 40) }], run: ([x]) => dropout(x!, 0.5, { generator: new Generator(1) }), out: "all", grads: [[]],
  },
  {
    family: "dropout", name: "NaN upstream gradient (dropped elements too)",
    inputs: [{ shape: [40] }], run: ([x]) => dropout(x!, 0.5, { generator: new Generator(1) }), out: [], upstream: range(0, 40), grads: ["all"],
  },
];

// q, k, v [1, 1, 4, D], causal: query i sees keys 0..i. Row r of q/out is flat indices rD..rD+D-1.
// Gradients: PyTorch's math computes every (query, key) product, masked ones included, and a masked
// weight 0 times a NaN is NaN there; a causal kernel skips the keys a query cannot see (the CUDA
// ones do), so the elements that are NaN only through such 0·NaN products are `free`. D = 3 runs
// the CUDA row kernels, D = 32 the flash kernels (native/cuda/attention.cu).
function attentionCases(D: number): NanCase[] {
  const qkv = (nan: { q?: number[]; k?: number[]; v?: number[] } = {}): Input[] => [
    { shape: [1, 1, 4, D], nan: nan.q }, { shape: [1, 1, 4, D], nan: nan.k }, { shape: [1, 1, 4, D], nan: nan.v },
  ];
  const at = (row: number, dim: number) => row * D + dim;
  const rows = (...r: number[]) => r.flatMap((i) => range(at(i, 0), at(i + 1, 0)));
  const attend = ([q, k, v]: Tensor[]) => scaledDotProductAttention(q!, k!, v!, { causal: true });
  const cases: Omit<NanCase, "family">[] = [
    // The reported defect: every score of query 1 is NaN, which must not read as "fully masked" (zeros).
    {
      name: "a query row of NaN (all its scores NaN)", inputs: qkv({ q: rows(1) }), run: attend, out: rows(1),
      grads: [rows(1), { nan: rows(0, 1), free: rows(2, 3) }, { nan: rows(0, 1), free: rows(2, 3) }],
    },
    {
      name: "one NaN in a query", inputs: qkv({ q: [at(1, 1)] }), run: attend, out: rows(1),
      grads: [rows(1), { nan: rows(0, 1), free: [at(2, 1), at(3, 1)] }, { nan: rows(0, 1), free: rows(2, 3) }],
    },
    // key 2 (dim 0) is seen by queries 2 and 3
    {
      name: "NaN in a key", inputs: qkv({ k: [at(2, 0)] }), run: attend, out: rows(2, 3),
      grads: [{ nan: rows(2, 3), free: [at(0, 0), at(1, 0)] }, "all", "all"],
    },
    {
      name: "NaN in the value every query sees", inputs: qkv({ v: [at(0, 0)] }), run: attend, out: [0, 1, 2, 3].map((r) => at(r, 0)),
      grads: ["all", "all", []],
    },
    {
      name: "NaN upstream gradient", inputs: qkv(), run: attend, out: [], upstream: [0],
      grads: [rows(0), rows(0), { nan: [0], free: [1, 2, 3].map((r) => at(r, 0)) }],
    },
    {
      name: "a query row of NaN, not causal",
      inputs: qkv({ q: rows(2) }), run: ([q, k, v]) => scaledDotProductAttention(q!, k!, v!, { causal: false }), out: rows(2),
      grads: [rows(2), "all", "all"],
    },
  ];
  return cases.map((c) => ({ ...c, family: "attention", name: `${c.name} (D=${D})` }));
}
const attentionCasesAll = [...attentionCases(3), ...attentionCases(32)];

const ids = targets([1, 2, 2, 4]);
const embeddingCases: NanCase[] = [
  { family: "embedding", name: "NaN in a weight row", inputs: [ids, { shape: [5, 3], nan: [7] }], run: ([i, w]) => embedding(i!, w!), out: [4, 7], grads: [null, []] },
  { family: "embedding", name: "backward: NaN upstream gradient", inputs: [ids, { shape: [5, 3] }], run: ([i, w]) => embedding(i!, w!), out: [], upstream: [0], grads: [null, [3]] },
];

// y [2, 3] + s·(drop(x)·Aᵀ)·Bᵀ with x [2, 4], A [2, 4], B [3, 2].
const loraInputs = (nan: { x?: number[]; B?: number[] } = {}): Input[] => [
  { shape: [2, 3] }, { shape: [2, 4], nan: nan.x }, { shape: [2, 4] }, { shape: [3, 2], nan: nan.B },
];
const loraCases: NanCase[] = [
  {
    family: "lora", name: "NaN in lora_B",
    inputs: loraInputs({ B: [2] }), run: ([y, x, A, B]) => loraDelta(y!, x!, A!, B!, { scaling: 2 }), out: [1, 4], grads: [[], "all", [0, 1, 2, 3], []],
  },
  {
    family: "lora", name: "NaN input with dropout (dropped elements too)",
    inputs: loraInputs({ x: range(0, 8) }), run: ([y, x, A, B]) => loraDelta(y!, x!, A!, B!, { scaling: 2, dropout: 0.5, generator: new Generator(2) }),
    out: "all", grads: [[], [], "all", "all"],
  },
  {
    family: "lora", name: "NaN upstream gradient",
    inputs: loraInputs(), run: ([y, x, A, B]) => loraDelta(y!, x!, A!, B!, { scaling: 2 }), out: [], upstream: [0], grads: [[0], [0, 1, 2, 3], "all", [0, 1]],
  },
];

const optimCases: NanCase[] = [
  {
    family: "optim", name: "AdamW step with a NaN gradient element",
    inputs: [{ shape: [3], grad: false }],
    run: ([p], device) => {
      p!.grad = tensor([NaN, 0.1, -0.2], { device });
      const opt = new AdamW([p!], { lr: 1e-2, weightDecay: 0.1 });
      opt.step();
      opt.dispose();
      return p!;
    },
    out: [0],
  },
  {
    family: "optim", name: "clipGradNorm with a NaN gradient scales every gradient by NaN",
    inputs: [{ shape: [3], grad: false }],
    run: ([p], device) => {
      p!.grad = tensor([NaN, 0.1, -0.2], { device });
      expect(clipGradNorm([p!], 1)).toBeNaN();
      return p!.grad;
    },
    out: "all",
  },
];

export const NAN_TABLE: NanCase[] = [
  ...unaryCases, ...binaryCases, ...reductionCases, ...matmulCases, ...normCases, ...ropeCases, ...softmaxCases, ...ceCases, ...dropoutCases,
  ...attentionCasesAll, ...embeddingCases, ...loraCases, ...optimCases,
];

// ---- the runner ------------------------------------------------------------------------------

function expectPattern(t: Tensor, want: Expect, what: string): void {
  const got = Array.from(t.dataSync());
  const nan = want === "all" ? got.map((_, i) => i) : Array.isArray(want) ? want : want.nan;
  const free = Array.isArray(want) || want === "all" ? [] : want.free;
  const bad = got.map((v, i) =>
    nan.includes(i) ? (Number.isNaN(v) ? null : `[${i}] = ${v}, want NaN`) : free.includes(i) || Number.isFinite(v) ? null : `[${i}] = ${v}, want finite`,
  );
  const errors = bad.filter((b) => b !== null);
  expect(errors, `${what}: ${errors.join("; ")}`).toEqual([]);
}

/** Registers the table's tests for `device` ("cpu", "cuda:0"). */
export function describeNanPropagation(device: string, skipReason?: string): void {
  describe(`NaN propagation on ${device}`, () => {
    if (skipReason) {
      it.skip(skipReason, () => {});
      return;
    }
    for (const [k, c] of NAN_TABLE.entries()) {
      it(`${c.family}: ${c.name}`, () => {
        tidy(() => {
          const xs = c.inputs.map((spec, j) =>
            spec.int
              ? tensor(Int32Array.from(spec.values!), { shape: spec.shape, device })
              : tensor(inputValues(spec, 100 * k + j), { shape: spec.shape, device, requiresGrad: c.grads !== undefined && c.grads[j] !== null }),
          );
          const out = c.run(xs, device);
          expectPattern(out, c.out, "forward");
          if (!c.grads) return;
          const g = randomValues(out.size, 7).map((v) => (v === 0 ? 0.5 : v));
          for (const i of c.upstream ?? []) g[i] = NaN;
          out.backward(tensor(g, { shape: [...out.shape], device }));
          c.grads.forEach((want, j) => {
            if (want === null) return;
            expect(xs[j]!.grad, `input ${j} got no gradient`).not.toBeNull();
            expectPattern(xs[j]!.grad!, want, `gradient of input ${j}`);
          });
        });
      });
    }
  });
}

// The CPU run (test/gpu/nan-propagation.test.ts imports this file for the table and runs it on
// CUDA). The exp, GELU and dropout kernels have AVX-512, AVX2 and scalar versions, picked once per
// process from LOWRANK_SIMD: the table runs here at this host's level, then in child processes at
// the lower ones.
if (expect.getState().testPath?.endsWith("ops/nan-propagation.test.ts")) {
  describeNanPropagation("cpu");
  const lower = ["avx512", "avx2", "scalar"].filter((l, i, all) => i > all.indexOf(info().simd));
  it.skipIf(process.env.LOWRANK_SIMD !== undefined || lower.length === 0)(`the same on the CPU at SIMD levels ${lower.join(", ")} (child processes)`, () => {
    const vitest = join(dirname(createRequire(import.meta.url).resolve("vitest/package.json")), "vitest.mjs");
    for (const level of lower) {
      const r = spawnSync(process.execPath, [vitest, "run", "test/ops/nan-propagation.test.ts"], { env: { ...process.env, LOWRANK_SIMD: level, NO_COLOR: "1" }, encoding: "utf8" });
      expect(r.status, `LOWRANK_SIMD=${level}:\n${r.stdout}\n${r.stderr}`).toBe(0);
      expect(r.stdout).toMatch(new RegExp(`${NAN_TABLE.length} passed`));
    }
  });
}
