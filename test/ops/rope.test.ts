import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { tensor, tidy, type Tensor } from "../../lib/index.js";
import { applyRotary, mul, rotaryAttentionFactor, rotaryCosSin, rotaryInvFreq, sum, type RopeScaling } from "../../lib/ops/index.js";
import { LlamaConfig } from "../../lib/models/llama/config.js";
import { expectClose, gradcheck, randomValues } from "../helpers.js";

const t = (shape: number[], seed: number) => tensor(randomValues(shape.reduce((a, b) => a * b, 1), seed), { shape });

/** x·cos + rotate_half(x)·sin in float64 over x [rows, T, D] (flat) with cos, sin [T, D]. */
function refRotary(x: ArrayLike<number>, cos: ArrayLike<number>, sin: ArrayLike<number>, T: number, D: number): number[] {
  const h = D / 2;
  return Array.from(x, (v, i) => {
    const j = i % D, p = Math.floor(i / D) % T, rot = j < h ? -x[i + h]! : x[i - h]!;
    return v * cos[p * D + j]! + rot * sin[p * D + j]!;
  });
}

describe("applyRotary", () => {
  it("matches a float64 reference, for a contiguous x and for a transposed view ([B, T, H, D] read as [B, H, T, D])", () => {
    tidy(() => {
      const { cos, sin } = rotaryCosSin(5, 8, { theta: 10000, offset: 3 });
      const x = t([2, 3, 5, 8], 1);
      const c = cos.dataSync(), s = sin.dataSync();
      expectClose(applyRotary(x, cos, sin), refRotary(x.dataSync(), c, s, 5, 8), 1e-6);
      const btHd = t([2, 5, 3, 8], 2), view = btHd.transpose(1, 2);
      expectClose(applyRotary(view, cos, sin), refRotary(view.contiguous().dataSync(), c, s, 5, 8), 1e-6);
    });
  });

  it("backward is the transposed rotation (finite differences), also through a transposed view", () => {
    tidy(() => {
      const { cos, sin } = rotaryCosSin(4, 6, { theta: 500000, offset: 11 });
      gradcheck((x) => applyRotary(x!, cos, sin), [t([2, 2, 4, 6], 3)]);
      gradcheck((x) => applyRotary(x!.transpose(1, 2), cos, sin), [t([1, 4, 3, 6], 4)]);
    });
  });

  it("names the tensor, the shapes and the fix for bad input", () => {
    tidy(() => {
      const { cos, sin } = rotaryCosSin(5, 8);
      expect(() => applyRotary(t([1, 2, 4, 8], 5), cos, sin)).toThrow(/cos has shape \[5, 8\] but x \[1, 2, 4, 8\] needs \[4, 8\].*rotaryCosSin\(4, 8\)/);
      expect(() => applyRotary(t([1, 2, 5, 7], 5), t([5, 7], 6), t([5, 7], 7))).toThrow(/head dimension D of x \[1, 2, 5, 7\] must be even/);
      expect(() => applyRotary(t([8], 5), cos, sin)).toThrow(/x must be \[\.\.\., T, D\]/);
      expect(() => rotaryCosSin(4, 7)).toThrow(/D \(the head dimension\) must be a positive even integer, got 7/);
      expect(() => rotaryCosSin(4, 8, { offset: -1 })).toThrow(/offset must be an integer >= 0/);
    });
  });
});

describe("rotaryCosSin", () => {
  it("matches cos and sin of (offset + t)/theta^(2i/D) in float64, both halves equal", () => {
    tidy(() => {
      const T = 6, D = 10, theta = 10000, offset = 2;
      const { cos, sin } = rotaryCosSin(T, D, { theta, offset });
      expect(cos.shape).toEqual([T, D]);
      const angle = (p: number, j: number) => (offset + p) / theta ** ((2 * (j % (D / 2))) / D);
      const idx = Array.from({ length: T * D }, (_, i) => [Math.floor(i / D), i % D] as const);
      expectClose(cos, idx.map(([p, j]) => Math.cos(angle(p, j))), 1e-6);
      expectClose(sin, idx.map(([p, j]) => Math.sin(angle(p, j))), 1e-6);
    });
  });
});

interface Case {
  theta: number; D: number; T: number; offset: number; rope_scaling?: Record<string, number | string | boolean>; inv_freq?: number[]; attention_scaling?: number; shape: number[]; cos: number[]; sin: number[]; x: number[]; y: number[]; w: number[]; dx: number[];
}
const fixture: { cases: Case[] } = JSON.parse(readFileSync(join(import.meta.dirname, "../fixtures/rope.json"), "utf8"));

describe("against transformers' Llama (test/fixtures/rope.json, make_rope_fixture.py)", () => {
  // config.json's snake_case rope_scaling as rotaryCosSin takes it, read as config.json is
  const scalingOf = (s: Record<string, number | string | boolean> | undefined): RopeScaling | null =>
    !s ? null : LlamaConfig.fromHF({ model_type: "llama", max_position_embeddings: 8192, rope_scaling: s }).ropeScaling;
  it("covers plain RoPE, linear, llama3 and yarn scaling", () => {
    expect(fixture.cases.map((c) => c.rope_scaling?.rope_type ?? "default").sort()).toEqual(["default", "default", "default", "default", "linear", "llama3", "yarn", "yarn", "yarn"]);
  });
  for (const c of fixture.cases) {
    const scaling = scalingOf(c.rope_scaling);
    it(`theta ${c.theta}, D ${c.D}, T ${c.T}, offset ${c.offset}, ${scaling?.ropeType ?? "no"} scaling: LlamaRotaryEmbedding's cos/sin, apply_rotary_pos_emb and its gradient`, () => {
      // transformers' scaled inverse frequencies exactly (same float32 steps)
      if (c.inv_freq) expect(rotaryInvFreq(c.D, c.theta, scaling)).toEqual(c.inv_freq.map(Math.fround));
      if (c.attention_scaling !== undefined) expect(rotaryAttentionFactor(scaling)).toBeCloseTo(c.attention_scaling, 12);
      tidy(() => {
        const { cos, sin } = rotaryCosSin(c.T, c.D, { theta: c.theta, offset: c.offset, scaling });
        // float32 steps as in transformers: within an ulp or two of its cos and sin
        const maxDiff = (a: Tensor, b: number[]) => Math.max(...Array.from(a.dataSync(), (v, i) => Math.abs(v - b[i]!)));
        expect(maxDiff(cos, c.cos)).toBeLessThanOrEqual(2.5e-7);
        expect(maxDiff(sin, c.sin)).toBeLessThanOrEqual(2.5e-7);
        const x = tensor(c.x, { shape: c.shape, requiresGrad: true });
        const y = applyRotary(x, tensor(c.cos, { shape: [c.T, c.D] }), tensor(c.sin, { shape: [c.T, c.D] }));
        expectClose(y, c.y, 1e-6);
        sum(mul(y, tensor(c.w, { shape: c.shape }))).backward();
        expectClose(x.grad!, c.dx, 1e-6);
        expectClose(applyRotary(x, cos, sin), c.y, 1e-6);
      });
    });
  }
});
