// generate() takes a PeftModel as well as the GPT2LMHeadModel inside it, and says what it needs
// when given something else.
import { describe, expect, it } from "vitest";
import { AutoModelForCausalLM, generate, Generator, getPeftModel, GPT2Config, GPT2LMHeadModel, LoraConfig, noGrad, tensor, tidy } from "../../lib/index.js";

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

describe("logitsToKeep", () => {
  for (const dir of ["test/fixtures/gpt2-tiny", "test/fixtures/llama-tiny/llama-gqa"]) {
    it(`${dir}: the last N positions' logits equal those rows of the full forward; 0 keeps all; labels refuse it`, () => {
      const model = AutoModelForCausalLM.fromPretrainedSync(dir);
      const inputIds = tensor(Int32Array.from({ length: 14 }, (_, i) => (i * 7) % 50), { shape: [2, 7] });
      noGrad(() => tidy(() => {
        const full = model.forward({ inputIds }).logits;
        const V = full.shape[2]!;
        for (const keep of [1, 3, 7, 9]) {
          const part = model.forward({ inputIds, logitsToKeep: keep }).logits;
          const n = Math.min(keep, 7);
          expect(part.shape).toEqual([2, n, V]);
          expect(Array.from(part.dataSync())).toEqual(Array.from(full.slice(1, 7 - n).contiguous().dataSync()));
        }
        expect(model.forward({ inputIds, logitsToKeep: 0 }).logits.shape).toEqual([2, 7, V]);
        expect(() => model.forward({ inputIds, labels: inputIds, logitsToKeep: 1 })).toThrow(/logitsToKeep and labels together/);
        expect(() => model.forward({ inputIds, logitsToKeep: -1 })).toThrow(/logitsToKeep must be an integer >= 0/);
      }));
      inputIds.dispose();
      model.dispose();
    });
  }
});
