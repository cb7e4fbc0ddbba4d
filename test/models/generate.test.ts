// generate() takes a PeftModel as well as the GPT2LMHeadModel inside it, and says what it needs
// when given something else.
import { describe, expect, it } from "vitest";
import { generate, Generator, getPeftModel, GPT2Config, GPT2LMHeadModel, LoraConfig } from "../../lib/index.js";

describe("generate", () => {
  it("accepts a PeftModel and decodes exactly as with its inner model", () => {
    const config = new GPT2Config({ vocabSize: 50, nPositions: 32, nEmbd: 16, nLayer: 2, nHead: 2 });
    const base = new GPT2LMHeadModel(config, { generator: new Generator(1) });
    const peft = getPeftModel(base, new LoraConfig({ r: 2, targetModules: ["c_attn"], fanInFanOut: true, initLoraWeights: "gaussian" }), "default", { generator: new Generator(2) });
    try {
      const opts = { maxNewTokens: 8, eosTokenId: null, temperature: 0.8, topK: 10 };
      const viaPeft = generate(peft, [1, 2, 3], { ...opts, generator: new Generator(5) });
      const viaInner = generate(peft.model, [1, 2, 3], { ...opts, generator: new Generator(5) });
      expect(viaPeft).toHaveLength(8);
      expect(viaPeft).toEqual(viaInner);
    } finally {
      peft.dispose();
    }
  });

  it("refuses what is not a causal LM with a clear TypeError", () => {
    expect(() => generate({} as GPT2LMHeadModel, [1])).toThrow(new TypeError("generate: expected a causal LM (GPT2LMHeadModel, LlamaForCausalLM) or a PeftModel wrapping one, got Object"));
  });
});
