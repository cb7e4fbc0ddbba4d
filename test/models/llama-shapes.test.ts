// The Llama family's module tree written down from a config (lib/models/llama/shapes.ts), checked
// against real LlamaForCausalLM instances (every llama-tiny fixture config: GQA, untied heads,
// Qwen2's bias, Qwen3's q/k norms), and the presets against the published parameter totals.
import { readdirSync, readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { Embedding, Generator, Linear } from "../../lib/index.js";
import { LlamaConfig } from "../../lib/models/llama/config.js";
import { LlamaForCausalLM } from "../../lib/models/llama/model.js";
import { llamaModuleShapes, llamaPresetConfig, LLAMA_PRESET_NAMES } from "../../lib/models/llama/shapes.js";

const TINY = new URL("../fixtures/llama-tiny/", import.meta.url);

describe("Llama-family shapes without weights", () => {
  it.each(readdirSync(TINY))("list the modules a real LlamaForCausalLM has, with their kinds and shapes, and count its parameters (%s)", (name) => {
    const config = LlamaConfig.fromHF(JSON.parse(readFileSync(new URL(`${name}/config.json`, TINY), "utf8")));
    const model = new LlamaForCausalLM(config, { generator: new Generator(0) });
    // a tied head holds the token embeddings' weight itself
    const tied = (model.lm_head as Linear).weight === model.model.embed_tokens.weight;
    expect(tied).toBe(config.tieWordEmbeddings);
    const tiedWith = (name: string) => (tied ? { tiedWith: name } : {});
    const real = model.namedModules().filter(([p]) => p !== "").map(([path, m]) => {
      if (m instanceof Linear) return { name: path, kind: "linear", inFeatures: m.weight.shape[1], outFeatures: m.weight.shape[0], ...(path === "lm_head" ? { isOutputHead: true, ...tiedWith("model.embed_tokens") } : {}) };
      if (m instanceof Embedding) return { name: path, kind: "embedding", numEmbeddings: m.weight.shape[0], embeddingDim: m.weight.shape[1], ...tiedWith("lm_head") };
      return { name: path, kind: "other" };
    });
    expect(llamaModuleShapes(config)).toEqual(real);
    expect(config.parameterCount).toBe(model.parameters().reduce((s, p) => s + p.size, 0));
    model.dispose();
  });

  it("the presets have the published models' parameter counts", () => {
    // the totals of the models as PyTorch counts them (tied embeddings once): SmolLM2-135M,
    // Qwen2.5-0.5B ("0.49B" on its card), Llama-3.2-1B ("1.23B")
    const counts = Object.fromEntries(LLAMA_PRESET_NAMES.map((n) => [n, llamaPresetConfig(n).parameterCount]));
    expect(counts).toEqual({ "smollm2-135m": 134_515_008, "qwen2.5-0.5b": 494_032_768, "llama-3.2-1b": 1_235_814_400 });
  });
});
