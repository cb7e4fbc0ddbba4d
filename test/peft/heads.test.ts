// LoRA around output heads and embeddings, and lora_B biases, against PEFT 0.21
// (test/fixtures/peft-head, made by make_peft_head_fixtures.py): heads tied to the token
// embeddings (GPT-2, a tied Qwen3) and untied (Llama), targeted by LoRA or saved in full, and
// lora_bias with and without a base bias. Each adapter PEFT saved must give PEFT's logits, loss,
// gradients of every trainable tensor and merged logits (or PEFT's refusal to merge), and lowrank
// must save the same files back.
// Tolerances: logits and merged logits 1e-4 relative L2, the loss 1e-5 relative, gradients 1e-4
// (float32 on both sides, other summation orders; the attention's dq is the most sensitive, see
// test/ops/attention.test.ts).
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { AutoModelForCausalLM, copyInto, getPeftModel, LoraConfig, noGrad, PeftModel, readSafetensors, tensor, tidy, toTensor, type Tensor } from "../../lib/index.js";
import type { LoraLinear } from "../../lib/peft/layer.js";
import type { BaseModel } from "../../lib/peft/model.js";
import { relError } from "../helpers.js";

const FIXTURES = join(import.meta.dirname, "..", "fixtures");
const CASES = ["gpt2-lora-bias", "llama-lora-bias", "gpt2-tied-head", "qwen3-tied-head", "llama-head", "gpt2-save-wte", "qwen3-save-head", "gpt2-untied-head", "llama-mlp-bias"];
const quiet = { onWarning: () => {} };
const out = mkdtempSync(join(tmpdir(), "lowrank-peft-head-"));
afterAll(() => rmSync(out, { recursive: true, force: true }));

describe.each(CASES)("%s against PEFT", (name) => {
  const dir = join(FIXTURES, "peft-head", name);
  const ref = JSON.parse(readFileSync(join(dir, "reference.json"), "utf8")) as {
    base: string; config: Record<string, unknown>; input_ids: number[][]; trainable: string[]; merge_error?: string;
  };
  const expected = readSafetensors(join(dir, "reference.safetensors"));
  const want = (key: string) => toTensor(expected.get(key)).dataSync();
  const loadBase = () => AutoModelForCausalLM.fromPretrainedSync(join(FIXTURES, ref.base));
  const inputIds = () => tensor(Int32Array.from(ref.input_ids.flat()), { shape: [ref.input_ids.length, ref.input_ids[0]!.length] });
  type Forward = { forward(i: { inputIds: Tensor }): { logits: Tensor } };
  const logitsOf = (model: object) => tidy(() => (model as Forward).forward({ inputIds: inputIds() }).logits.dataSync());

  it("PeftModel.fromPretrained gives PEFT's logits, loss and the gradient of every trainable tensor", () => {
    const peft = PeftModel.fromPretrainedSync(loadBase(), dir, { ...quiet, isTrainable: true });
    expect(relError(logitsOf(peft), want("logits"))).toBeLessThan(1e-4);
    const trainable = peft.namedParameters().filter(([, t]) => t.requiresGrad);
    expect(trainable.map(([n]) => n).sort()).toEqual([...ref.trainable].sort());
    tidy(() => {  // eval mode, as PEFT's were taken: GPT-2's own dropout off
      const loss = peft.forwardLoss({ inputIds: inputIds(), labels: inputIds() });
      expect(Math.abs(loss.item() / want("loss")[0]! - 1)).toBeLessThan(1e-5);
      loss.backward();
    });
    for (const [n, t] of trainable) expect(relError(t.grad!.dataSync(), want(`grad:${n}`)), n).toBeLessThan(1e-4);
    peft.dispose();
  });

  it(ref.merge_error ? "mergeAndUnload refuses as PEFT does, and changes nothing" : "mergeAndUnload gives PEFT's merged logits", () => {
    const peft = PeftModel.fromPretrainedSync(loadBase(), dir, quiet);
    if (ref.merge_error) {
      expect(() => peft.mergeAndUnload()).toThrow(/Impossible to merge LoRA with lora_bias=True because the base layer has no bias/);
      expect(relError(logitsOf(peft), want("logits"))).toBeLessThan(1e-4);
      peft.dispose();
      return;
    }
    const merged = peft.mergeAndUnload();
    expect(relError(logitsOf(merged), want("merged_logits"))).toBeLessThan(1e-4);
    merged.dispose();
  });

  it("getPeftModel on the same config makes PEFT's trainable tensors, and savePretrained writes PEFT's files back", () => {
    const made = getPeftModel(loadBase(), LoraConfig.fromJSON({ peft_type: "LORA", ...ref.config }, quiet), "default", quiet);
    expect(made.namedParameters().filter(([, t]) => t.requiresGrad).map(([n]) => n).sort()).toEqual([...ref.trainable].sort());
    made.dispose();
    const peft = PeftModel.fromPretrainedSync(loadBase(), dir, quiet);
    const dst = join(out, name);
    peft.savePretrainedSync(dst);
    peft.dispose();
    const ours = readSafetensors(join(dst, "adapter_model.safetensors")), theirs = readSafetensors(join(dir, "adapter_model.safetensors"));
    expect([...ours.names].sort()).toEqual([...theirs.names].sort());
    expect(readFileSync(join(dst, "adapter_model.safetensors"))).toEqual(readFileSync(join(dir, "adapter_model.safetensors")));
  });
});

describe("loraBias", () => {
  const gpt2 = () => AutoModelForCausalLM.fromPretrainedSync(join(FIXTURES, "gpt2-tiny"));
  const config = () => new LoraConfig({ targetModules: ["c_attn"], loraBias: true, r: 2, loraAlpha: 6, fanInFanOut: true });
  const cAttn = (peft: PeftModel<BaseModel>) => peft.namedModules().find(([n]) => n.endsWith("h.0.attn.c_attn"))![1] as LoraLinear;

  it("starts at zero and trainable; merging adds s·b to the base bias, unmerging takes it out again", () => {
    const peft = getPeftModel(gpt2(), config(), "default", quiet);
    const layer = cAttn(peft), b = layer.loraBias("default")!;
    expect(b.shape).toEqual([layer.outFeatures]);
    expect(Array.from(b.dataSync()).every((v) => v === 0)).toBe(true);
    expect(b.requiresGrad).toBe(true);
    const trained = Float32Array.from({ length: layer.outFeatures }, (_, i) => 0.01 * (i % 7) - 0.03);
    noGrad(() => tidy(() => copyInto(b, tensor(trained))));
    const base = Float32Array.from(layer.base_layer.bias!.dataSync());
    peft.mergeAdapter();
    const merged = layer.base_layer.bias!.dataSync();
    merged.forEach((v, i) => expect(v).toBeCloseTo(base[i]! + 3 * trained[i]!, 6)); // s = 6 / 2
    peft.unmergeAdapter();
    layer.base_layer.bias!.dataSync().forEach((v, i) => expect(v).toBeCloseTo(base[i]!, 6));
    peft.dispose();
  });

  it("warns where the base layer has no bias (merging will be refused), and weighted combinations refuse it", () => {
    const warnings: string[] = [];
    const llama = AutoModelForCausalLM.fromPretrainedSync(join(FIXTURES, "llama-tiny", "llama-gqa"));
    const peft = getPeftModel(llama, new LoraConfig({ targetModules: ["q_proj"], loraBias: true, r: 2 }), "default", { onWarning: (w) => warnings.push(w) });
    expect(warnings.some((w) => /loraBias=true on model\.layers\.0\.self_attn\.q_proj, whose base layer has no bias/.test(w))).toBe(true);
    expect(() => peft.addWeightedAdapter(["default"], [1], "combined")).toThrow(/"default" has a lora_B bias \(loraBias\)/);
    peft.dispose();
  });
});

describe("several active adapters", () => {
  it("mergeAndUnload merges every active adapter, as PEFT merges each layer's active adapters", () => {
    const model = AutoModelForCausalLM.fromPretrainedSync(join(FIXTURES, "gpt2-tiny"));
    const peft = getPeftModel(model, new LoraConfig({ targetModules: ["c_attn"], r: 2, fanInFanOut: true }), "default", quiet);
    peft.addAdapter("other", new LoraConfig({ targetModules: ["c_attn", "c_proj"], r: 3, loraAlpha: 5, fanInFanOut: true }));
    noGrad(() => {  // both adapters away from their no-op init
      for (const [n, p] of peft.namedParameters()) if (n.includes(".lora_B.")) tidy(() => copyInto(p, tensor(Float32Array.from({ length: p.size }, (_, i) => Math.sin(i + n.length) * 0.05), { shape: p.shape })));
    });
    peft.setAdapter(["default", "other"]);
    const ids = tensor(Int32Array.from([5, 17, 3, 9, 42, 8]), { shape: [1, 6] });
    const both = tidy(() => peft.forward({ inputIds: ids }).logits.dataSync());
    const one = tidy(() => { peft.setAdapter("default"); const l = peft.forward({ inputIds: ids }).logits.dataSync(); peft.setAdapter(["default", "other"]); return l; });
    expect(relError(one, both)).toBeGreaterThan(1e-3); // the second adapter matters
    const merged = peft.mergeAndUnload();
    expect(relError(tidy(() => merged.forward({ inputIds: ids }).logits.dataSync()), both)).toBeLessThan(1e-5);
    merged.dispose();
    ids.dispose();
  });
});

describe("modulesToSave on a model loaded in bfloat16", () => {
  it("trains a float32 copy of a bf16 module (lowrank trains no bf16 weight), whose gradient flows", () => {
    const model = AutoModelForCausalLM.fromPretrainedSync(join(FIXTURES, "gpt2-tiny"), { dtype: "bfloat16" });
    const peft = getPeftModel(model, new LoraConfig({ targetModules: ["c_attn"], modulesToSave: ["lm_head"], fanInFanOut: true, r: 2 }), "default", quiet);
    const copy = peft.namedParameters().find(([n]) => n.endsWith("lm_head.modules_to_save.default.weight"))![1];
    expect(copy.dtype).toBe("float32");
    expect(copy.requiresGrad).toBe(true);
    const ids = tensor(Int32Array.from([5, 17, 3, 9, 42, 8]), { shape: [1, 6] });
    peft.train();
    tidy(() => peft.forwardLoss({ inputIds: ids, labels: ids }).backward());
    expect(copy.grad!.dataSync().some((v) => v !== 0)).toBe(true);
    ids.dispose();
    peft.dispose();
  });
});
