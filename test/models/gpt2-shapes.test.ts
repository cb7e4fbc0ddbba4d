// GPT-2's module tree and parameter count written down from a config (lib/models/gpt2/shapes.ts),
// checked against a real GPT2LMHeadModel, PEFT's base count for 124M (fixture made with PEFT 0.21)
// and transformers' published sizes.
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { Conv1D, Embedding, Generator, GPT2Config, GPT2LMHeadModel, Linear } from "../../lib/index.js";
import { gpt2ModuleShapes, gpt2ParameterCount, gpt2PresetConfig, GPT2_PRESET_NAMES } from "../../lib/models/gpt2/shapes.js";

const FIXTURES = new URL("../fixtures/", import.meta.url);
const peft124m = JSON.parse(readFileSync(new URL("peft-tiny/params-124m.json", FIXTURES), "utf8")) as {
  cases: Record<string, { base_model_params: number }>;
};

describe("GPT-2 shapes without weights", () => {
  it.each([true, false])("list the modules a real GPT2LMHeadModel has, with their kinds and shapes, and count its parameters (tied head: %s)", (tied) => {
    const config = new GPT2Config({ vocabSize: 50, nPositions: 16, nEmbd: 8, nLayer: 3, nHead: 2, nInner: 20, tieWordEmbeddings: tied });
    const model = new GPT2LMHeadModel(config, { generator: new Generator(0) });
    const tiedWith = (other: string) => (tied ? { tiedWith: other } : {});
    const real = model.namedModules().filter(([p]) => p !== "").map(([name, m]) => {
      if (m instanceof Conv1D) return { name, kind: "conv1d", inFeatures: m.weight.shape[0], outFeatures: m.weight.shape[1] };
      if (m instanceof Embedding) return { name, kind: "embedding", numEmbeddings: m.weight.shape[0], embeddingDim: m.weight.shape[1], ...(name === "transformer.wte" ? tiedWith("lm_head") : {}) };
      if (m instanceof Linear) return { name, kind: "linear", inFeatures: m.weight.shape[1], outFeatures: m.weight.shape[0], isOutputHead: true, ...tiedWith("transformer.wte") };
      return { name, kind: "other" };
    });
    // the only Linear is the head; tied, it holds the token embeddings' weight itself
    expect(model.namedModules().filter(([, m]) => m instanceof Linear).map(([n]) => n)).toEqual(["lm_head"]);
    expect((model.lm_head as Linear).weight === model.transformer.wte.weight).toBe(tied);
    expect(gpt2ModuleShapes(config)).toEqual(real);
    expect(gpt2ParameterCount(config)).toBe(model.parameters().reduce((s, p) => s + p.size, 0));
    model.dispose();
  });

  it("the 124m preset has PEFT's base parameter count and the tiny preset is the fixture model", () => {
    const base = Object.values(peft124m.cases)[0]!.base_model_params;
    expect(gpt2ParameterCount(gpt2PresetConfig("124m"))).toBe(base);
    const fixture = GPT2Config.fromHF(JSON.parse(readFileSync(new URL("gpt2-tiny/config.json", FIXTURES), "utf8")));
    const shape = (c: GPT2Config) => [c.vocabSize, c.nPositions, c.nEmbd, c.nLayer, c.nHead, c.innerDim];
    expect(shape(gpt2PresetConfig("tiny"))).toEqual(shape(fixture));
    // transformers' published sizes of gpt2-medium, -large, -xl
    const sizes = GPT2_PRESET_NAMES.map((n) => gpt2ParameterCount(gpt2PresetConfig(n)));
    expect(sizes.slice(1, 4)).toEqual([354_823_168, 774_030_080, 1_557_611_200]);
  });
});
