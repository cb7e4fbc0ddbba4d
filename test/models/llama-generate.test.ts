// Generation for the Llama family (issue 13): the KV cache (GQA: it holds the key/value heads,
// RoPE continues at the cached length), greedy decoding against transformers' generate on the
// fixtures of test/fixtures/llama-tiny (make_llama_fixtures.py records it), sampling, and
// stopping on any EOS id of a list.
import { copyFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { LlamaForCausalLM } from "../../lib/models/llama/model.js";
import { KVCache } from "../../lib/models/kvcache.js";
import { copyInto, generate, Generator, memory, noGrad, tensor, tidy } from "../../lib/index.js";

const ROOT = "test/fixtures/llama-tiny";
const CASES = readdirSync(ROOT).sort(); // every case make_llama_fixtures.py writes
const row = (r: number[]) => tensor(Int32Array.from(r), { shape: [1, r.length] });
const reference = (name: string) => JSON.parse(readFileSync(join(ROOT, name, "reference.json"), "utf8"));

describe.each(CASES)("LlamaForCausalLM %s generation", (name) => {
  const ref = reference(name);

  it("one cached step gives the full sequence's logits at that position (within 1e-5)", () => {
    const model = LlamaForCausalLM.fromPretrainedSync(join(ROOT, name));
    const prompt = ref.input_ids[0] as number[];
    const V = model.config.vocabSize, T = prompt.length;
    const cache = new KVCache(model.config.numHiddenLayers);
    noGrad(() => tidy(() => {
      const full = model.forward({ inputIds: row(prompt) }).logits.dataSync();
      // generate()'s path: the prompt less its last token fills the cache, then one single-token step
      const pre = model.forward({ inputIds: row(prompt.slice(0, T - 1)), cache }).logits.dataSync();
      expect(cache.length).toBe(T - 1);
      // the cache holds the key/value heads, not the repeated query heads
      expect(cache.layers[0]!.key.shape).toEqual([1, model.config.kvHeads, T - 1, model.config.attentionHeadDim]);
      const step = model.forward({ inputIds: row(prompt.slice(T - 1)), cache }).logits;
      expect(step.shape).toEqual([1, 1, V]);
      expect(cache.length).toBe(T);
      const maxDiff = (a: Float32Array, b: Float32Array) => a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i]!)), 0);
      expect(maxDiff(step.dataSync() as Float32Array, full.subarray((T - 1) * V, T * V) as Float32Array)).toBeLessThan(1e-5);
      expect(maxDiff(pre as Float32Array, full.subarray(0, (T - 1) * V) as Float32Array)).toBeLessThan(1e-5);
    }));
    cache.dispose();
    model.dispose();
  });

  it("greedy generate equals transformers' generate(max_new_tokens=8, do_sample=False), with and without the cache", () => {
    const model = LlamaForCausalLM.fromPretrainedSync(join(ROOT, name));
    const before = memory().cpu!;
    (ref.input_ids as number[][]).forEach((prompt, i) => {
      for (const useCache of [true, false]) {
        expect(generate(model, prompt, { maxNewTokens: ref.generate_max_new_tokens, useCache }), `row ${i}, useCache ${useCache}`).toEqual(ref.generate[i]);
      }
    });
    // the cache is freed when generation ends
    expect(memory().cpu).toMatchObject({ bytes: before.bytes, tensors: before.tensors });
    model.dispose();
  });
});

describe("LlamaForCausalLM generation: sampling and EOS", () => {
  it("samples the same tokens with and without the cache from the same random stream", () => {
    const model = LlamaForCausalLM.fromPretrainedSync(join(ROOT, "llama-gqa"));
    const prompt = [1, 5, 17];
    for (const opts of [{ temperature: 1.5 }, { temperature: 0.9, topK: 20 }, { temperature: 1.3, topP: 0.8 }]) {
      const a = generate(model, prompt, { ...opts, maxNewTokens: 12, eosTokenId: null, useCache: true, generator: new Generator(5) });
      const b = generate(model, prompt, { ...opts, maxNewTokens: 12, eosTokenId: null, useCache: false, generator: new Generator(5) });
      expect(a).toHaveLength(12);
      expect(a).toEqual(b);
      // sampling at a high temperature leaves the greedy path of this tiny random model
      if (opts.temperature === 1.5) expect(a).not.toEqual(generate(model, prompt, { maxNewTokens: 12, eosTokenId: null }));
    }
    model.dispose();
  });

  it("NaN logits are an error naming the Llama layer and tensor that hold NaN", () => {
    const model = LlamaForCausalLM.fromPretrainedSync(join(ROOT, "llama-gqa"));
    const w = model.model.layers.at(1).mlp.down_proj.weight;
    noGrad(() => {
      const v = Float32Array.from(w.dataSync());
      v[0] = NaN; // row 0 of down_proj: hidden unit 0 of every position turns NaN, then the norm spreads it
      const src = tensor(v, { shape: w.shape });
      copyInto(w, src);
      src.dispose();
    });
    expect(() => generate(model, [1, 5, 17], { maxNewTokens: 2 })).toThrow(
      /^generate: the logits for new token 1 hold NaN or Inf, so there is nothing to sample from: the base model is broken: model\.layers\.1\.mlp\.down_proj\.weight \(layer 1\) holds 1 NaN of its 4800 values$/,
    );
    model.dispose();
  });

  it("stops on any id of config.json's eos_token_id list, and of an eosTokenId list option", () => {
    const dir = join(ROOT, "llama-gqa");
    const ref = reference("llama-gqa");
    const prompt = ref.input_ids[0] as number[];
    const greedy = ref.generate[0] as number[]; // [1, 84, 13, 84, ...] (eos_token_id 2 never comes)
    const out = mkdtempSync(join(tmpdir(), "lowrank-llama-gen-"));
    try {
      const config = JSON.parse(readFileSync(join(dir, "config.json"), "utf8"));
      // Llama 3 style: several EOS ids; the second one is the third generated token
      writeFileSync(join(out, "config.json"), JSON.stringify({ ...config, eos_token_id: [95, greedy[2]] }));
      copyFileSync(join(dir, "model.safetensors"), join(out, "model.safetensors"));
      const model = LlamaForCausalLM.fromPretrainedSync(out);
      expect(model.config.eosTokenId).toEqual([95, greedy[2]]);
      for (const useCache of [true, false]) expect(generate(model, prompt, { maxNewTokens: 8, useCache })).toEqual(greedy.slice(0, 3));
      expect(generate(model, prompt, { maxNewTokens: 8, eosTokenId: [greedy[1]!, 96] })).toEqual(greedy.slice(0, 2));
      expect(generate(model, prompt, { maxNewTokens: 8, eosTokenId: null })).toEqual(greedy);
      model.dispose();
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });
});
