// The one-GEMM LoRA path of LoraLinear (lib/ops/lora.ts, loraLinear) at the model level, on the CPU
// with LoraLinear.oneGemm = "always" (on CUDA "auto" takes it for bfloat16 weights): a GPT-2
// with bf16 weights trains, merges, unmerges, saves and frees memory as on the two-GEMM path.
// Tolerances: the two paths differ only in the bf16 rounding of s·u, B and the bias inside the
// GEMM (2^-8 relative of those terms), far below 1e-2 of the logits and gradients.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { AdamW, AutoModelForCausalLM, Generator, getPeftModel, LoraConfig, memory, noGrad, PeftModel, tidy } from "../../lib/index.js";
import { LoraLinear } from "../../lib/peft/layer.js";
import { relError } from "../helpers.js";
import { logitsOf, lossOf, MODEL, quiet } from "./extra-fixtures.js";

const loadBf16 = () => AutoModelForCausalLM.fromPretrainedSync(MODEL, { dtype: "bfloat16", generator: new Generator(5) });
// initLoraWeights false: B random too (PEFT's "not a no-op"), so the adapter changes the output.
const config = (dropout = 0) => new LoraConfig({ r: 4, loraAlpha: 8, loraDropout: dropout, targetModules: ["c_attn", "c_proj"], fanInFanOut: true, initLoraWeights: false });

/** The model's logits and the adapter factors' gradients under a oneGemm policy. */
function forwardBackward(policy: "always" | "never") {
  LoraLinear.oneGemm = policy;
  const peft = getPeftModel(loadBf16(), config(), "default", { generator: new Generator(7) });
  const logits = logitsOf(peft);
  tidy(() => lossOf(peft).backward());
  const grads = Object.fromEntries(peft.namedParameters().filter(([, p]) => p.grad).map(([n, p]) => [n, Array.from(p.grad!.dataSync())]));
  const weight = (peft.getSubmodule("base_model.model.transformer.h.0.attn.c_attn") as LoraLinear).base_layer.weight;
  const layout = { contiguous: weight.isContiguous(), strides: [...weight.strides] };
  peft.dispose();
  return { logits, grads, layout };
}

describe("LoraLinear's one-GEMM path (oneGemm 'always', CPU)", () => {
  const policy = LoraLinear.oneGemm;
  afterEach(() => {
    LoraLinear.oneGemm = policy;
  });

  it("gives the two-GEMM path's logits and gradients, with the weight inside its padded buffer", () => {
    const fused = forwardBackward("always"), plain = forwardBackward("never");
    expect(fused.layout.contiguous).toBe(false); // [in, out + pad] rows
    expect(plain.layout.contiguous).toBe(true);
    expect(relError(fused.logits, plain.logits)).toBeLessThan(1e-2);
    expect(Object.keys(fused.grads).sort()).toEqual(Object.keys(plain.grads).sort());
    for (const name of Object.keys(plain.grads)) expect(relError(fused.grads[name]!, plain.grads[name]!), name).toBeLessThan(2e-2);
  });

  it("merges, unmerges and saves from the padded weight; two active adapters take the two-GEMM path", () => {
    LoraLinear.oneGemm = "always";
    const dir = mkdtempSync(join(tmpdir(), "lowrank-one-gemm-"));
    try {
      const peft = getPeftModel(loadBf16(), config(), "default", { generator: new Generator(7) });
      const unmerged = logitsOf(peft);
      peft.mergeAdapter();
      const merged = logitsOf(peft);
      expect(relError(merged, unmerged)).toBeLessThan(1e-2); // W rounded to bf16 after the merge
      peft.unmergeAdapter();
      const afterUnmerge = logitsOf(peft); // W went through two bf16 roundings
      expect(relError(afterUnmerge, unmerged)).toBeLessThan(1e-2);

      peft.savePretrainedSync(dir);
      const reloaded = PeftModel.fromPretrainedSync(loadBf16(), dir, quiet);
      expect(relError(logitsOf(reloaded), unmerged)).toBeLessThan(1e-6); // the same path, the same factors
      reloaded.dispose();

      peft.addAdapter("second", config());
      peft.setAdapter(["default", "second"]);
      const both = logitsOf(peft); // the second adapter adds its own update
      expect(relError(both, unmerged)).toBeGreaterThan(1e-3);
      peft.setAdapter("default");
      expect(relError(logitsOf(peft), afterUnmerge)).toBeLessThan(1e-6); // back on the one-GEMM path
      peft.dispose();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("mergeAndUnload hands back plain base layers: contiguous weights, the merged function, nothing left behind", () => {
    LoraLinear.oneGemm = "always";
    const start = memory().cpu!;
    const peft = getPeftModel(loadBf16(), config(), "default", { generator: new Generator(7) });
    const before = logitsOf(peft); // moves the weights into their buffers
    const model = peft.mergeAndUnload();
    const attn = model.getSubmodule("transformer.h.0.attn.c_attn") as unknown as { weight: { isContiguous(): boolean } };
    expect(attn.weight.isContiguous()).toBe(true);
    expect(relError(logitsOf(model), before)).toBeLessThan(1e-2); // W + s·B·A rounded to bf16
    model.dispose();
    expect(memory().cpu).toMatchObject({ bytes: start.bytes, buffers: start.buffers, tensors: start.tensors });
  });

  it("a training step leaks nothing, and dispose frees the padded buffers", () => {
    LoraLinear.oneGemm = "always";
    const start = memory().cpu!;
    const peft = getPeftModel(loadBf16(), config(0.1), "default", { generator: new Generator(7) });
    const opt = new AdamW(peft.trainableParameters(), { lr: 1e-3 });
    const step = () => {
      tidy(() => lossOf(peft).backward());
      opt.step();
      opt.zeroGrad();
    };
    const losses: number[] = [];
    step();
    const before = memory().cpu!;
    for (let i = 0; i < 3; i++) {
      losses.push(noGrad(() => tidy(() => lossOf(peft).item())));
      step();
    }
    expect(memory().cpu).toMatchObject({ bytes: before.bytes, buffers: before.buffers, tensors: before.tensors });
    expect(losses[2]!).toBeLessThan(losses[0]!); // it learns
    opt.dispose();
    peft.dispose();
    expect(memory().cpu).toMatchObject({ bytes: start.bytes, buffers: start.buffers, tensors: start.tensors });
  });
});
