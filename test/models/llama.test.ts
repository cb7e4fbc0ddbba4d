// Llama-family decoders (llama, mistral, qwen2) against transformers: logits, loss and every
// parameter's gradient for the random-init models in test/fixtures/llama-tiny (made by
// test/fixtures/make_llama_fixtures.py, float32, CPU).
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { LlamaConfig } from "../../lib/models/llama/config.js";
import { LlamaForCausalLM } from "../../lib/models/llama/model.js";
import { AutoModelForCausalLM, GPT2LMHeadModel, Generator, memory, noGrad, readSafetensors, tensor, tidy, toTensor, writeSafetensors, type Tensor } from "../../lib/index.js";
import { relError } from "../helpers.js";

const ROOT = "test/fixtures/llama-tiny";
const CASES = ["llama-gqa", "qwen2-bias", "mistral-headdim"];
const ids = (rows: number[][]) => tensor(Int32Array.from(rows.flat()), { shape: [rows.length, rows[0]!.length] });
// float32 on both sides with different summation orders; the bar is 1e-4 relative (L2).
const TOL = 1e-4;

describe.each(CASES)("LlamaForCausalLM %s against transformers", (name) => {
  const dir = join(ROOT, name);
  const ref = JSON.parse(readFileSync(join(dir, "reference.json"), "utf8"));
  const expected = readSafetensors(join(dir, "reference.safetensors"));

  it("logits, loss and the gradient of every parameter agree within 1e-4 relative", () => {
    const model = LlamaForCausalLM.fromPretrainedSync(dir);
    expect(model.config.modelType).toBe(ref.model_type);
    // the same parameters as transformers' named_parameters(), by name
    expect(model.namedParameters().map(([n]) => n).sort()).toEqual([...ref.parameters].sort());
    tidy(() => {
      const { logits, loss } = model.forward({ inputIds: ids(ref.input_ids), labels: ids(ref.labels) });
      const wantLogits = toTensor(expected.get("logits"));
      expect(logits.shape).toEqual(wantLogits.shape);
      expect(relError(logits.dataSync(), wantLogits.dataSync())).toBeLessThan(TOL);
      expect(Math.abs(loss!.item() - ref.loss) / ref.loss).toBeLessThan(TOL);
      loss!.backward();
      const params = new Map(model.namedParameters());
      for (const pname of ref.parameters as string[]) {
        const want = toTensor(expected.get(`grad.${pname}`));
        expect(relError(params.get(pname)!.grad!.dataSync(), want.dataSync()), pname).toBeLessThan(TOL);
      }
    });
    model.dispose();
  });

  it("fromPretrained returns the model in eval mode", () => {
    const model = LlamaForCausalLM.fromPretrainedSync(dir);
    expect(model.modules().filter((m) => m.training)).toEqual([]);
    model.dispose();
  });
});

describe("LlamaForCausalLM loading", () => {
  it("loads sharded safetensors (model.safetensors.index.json) to the same logits", () => {
    const dir = join(ROOT, "llama-gqa");
    const out = mkdtempSync(join(tmpdir(), "lowrank-llama-"));
    try {
      copyFileSync(join(dir, "config.json"), join(out, "config.json"));
      const file = readSafetensors(join(dir, "model.safetensors"));
      const weightMap: Record<string, string> = {};
      const shards: Record<string, Tensor>[] = [{}, {}];
      file.names.forEach((n, i) => {
        shards[i % 2]![n] = toTensor(file.get(n));
        weightMap[n] = `model-0000${(i % 2) + 1}-of-00002.safetensors`;
      });
      shards.forEach((s, i) => writeSafetensors(join(out, `model-0000${i + 1}-of-00002.safetensors`), s, { format: "pt" }));
      writeFileSync(join(out, "model.safetensors.index.json"), JSON.stringify({ metadata: {}, weight_map: weightMap }));
      const a = LlamaForCausalLM.fromPretrainedSync(dir), b = LlamaForCausalLM.fromPretrainedSync(out);
      const input = [[1, 2, 3, 4]];
      noGrad(() => tidy(() => expect(b.forward({ inputIds: ids(input) }).logits.dataSync()).toEqual(a.forward({ inputIds: ids(input) }).logits.dataSync())));
      a.dispose();
      b.dispose();
      shards.forEach((s) => Object.values(s).forEach((t) => t.dispose()));
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });

  it("frees what a forward makes, and a load that fails on mis-shaped weights frees the model", () => {
    const model = LlamaForCausalLM.fromPretrainedSync(join(ROOT, "qwen2-bias"));
    const before = memory().cpu!;
    noGrad(() => tidy(() => void model.forward({ inputIds: ids([[1, 2, 3]]), labels: ids([[1, 2, 3]]) })));
    expect(memory().cpu).toMatchObject({ bytes: before.bytes, tensors: before.tensors });
    const out = mkdtempSync(join(tmpdir(), "lowrank-llama-"));
    try {
      // num_key_value_heads 3 where the file's k_proj/v_proj hold 2 heads
      const config = JSON.parse(readFileSync(join(ROOT, "qwen2-bias", "config.json"), "utf8"));
      writeFileSync(join(out, "config.json"), JSON.stringify({ ...config, num_key_value_heads: 3 }));
      copyFileSync(join(ROOT, "qwen2-bias", "model.safetensors"), join(out, "model.safetensors"));
      expect(() => LlamaForCausalLM.fromPretrainedSync(out)).toThrow(/mis-shaped tensors: model\.layers\.0\.self_attn\.k_proj\.bias: file has \[16\], model expects \[24\]/);
      expect(memory().cpu).toMatchObject({ bytes: before.bytes, tensors: before.tensors });
    } finally {
      rmSync(out, { recursive: true, force: true });
      model.dispose();
    }
  });

  it("refuses what the decoder does not implement yet, naming the config.json field", () => {
    const base = JSON.parse(readFileSync(join(ROOT, "llama-gqa", "config.json"), "utf8"));
    const refuse = (patch: Record<string, unknown>, field: RegExp) => expect(() => LlamaConfig.fromHF({ ...base, ...patch })).toThrow(field);
    refuse({ rope_scaling: { rope_type: "llama3", factor: 8 } }, /does not support yet: rope_scaling \{"rope_type":"llama3".*\(only null/);
    refuse({ rope_parameters: { rope_type: "linear", rope_theta: 1e4, factor: 2 } }, /rope_parameters\.rope_type "linear"/);
    refuse({ model_type: "mistral", sliding_window: 4096 }, /sliding_window 4096 \(sliding-window attention is not supported yet/);
    refuse({ model_type: "qwen2", use_sliding_window: true }, /use_sliding_window true/);
    refuse({ model_type: "qwen3" }, /model_type "qwen3".*q\/k RMSNorm is not implemented yet/);
    refuse({ mlp_bias: true }, /mlp_bias true/);
    refuse({ num_key_value_heads: 4 }, /num_attention_heads \(6\) must be a multiple of num_key_value_heads \(4\)/);
    // through fromPretrained, the message names the file
    const out = mkdtempSync(join(tmpdir(), "lowrank-llama-"));
    try {
      writeFileSync(join(out, "config.json"), JSON.stringify({ ...base, rope_scaling: { rope_type: "linear", factor: 2 } }));
      expect(() => LlamaForCausalLM.fromPretrainedSync(out)).toThrow(/config\.json: LlamaConfig: .*rope_scaling/);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });

  it("reads rope_theta from transformers 4's top level and transformers 5's rope_parameters", () => {
    const base = JSON.parse(readFileSync(join(ROOT, "qwen2-bias", "config.json"), "utf8"));
    expect(LlamaConfig.fromHF(base).ropeTheta).toBe(1e6);
    const { rope_parameters: _, ...v4 } = base;
    expect(LlamaConfig.fromHF({ ...v4, rope_theta: 5e5, rope_scaling: null }).ropeTheta).toBe(5e5);
  });
});

describe("LlamaForCausalLM initialization", () => {
  it("draws weights as transformers' _init_weights: N(0, initializer_range²), biases 0, norms 1", () => {
    const config = new LlamaConfig({ modelType: "qwen2", vocabSize: 97, hiddenSize: 48, intermediateSize: 100, numHiddenLayers: 1, numAttentionHeads: 6, numKeyValueHeads: 2, initializerRange: 0.05 });
    const model = new LlamaForCausalLM(config, { generator: new Generator(0) });
    const params = new Map(model.namedParameters());
    expect(params.has("lm_head.weight")).toBe(true); // tie_word_embeddings defaults to false
    for (const [name, p] of params) {
      const v = Array.from(p.dataSync());
      if (name.endsWith("norm.weight")) expect(v.every((x) => x === 1), name).toBe(true);
      else if (name.endsWith(".bias")) expect(v.every((x) => x === 0), name).toBe(true);
      else {
        const mean = v.reduce((s, x) => s + x, 0) / v.length;
        const std = Math.sqrt(v.reduce((s, x) => s + (x - mean) ** 2, 0) / v.length);
        expect(Math.abs(mean), name).toBeLessThan(0.01);
        expect(Math.abs(std - 0.05) / 0.05, name).toBeLessThan(0.1);
      }
    }
    expect(model.parameters().reduce((s, p) => s + p.size, 0)).toBe(config.parameterCount);
    model.dispose();
  });
});

describe("AutoModelForCausalLM.fromPretrained", () => {
  it("dispatches on config.json's model_type", () => {
    for (const name of CASES) {
      const m = AutoModelForCausalLM.fromPretrainedSync(join(ROOT, name));
      expect(m).toBeInstanceOf(LlamaForCausalLM);
      m.dispose();
    }
    const gpt2 = AutoModelForCausalLM.fromPretrainedSync("test/fixtures/gpt2-tiny");
    expect(gpt2).toBeInstanceOf(GPT2LMHeadModel);
    gpt2.dispose();
  });

  it("names the model_type it does not load", () => {
    const out = mkdtempSync(join(tmpdir(), "lowrank-auto-"));
    try {
      writeFileSync(join(out, "config.json"), JSON.stringify({ model_type: "bert" }));
      expect(() => AutoModelForCausalLM.fromPretrainedSync(out)).toThrow(/model_type "bert"; lowrank loads gpt2, llama, mistral, qwen2/);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });
});
