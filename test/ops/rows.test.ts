// The row kernels together (native/cpu/rows.h, vexp.h): a forward + backward through every one
// leaves nothing behind, and the exp behind softmax, cross-entropy, attention and GELU is accurate
// at every SIMD level (AVX-512, AVX2, scalar, picked once per process from LOWRANK_SIMD): the
// first check runs at this process's level, the second re-runs it in child processes at the lower ones.
import { spawnSync } from "node:child_process";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { expect, it } from "vitest";
import { Generator, info, memory, tensor, tidy } from "../../lib/index.js";
import { gelu, sum } from "../../lib/ops/index.js";
import { scaledDotProductAttention } from "../../lib/ops/attention.js";
import { crossEntropy } from "../../lib/ops/crossentropy.js";
import { dropout } from "../../lib/ops/dropout.js";
import { layerNorm } from "../../lib/ops/layernorm.js";
import { logSoftmax, softmax } from "../../lib/ops/softmax.js";
import { expectClose } from "../helpers.js";
import { arr, attentionRef, crossEntropyRef, philoxKeep, softmaxRef, t, type AttnCase } from "./reference.js";

it("forward + backward of every op leaves no tensor or buffer behind", () => {
  const step = () =>
    tidy(() => {
      const x = t([4, 6, 8], 300).requireGrad(), w = t([8], 301).requireGrad(), b = t([8], 302).requireGrad();
      const h = dropout(layerNorm(x, w, b), 0.1, { generator: new Generator(1) });
      const att = scaledDotProductAttention(h.reshape(1, 4, 6, 8), h.reshape(1, 4, 6, 8), h.reshape(1, 4, 6, 8), {
        attnMask: tensor(new Int32Array([1, 1, 1, 1, 0, 0]), { shape: [1, 6] }),
        dropout: 0.2,
        generator: new Generator(2),
      });
      const logits = logSoftmax(softmax(att.reshape(24, 8), 0));
      const loss = crossEntropy(logits, tensor(new Int32Array(24).map((_, i) => (i % 3 ? i % 8 : -100)), { shape: [24] }));
      loss.backward();
      [x, w, b].forEach((p) => p.grad?.dispose());
    });
  step();
  const before = memory().cpu!;
  step();
  expect(memory().cpu).toMatchObject({ bytes: before.bytes, buffers: before.buffers, tensors: before.tensors });
});

const simdTest = "exp-based kernels are accurate at this SIMD level";
it(simdTest, () => {
  tidy(() => {
    // Row lengths around the 8- and 16-wide vectors and their tails; arguments from 0 down to -87
    // (the last normal float) element by element, plus -inf (exactly 0) and huge ones (shifted away).
    for (const n of [1, 7, 8, 9, 15, 16, 17, 33, 88]) {
      const row = Array.from({ length: n }, (_, j) => -j);
      const ref = softmaxRef(row, n, false);
      const y = arr(softmax(tensor(row)));
      const worst = Math.max(...y.map((v, j) => Math.abs(v - ref[j]!) / ref[j]!));
      expect(worst, `softmax of [0, -1, ..., ${1 - n}]: worst element-wise relative error`).toBeLessThan(1e-5);
      expectClose(logSoftmax(tensor(row)), softmaxRef(row, n, true), 1e-6);
    }
    expect(arr(softmax(tensor([3e38, -Infinity, 3e38, 0])))).toEqual([0.5, 0, 0.5, 0]);
    const logits = t([3, 1001], 60, 20).requireGrad(), tg = [1000, 0, 517];
    const ref = crossEntropyRef(arr(logits), 1001, tg, -100);
    const loss = crossEntropy(logits, tensor(new Int32Array(tg), { shape: [3] }), { reduction: "sum" });
    expectClose([loss.item()], [ref.sum], 1e-5);
    loss.backward();
    expectClose(logits.grad!, ref.gradSum, 1e-5);
    // GELU goes through the same exp (x·sigmoid(2u)): element-wise error against float64 over
    // -12..12 (vector bodies and tails), and the saturated ends (exactly x, and -0 for large -x).
    const gx = Array.from({ length: 241 }, (_, j) => -12 + 0.1 * j);
    const geluRef = (v: number) => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3)));
    const geluGradRef = (v: number) => {
      const k = Math.sqrt(2 / Math.PI), th = Math.tanh(k * (v + 0.044715 * v ** 3));
      return 0.5 * (1 + th) + 0.5 * v * (1 - th * th) * k * (1 + 3 * 0.044715 * v * v);
    };
    const gIn = tensor(gx).requireGrad();
    const gy = arr(gelu(gIn));
    gx.forEach((v, j) => expect(Math.abs(gy[j]! - geluRef(v)), `gelu(${v})`).toBeLessThanOrEqual(2e-6 * Math.max(1, Math.abs(v))));
    sum(gelu(gIn)).backward();
    const gg = arr(gIn.grad!);
    gx.forEach((v, j) => expect(Math.abs(gg[j]! - geluGradRef(v)), `gelu'(${v})`).toBeLessThanOrEqual(2e-6 * Math.max(1, Math.abs(v))));
    expect(arr(gelu(tensor([100, -100, 0, -3e38])))).toEqual([100, -0, 0, -0]);
    // Dropout's 16-lane Philox (AVX-512): groups of 64 entered and left mid-way, tails, and the carry
    // into the counter's high word (counter 16·(j / 64) reaches 2^32 at element j = 2^34).
    const seed = 0xfeed_beef_1234n, offset = 2n ** 34n - 71n;
    const x = t([3, 53], 61, 1, 2);
    const kept = arr(dropout(x, 0.5, { generator: new Generator(seed).setState({ seed: String(seed), offset: String(offset) }) })).map((v) => v !== 0);
    expect(kept).toEqual(kept.map((_, i) => philoxKeep(seed, offset, BigInt(i), 0.5)));
  });
  const drop = { p: 0.2, seed: 5n, offset: 2n ** 34n - 100n };
  for (const [i, c] of ([
    { B: 1, H: 2, Tq: 70, Tk: 70, D: 9, causal: true },
    { B: 2, H: 1, Tq: 5, Tk: 7, D: 3, causal: true, keep: [0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0], dropout: drop },
  ] as AttnCase[]).entries()) {
    tidy(() => {
      const q = t([c.B, c.H, c.Tq, c.D], 70 + i, 2).requireGrad(), k = t([c.B, c.H, c.Tk, c.D], 80 + i, 2).requireGrad();
      const v = t([c.B, c.H, c.Tk, c.D], 90 + i).requireGrad(), g = t([c.B, c.H, c.Tq, c.D], 100 + i);
      const ref = attentionRef(c, arr(q), arr(k), arr(v), arr(g));
      const out = scaledDotProductAttention(q, k, v, {
        attnMask: c.keep ? tensor(new Int32Array(c.keep), { shape: [c.B, c.Tk] }) : null,
        dropout: c.dropout?.p,
        generator: new Generator(0).setState({ seed: String(c.dropout?.seed ?? 0), offset: String(c.dropout?.offset ?? 0) }),
      });
      expectClose(out, ref.out, 1e-5);
      out.backward(g);
      expectClose(q.grad!, ref.dq, 1e-4);
      expectClose(k.grad!, ref.dk, 1e-4);
      expectClose(v.grad!, ref.dv, 1e-4);
    });
  }
});

const levels = ["avx512", "avx2", "scalar"].filter((l, i, all) => i > all.indexOf(info().simd));
it.skipIf(process.env.LOWRANK_SIMD !== undefined || levels.length === 0)(`the same at SIMD levels ${levels.join(", ")} (child processes)`, () => {
  const vitest = join(dirname(createRequire(import.meta.url).resolve("vitest/package.json")), "vitest.mjs");
  for (const level of levels) {
    const r = spawnSync(process.execPath, [vitest, "run", "test/ops/rows.test.ts", "-t", simdTest], {
      env: { ...process.env, LOWRANK_SIMD: level, NO_COLOR: "1" },
      encoding: "utf8",
    });
    expect(r.status, `LOWRANK_SIMD=${level}:\n${r.stdout}\n${r.stderr}`).toBe(0);
    expect(r.stdout).toMatch(/1 passed/);
  }
});
