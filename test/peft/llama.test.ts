// PEFT's LoRA on Llama-family models (llama-tiny/llama-gqa: GQA, untied lm_head; qwen3-qknorm),
// against the adapters PEFT 0.21 saved in test/fixtures/peft-llama (made by
// make_llama_peft_fixtures.py): PEFT's default targets for model_type llama, "all-linear" (lm_head
// left out), layers_to_transform on model.layers, all seven projections on Qwen3; each adapter has
// a random non-zero lora_B. Five AdamW steps give PEFT's losses; merged models save as transformers'.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { LlamaForCausalLM } from "../../lib/models/llama/model.js";
import { LoraConfig, getPeftModel, PeftModel, readSafetensors, tensor, tidy, toTensor } from "../../lib/index.js";
import { relError } from "../helpers.js";
import { expectTrainsLikePeft } from "./train-fixture.js";

const FIXTURES = join(import.meta.dirname, "..", "fixtures");
const CASES = ["default", "all-linear", "layers", "qwen3"];
const TOL = 1e-4; // float32 on both sides, different summation orders
const quiet = { onWarning: () => {} };
const out = mkdtempSync(join(tmpdir(), "lowrank-peft-llama-"));
afterAll(() => rmSync(out, { recursive: true, force: true }));

const ids = (rows: number[][]) => tensor(Int32Array.from(rows.flat()), { shape: [rows.length, rows[0]!.length] });

describe.each(CASES)("LoRA on Llama, %s, against PEFT", (name) => {
  const dir = join(FIXTURES, "peft-llama", name);
  const ref = JSON.parse(readFileSync(join(dir, "reference.json"), "utf8")) as {
    base: string; config: Record<string, unknown>; input_ids: number[][]; trainable_line: string;
  };
  const BASE = join(FIXTURES, ref.base);
  const expected = readSafetensors(join(dir, "reference.safetensors"));
  const pythonKeys = readSafetensors(join(dir, "adapter_model.safetensors")).names;

  it("PeftModel.fromPretrained gives PEFT's logits, and merging gives merge_and_unload's", () => {
    const peft = PeftModel.fromPretrainedSync(LlamaForCausalLM.fromPretrainedSync(BASE), dir, quiet);
    tidy(() => {
      const { logits } = peft.forward({ inputIds: ids(ref.input_ids) });
      expect(relError(logits.dataSync(), toTensor(expected.get("logits")).dataSync())).toBeLessThan(TOL);
    });
    const merged = peft.mergeAndUnload();
    tidy(() => {
      const { logits } = merged.forward({ inputIds: ids(ref.input_ids) });
      expect(relError(logits.dataSync(), toTensor(expected.get("merged_logits")).dataSync())).toBeLessThan(TOL);
    });
    merged.dispose();
  });

  it("the merged model's savePretrained writes transformers' tensor names, and loads back to merge_and_unload's logits", () => {
    const merged = PeftModel.fromPretrainedSync(LlamaForCausalLM.fromPretrainedSync(BASE), dir, quiet).mergeAndUnload();
    const dst = join(out, `${name}-merged`);
    merged.savePretrainedSync(dst);
    merged.dispose();
    // the names and shapes of the base checkpoint transformers' save_pretrained wrote
    const written = readSafetensors(join(dst, "model.safetensors")), base = readSafetensors(join(BASE, "model.safetensors"));
    expect([...written.names].sort()).toEqual([...base.names].sort());
    for (const n of base.names) expect(written.get(n).shape, n).toEqual(base.get(n).shape);
    const config = JSON.parse(readFileSync(join(dst, "config.json"), "utf8"));
    expect(config.model_type).toBe(JSON.parse(readFileSync(join(BASE, "config.json"), "utf8")).model_type);
    const reloaded = LlamaForCausalLM.fromPretrainedSync(dst);
    tidy(() => {
      const { logits } = reloaded.forward({ inputIds: ids(ref.input_ids) });
      expect(relError(logits.dataSync(), toTensor(expected.get("merged_logits")).dataSync())).toBeLessThan(TOL);
    });
    reloaded.dispose();
  });

  it("getPeftModel on the same config makes PEFT's parameters and prints PEFT's trainable line", () => {
    // the config as given to PEFT (target_modules absent for "default"), not the saved one
    const config = LoraConfig.fromJSON({ peft_type: "LORA", ...ref.config }, quiet);
    const peft = getPeftModel(LlamaForCausalLM.fromPretrainedSync(BASE), config, "default", quiet);
    expect(Object.keys(peft.adapterStateDict()).sort()).toEqual([...pythonKeys].sort());
    expect(peft.trainableParametersLine()).toBe(ref.trainable_line);
    peft.dispose();
  });

  it("savePretrained writes PEFT's adapter files back byte for byte", () => {
    const peft = PeftModel.fromPretrainedSync(LlamaForCausalLM.fromPretrainedSync(BASE), dir, quiet);
    const dst = join(out, name);
    peft.savePretrainedSync(dst);
    peft.dispose();
    for (const f of ["adapter_model.safetensors", "adapter_config.json"]) {
      expect(readFileSync(join(dst, f)).equals(readFileSync(join(dir, f))), f).toBe(true);
    }
  });
});

describe.each(["all-linear", "qwen3"])("training LoRA on %s matches PEFT + torch.optim.AdamW", (name) => {
  it("5 AdamW steps from PEFT's adapter give PEFT's losses, gradients and trained adapter", () => {
    const ref = JSON.parse(readFileSync(join(FIXTURES, "peft-llama", name, "reference.json"), "utf8"));
    const batch = JSON.parse(readFileSync(join(FIXTURES, ref.base, "reference.json"), "utf8"));
    const peft = PeftModel.fromPretrainedSync(LlamaForCausalLM.fromPretrainedSync(join(FIXTURES, ref.base)), join(FIXTURES, "peft-llama", name), { isTrainable: true, ...quiet });
    expectTrainsLikePeft(peft, () => peft.forward({ inputIds: ids(batch.input_ids), labels: ids(batch.labels) }).loss!, join(FIXTURES, "peft-llama", `train-${name}`), TOL);
    peft.dispose();
  });
});

describe("savePretrained of a Llama-family model", () => {
  it.each(["llama-gqa", "llama3-rope", "qwen3-window-bias"])("%s: model.safetensors byte for byte as transformers' save_pretrained wrote it; config.json read back the same", (name) => {
    const dir = join(FIXTURES, "llama-tiny", name);
    const model = LlamaForCausalLM.fromPretrainedSync(dir);
    const dst = join(out, `save-${name}`);
    model.savePretrainedSync(dst);
    expect(readFileSync(join(dst, "model.safetensors")).equals(readFileSync(join(dir, "model.safetensors")))).toBe(true);
    const again = LlamaForCausalLM.fromPretrainedSync(dst);
    expect(again.config).toEqual(model.config);
    model.dispose();
    again.dispose();
  });
});

describe("LoRA's default targets on qwen2 (tied embeddings), mistral and qwen3, against PEFT", () => {
  const ref = JSON.parse(readFileSync(join(FIXTURES, "peft-llama", "other-types", "reference.json"), "utf8")) as {
    config: Record<string, unknown>;
    cases: Record<string, { base: string; model_type: string; target_modules: string[]; lora_parameters: string[]; trainable_line: string }>;
  };
  it.each(Object.keys(ref.cases))("%s: PEFT's trainable parameters, target_modules and trainable line", (name) => {
    const want = ref.cases[name]!;
    const model = LlamaForCausalLM.fromPretrainedSync(join(FIXTURES, want.base));
    expect(model.config.modelType).toBe(want.model_type);
    const peft = getPeftModel(model, LoraConfig.fromJSON({ peft_type: "LORA", ...ref.config }, quiet), "default", quiet);
    expect(peft.trainableParameters().length).toBe(want.lora_parameters.length);
    expect(peft.namedParameters().filter(([, p]) => p.requiresGrad).map(([n]) => n)).toEqual(want.lora_parameters);
    expect([...(peft.peftConfig.get("default")!.targetModules as string[])].sort()).toEqual(want.target_modules);
    expect(peft.trainableParametersLine()).toBe(want.trainable_line);
    peft.dispose();
  });
});
