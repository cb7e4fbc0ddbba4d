// The chapter's vocabulary (LoRALayer, LinearWithLoRA, addLoraToModel, mergeLoraWeights) against
// the PEFT-style layer it mirrors: the same output with A and B transposed, the same gradients,
// merging that agrees with the unmerged output, and the chapter's parameter-count arithmetic.
import { describe, expect, it } from "vitest";
import {
  add, Conv1D, copyInto, Generator, Linear, LoraLinear, noGrad, sum, tensor, tidy, type Tensor,
} from "../../lib/index.js";
import { addLoraToModel, LinearWithLoRA, LoRALayer, mergeLoraWeights } from "../../lib/peft/chapter.js";
import { relError } from "../helpers.js";
import { loadGpt2, logitsOf } from "./extra-fixtures.js";

const input = (rows: number, cols: number) => tensor(Float32Array.from({ length: rows * cols }, (_, i) => Math.sin(0.37 * i + 1)), { shape: [rows, cols] });

/** Gives lora_B values (it starts at zero, which would make every comparison trivial). */
function trainLike(layer: LinearWithLoRA): void {
  noGrad(() => {
    const B = layer.lora.lora_B;
    const values = tensor(Float32Array.from({ length: B.size }, (_, i) => Math.cos(0.9 * i) / 4), { shape: B.shape });
    copyInto(B, values);
    values.dispose();
  });
}

describe("the chapter's LoRA layers", () => {
  it("LoRALayer: A [in, rank] kaiming-uniform with fan-in = rank, B [rank, out] zeros, scaling alpha/rank", () => {
    const lora = new LoRALayer(768, 768, 8, 16, { generator: new Generator(1) });
    expect(lora.lora_A.shape).toEqual([768, 8]);
    expect(lora.lora_B.shape).toEqual([8, 768]);
    expect(lora.scaling).toBe(2);
    const bound = 1 / Math.sqrt(8); // torch's kaiming_uniform_(a=√5) on an [in, rank] tensor
    const A = lora.lora_A.dataSync();
    expect(Math.max(...A.map(Math.abs))).toBeLessThanOrEqual(bound);
    expect(Math.max(...A.map(Math.abs))).toBeGreaterThan(0.95 * bound);
    expect(lora.lora_B.dataSync().every((v) => v === 0)).toBe(true);
    lora.dispose();
  });

  for (const kind of ["linear", "conv1d"] as const) {
    it(`LinearWithLoRA(${kind}) computes what PEFT's layer computes with A = lora_Aᵀ and B = lora_Bᵀ, gradients included`, () => {
      const generator = new Generator(3);
      const base = kind === "linear" ? new Linear(12, 10, { generator }) : new Conv1D(10, 12, { generator });
      const chapter = new LinearWithLoRA(base, 4, 8, { generator });
      trainLike(chapter);
      expect(base.weight.requiresGrad).toBe(false);
      // PEFT-style layer over the same base layer, factors transposed
      const peft = new LoraLinear(base);
      peft.addAdapter("d", { r: 4, alpha: 8, scaling: 2, dropout: 0, init: true });
      peft.activeAdapters = ["d"];
      noGrad(() => {
        copyInto(peft.loraA("d"), chapter.lora.lora_A.transpose(0, 1));
        copyInto(peft.loraB("d"), chapter.lora.lora_B.transpose(0, 1));
      });
      const x = input(5, 12);
      const [yc, yp, direct] = tidy(() => [
        chapter.forward(x).dataSync(), peft.forward(x).dataSync(), add(base.forward(x), chapter.lora.forward(x)).dataSync(),
      ]);
      expect(relError(yc, yp)).toBeLessThan(1e-6);
      expect(relError(yc, direct)).toBeLessThan(1e-6);
      // gradients of a scalar loss: chapter's ∂/∂A equals PEFT's ∂/∂A transposed (fused op and plain matmuls agree)
      const grads = (f: () => Tensor, ts: Tensor[]) => {
        tidy(() => sum(f()).backward());
        const out = ts.map((t) => Float32Array.from(t.grad!.dataSync()));
        ts.forEach((t) => { t.grad!.dispose(); t.grad = null; });
        return out;
      };
      const [gA, gB] = grads(() => chapter.forward(x), [chapter.lora.lora_A, chapter.lora.lora_B]);
      const [pA, pB] = grads(() => peft.forward(x), [peft.loraA("d"), peft.loraB("d")]);
      const [dA, dB] = grads(() => chapter.lora.forward(x), [chapter.lora.lora_A, chapter.lora.lora_B]);
      /** The transpose of a rows×cols matrix. */
      const t = (g: Float32Array, rows: number, cols: number) => Float32Array.from({ length: g.length }, (_, i) => g[(i % rows) * cols + Math.floor(i / rows)]!);
      expect(relError(gA!, t(pA!, 4, 12))).toBeLessThan(1e-6);
      expect(relError(gB!, t(pB!, 10, 4))).toBeLessThan(1e-6);
      expect(relError(gA!, dA!)).toBeLessThan(1e-6);
      expect(relError(gB!, dB!)).toBeLessThan(1e-6);
      x.dispose();
      peft.dispose();
    });

    it(`mergeLoraWeights(${kind}) returns the plain layer whose output equals the unmerged one`, () => {
      const generator = new Generator(4);
      const base = kind === "linear" ? new Linear(12, 10, { generator }) : new Conv1D(10, 12, { generator });
      const chapter = new LinearWithLoRA(base, 4, 8, { generator });
      trainLike(chapter);
      const x = input(5, 12);
      const unmerged = tidy(() => chapter.forward(x).dataSync());
      const merged = mergeLoraWeights(chapter);
      expect(merged).toBe(base);
      expect(relError(tidy(() => merged.forward(x).dataSync()), unmerged)).toBeLessThan(1e-6);
      x.dispose();
      merged.dispose();
    });
  }

  it("addLoraToModel wraps every Linear/Conv1D whose name contains a target (substring, as in the chapter) and freezes the rest", () => {
    const model = loadGpt2();
    model.eval();
    const before = logitsOf(model);
    // "c_proj" is in both attn.c_proj and mlp.c_proj, as PEFT's suffix rule would also find; "attn"
    // also catches c_attn (a substring, which PEFT would not)
    expect(addLoraToModel(model, ["attn"], 4)).toBe(4);
    const wrapped = model.namedModules().filter(([, m]) => m instanceof LinearWithLoRA).map(([p]) => p);
    expect(wrapped).toEqual(["transformer.h.0.attn.c_attn", "transformer.h.0.attn.c_proj", "transformer.h.1.attn.c_attn", "transformer.h.1.attn.c_proj"]);
    const trainable = model.namedParameters().filter(([, p]) => p.requiresGrad).map(([n]) => n);
    expect(trainable).toHaveLength(8);
    expect(trainable.every((n) => /\.lora\.lora_[AB]$/.test(n))).toBe(true);
    // B starts at zero: the model is unchanged; a second call leaves wrapped layers alone
    expect(relError(logitsOf(model), before)).toBeLessThan(1e-6);
    expect(addLoraToModel(model, ["c_attn", "c_fc"], 4)).toBe(2); // the two c_fc layers only
    model.dispose();
  });

  it("the chapter's parameter arithmetic: Linear(768, 768) has 590,592 parameters, LoRA r·(768 + 768) of them", () => {
    const linear = new Linear(768, 768, { initialize: false });
    const count = (ts: Tensor[]) => ts.reduce((n, t) => n + t.size, 0);
    const original = count(linear.parameters());
    expect(original).toBe(590_592);
    const rows = [4, 8, 16, 64].map((rank) => {
      const layer = new LinearWithLoRA(linear, rank);
      const lora = count(layer.lora.parameters());
      layer.lora.dispose();
      return { rank, lora, ratio: `${((lora / original) * 100).toFixed(2)}%` };
    });
    expect(rows).toEqual([
      { rank: 4, lora: 6_144, ratio: "1.04%" },
      { rank: 8, lora: 12_288, ratio: "2.08%" }, // the chapter's printout for rank 8
      { rank: 16, lora: 24_576, ratio: "4.16%" },
      { rank: 64, lora: 98_304, ratio: "16.64%" },
    ]);
    linear.dispose();
  });
});
