// PEFT's LoRA on a Llama-family model (llama-tiny/llama-gqa: GQA, untied lm_head), against the
// adapters PEFT 0.21 saved in test/fixtures/peft-llama (made by make_llama_peft_fixtures.py):
// PEFT's default targets for model_type llama, "all-linear" (lm_head left out) and
// layers_to_transform on model.layers. Each adapter has a random non-zero lora_B.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { LlamaForCausalLM } from "../../lib/models/llama/model.js";
import { LoraConfig, getPeftModel, PeftModel, readSafetensors, tensor, tidy, toTensor } from "../../lib/index.js";
import { relError } from "../helpers.js";

const FIXTURES = join(import.meta.dirname, "..", "fixtures");
const BASE = join(FIXTURES, "llama-tiny", "llama-gqa");
const CASES = ["default", "all-linear", "layers"];
const TOL = 1e-4; // float32 on both sides, different summation orders
const quiet = { onWarning: () => {} };
const out = mkdtempSync(join(tmpdir(), "lowrank-peft-llama-"));
afterAll(() => rmSync(out, { recursive: true, force: true }));

const ids = (rows: number[][]) => tensor(Int32Array.from(rows.flat()), { shape: [rows.length, rows[0]!.length] });

describe.each(CASES)("LoRA on Llama, %s, against PEFT", (name) => {
  const dir = join(FIXTURES, "peft-llama", name);
  const ref = JSON.parse(readFileSync(join(dir, "reference.json"), "utf8")) as {
    config: Record<string, unknown>; input_ids: number[][]; trainable_line: string;
  };
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

describe("LoRA's default targets on qwen2 (tied embeddings) and mistral, against PEFT", () => {
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
