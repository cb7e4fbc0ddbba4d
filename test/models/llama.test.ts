// Llama-family decoders (llama, mistral, qwen2, qwen3) against transformers: logits, loss and every
// parameter's gradient for the random-init models in test/fixtures/llama-tiny (made by
// test/fixtures/make_llama_fixtures.py, float32, CPU).
import { copyFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { LlamaConfig } from "../../lib/models/llama/config.js";
import { LlamaForCausalLM } from "../../lib/models/llama/model.js";
import { AutoModelForCausalLM, GPT2LMHeadModel, Generator, memory, noGrad, readSafetensors, tensor, tidy, toTensor, writeSafetensors, type Tensor } from "../../lib/index.js";
import { relError } from "../helpers.js";

const ROOT = "test/fixtures/llama-tiny";
// every case make_llama_fixtures.py writes
const CASES = readdirSync(ROOT).sort();
const ids = (rows: number[][]) => tensor(Int32Array.from(rows.flat()), { shape: [rows.length, rows[0]!.length] });
// float32 on both sides with different summation orders; the bar is 1e-4 relative (L2).
const TOL = 1e-4;

it("the fixtures cover every model type, GQA with 2, 3 and 4 groups, tied and untied heads, rope scaling and windows", () => {
  const configs = CASES.map((name) => JSON.parse(readFileSync(join(ROOT, name, "config.json"), "utf8")));
  expect(new Set(configs.map((c) => c.model_type))).toEqual(new Set(["llama", "mistral", "qwen2", "qwen3"]));
  expect(new Set(configs.map((c) => c.num_attention_heads / c.num_key_value_heads))).toEqual(new Set([2, 3, 4]));
  expect(new Set(configs.map((c) => c.tie_word_embeddings))).toEqual(new Set([true, false]));
  expect(new Set(configs.map((c) => c.rope_parameters.rope_type))).toEqual(new Set(["default", "linear", "llama3"]));
  expect(configs.filter((c) => c.sliding_window !== null && c.sliding_window !== undefined && c.model_type !== "llama").length).toBe(3);
});

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

  it("a hidden_size that num_attention_heads does not divide gives head_dim by floor division, as transformers", () => {
    const base = JSON.parse(readFileSync(join(ROOT, "llama-gqa", "config.json"), "utf8"));
    const config = LlamaConfig.fromHF({ ...base, hidden_size: 40, num_attention_heads: 6, num_key_value_heads: 2, head_dim: undefined });
    expect(config.attentionHeadDim).toBe(6); // 40 // 6
    const model = new LlamaForCausalLM(config);
    const attn = [...model.model.layers][0]!.self_attn;
    expect([attn.q_proj.weight.shape, attn.k_proj.weight.shape, attn.o_proj.weight.shape]).toEqual([[36, 40], [12, 40], [40, 36]]);
    expect(config.parameterCount).toBe(model.parameters().reduce((n, p) => n + p.size, 0));
    model.dispose();
  });

  it("refuses what the decoder does not implement yet, naming the config.json field", () => {
    const base = JSON.parse(readFileSync(join(ROOT, "llama-gqa", "config.json"), "utf8"));
    const refuse = (patch: Record<string, unknown>, field: RegExp) => expect(() => LlamaConfig.fromHF({ ...base, ...patch })).toThrow(field);
    const supported = /supported: "default" \(plain RoPE\), "linear", "llama3", "yarn"/;
    refuse({ rope_scaling: { rope_type: "dynamic", factor: 8 } }, /config\.json's rope_scaling has rope type "dynamic", which lowrank does not implement/);
    refuse({ rope_scaling: { rope_type: "yarn", factor: 4, beta_fast: 1, beta_slow: 2 } }, /beta_fast \(1\) must be at least beta_slow \(2\)/);
    refuse({ rope_scaling: { rope_type: "yarn", factor: 4, truncate: "yes" } }, /needs truncate true or false/);
    refuse({ rope_scaling: { type: "dynamic", factor: 2 } }, supported);
    refuse({ rope_parameters: { rope_type: "longrope", rope_theta: 1e4 } }, /rope_parameters has rope type "longrope"/);
    refuse({ rope_scaling: { rope_type: "llama3", factor: 8 } }, /rope_scaling of type "llama3" needs a number low_freq_factor, got undefined/);
    refuse({ rope_scaling: { rope_type: "llama3", factor: 8, low_freq_factor: 4, high_freq_factor: 1 } }, /high_freq_factor \(1\) must be greater than low_freq_factor \(4\)/);
    refuse({ rope_scaling: { type: "linear", factor: 0 } }, /rope_scaling\.factor must be a finite number > 0, got 0/);
    refuse({ rope_parameters: { rope_theta: 1e4, partial_rotary_factor: 0.5 } }, /partial_rotary_factor 0\.5; only 1/);
    refuse({ rope_parameters: null, partial_rotary_factor: 0.25 }, /partial_rotary_factor 0\.25; only 1/);
    refuse({ rope_parameters: { rope_theta: 1e4, full_attention: { rope_type: "default" } } }, /holds one rope setting per layer type/);
    refuse({ model_type: "mistral", sliding_window: 0 }, /sliding_window must be a positive integer or null, got 0/);
    refuse({ model_type: "qwen3", layer_types: ["full_attention"] }, /layer_types must list "full_attention" or "sliding_attention" for each of the 2 layers/);
    refuse({ model_type: "gemma" }, /model_type "gemma"; supported: llama, mistral, qwen2, qwen3$/);
    refuse({ attention_dropout: 0.1 }, /attention_dropout 0\.1 \(only 0 is supported\)/);
    refuse({ num_key_value_heads: 4 }, /num_attention_heads \(6\) must be a multiple of num_key_value_heads \(4\)/);
    // through fromPretrained, the message names the file
    const out = mkdtempSync(join(tmpdir(), "lowrank-llama-"));
    try {
      writeFileSync(join(out, "config.json"), JSON.stringify({ ...base, rope_scaling: { rope_type: "longrope", factor: 2 } }));
      expect(() => LlamaForCausalLM.fromPretrainedSync(out)).toThrow(/config\.json: LlamaConfig: .*rope_scaling has rope type "longrope"/);
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

describe("rope scaling in config.json", () => {
  const dir = join(ROOT, "llama3-rope");
  const v5 = JSON.parse(readFileSync(join(dir, "config.json"), "utf8"));
  const llama3 = { ropeType: "llama3", factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 32 };

  it("reads transformers 5's rope_parameters and transformers 4's rope_scaling, with rope_type or type", () => {
    expect(LlamaConfig.fromHF(v5).ropeScaling).toEqual(llama3);
    const { rope_parameters: rope, ...rest } = v5;
    const { rope_theta: theta, rope_type: _, ...params } = rope;
    for (const spelling of [{ rope_type: "llama3" }, { type: "llama3" }]) {
      const config = LlamaConfig.fromHF({ ...rest, rope_theta: theta, rope_scaling: { ...params, ...spelling } });
      expect(config.ropeScaling).toEqual(llama3);
      expect(config.ropeTheta).toBe(theta);
    }
    expect(LlamaConfig.fromHF({ ...rest, rope_scaling: { type: "linear", factor: 2 } }).ropeScaling).toEqual({ ropeType: "linear", factor: 2 });
    // llama3's original_max_position_embeddings: the dict's, else the top level's, else max_position_embeddings
    const { original_max_position_embeddings: __, ...noOriginal } = params;
    const original = (json: Record<string, unknown>) => (LlamaConfig.fromHF({ ...rest, ...json }).ropeScaling as { originalMaxPositionEmbeddings: number }).originalMaxPositionEmbeddings;
    expect(original({ rope_scaling: { ...noOriginal, type: "llama3" } })).toBe(64);
    expect(original({ original_max_position_embeddings: 16, rope_scaling: { ...noOriginal, type: "llama3" } })).toBe(16);
    expect(original({ original_max_position_embeddings: 16, rope_parameters: rope })).toBe(32);
    for (const none of [null, { rope_type: "default", rope_theta: 10000 }, { type: "default" }]) {
      expect(LlamaConfig.fromHF({ ...rest, rope_parameters: none }).ropeScaling).toBeNull();
    }
  });

  it("a transformers 4 config.json (rope_scaling, type spelling) gives the same logits, and toHF writes rope_scaling back", () => {
    const out = mkdtempSync(join(tmpdir(), "lowrank-llama-"));
    try {
      const { rope_parameters: rope, ...rest } = v5;
      const { rope_theta: theta, rope_type: _, ...params } = rope;
      writeFileSync(join(out, "config.json"), JSON.stringify({ ...rest, rope_theta: theta, rope_scaling: { ...params, type: "llama3" } }));
      copyFileSync(join(dir, "model.safetensors"), join(out, "model.safetensors"));
      const a = LlamaForCausalLM.fromPretrainedSync(dir), b = LlamaForCausalLM.fromPretrainedSync(out);
      const input = [[1, 2, 3, 4, 5, 6, 7, 8, 9]];
      noGrad(() => tidy(() => expect(b.forward({ inputIds: ids(input) }).logits.dataSync()).toEqual(a.forward({ inputIds: ids(input) }).logits.dataSync())));
      expect(a.config.toHF().rope_scaling).toEqual({ ...params, rope_type: "llama3" });
      expect(LlamaConfig.fromHF(a.config.toHF()).ropeScaling).toEqual(llama3);
      a.dispose();
      b.dispose();
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });

  it("changes the logits: the fixture's weights with plain RoPE differ from transformers' llama3 logits", () => {
    const model = LlamaForCausalLM.fromPretrainedSync(dir);
    model.config.ropeScaling = null;
    const ref = JSON.parse(readFileSync(join(dir, "reference.json"), "utf8"));
    const want = toTensor(readSafetensors(join(dir, "reference.safetensors")).get("logits"));
    noGrad(() => tidy(() => expect(relError(model.forward({ inputIds: ids(ref.input_ids) }).logits.dataSync(), want.dataSync())).toBeGreaterThan(1e-3)));
    model.dispose();
  });
});

describe("sliding windows as transformers reads config.json", () => {
  const base = JSON.parse(readFileSync(join(ROOT, "llama-gqa", "config.json"), "utf8"));
  const windows = (patch: Record<string, unknown>) => {
    const config = LlamaConfig.fromHF({ ...base, ...patch });
    return Array.from({ length: config.numHiddenLayers }, (_, i) => config.layerSlidingWindow(i));
  };
  it("mistral windows every layer (4096 when config.json has no sliding_window); llama never", () => {
    expect(windows({ model_type: "mistral", sliding_window: 3 })).toEqual([3, 3]);
    expect(windows({ model_type: "mistral", sliding_window: null })).toEqual([null, null]);
    expect(windows({ model_type: "mistral" })).toEqual([4096, 4096]);
    expect(windows({ model_type: "llama", sliding_window: 3 })).toEqual([null, null]);
  });
  it("qwen2 and qwen3 only with use_sliding_window, on the layers layer_types or max_window_layers mark", () => {
    for (const model_type of ["qwen2", "qwen3"]) {
      expect(windows({ model_type, sliding_window: 3, max_window_layers: 1 })).toEqual([null, null]);
      expect(windows({ model_type, use_sliding_window: true, sliding_window: 3, max_window_layers: 1 })).toEqual([null, 3]);
      expect(windows({ model_type, use_sliding_window: true, sliding_window: 3, max_window_layers: 0 })).toEqual([3, 3]);
      expect(windows({ model_type, use_sliding_window: true, max_window_layers: 0 })).toEqual([4096, 4096]);
      expect(windows({ model_type, use_sliding_window: true, sliding_window: 3, max_window_layers: 0, layer_types: ["sliding_attention", "full_attention"] })).toEqual([3, null]);
    }
  });
  it("the windowed path frees what it makes, forward and backward", () => {
    const model = LlamaForCausalLM.fromPretrainedSync(join(ROOT, "mistral-window"));
    const input = ids([[1, 2, 3, 4, 5, 6, 7, 8]]);
    const before = memory().cpu!;
    noGrad(() => tidy(() => void model.forward({ inputIds: input, labels: input })));
    expect(memory().cpu).toMatchObject({ bytes: before.bytes, tensors: before.tensors });
    tidy(() => model.forward({ inputIds: input, labels: input }).loss!.backward());
    for (const p of model.parameters()) {
      p.grad?.dispose();
      p.grad = null;
    }
    expect(memory().cpu).toMatchObject({ bytes: before.bytes, tensors: before.tensors });
    input.dispose();
    model.dispose();
  });

  it("the windowed fixtures' attention layers carry the window transformers used", () => {
    const layerWindows = (name: string) => {
      const model = LlamaForCausalLM.fromPretrainedSync(join(ROOT, name));
      const w = Array.from(model.model.layers, (l) => l.self_attn.slidingWindow);
      model.dispose();
      return w;
    };
    expect(layerWindows("mistral-window")).toEqual([3, 3]);
    expect(layerWindows("qwen2-window")).toEqual([null, 5, 5]);
    expect(layerWindows("qwen3-window-bias")).toEqual([null, 4]);
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
      expect(() => AutoModelForCausalLM.fromPretrainedSync(out)).toThrow(/model_type "bert"; lowrank loads gpt2, llama, mistral, qwen2, qwen3$/);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });
});
