// Sizes checked before anything is allocated: a LoRA rank above a layer's dimensions is warned
// about (it adds no rank, only memory), an adapter or a model that cannot fit in memory is refused
// with a message naming the rank or the config fields, the layers and the bytes.
import { totalmem } from "node:os";
import { describe, expect, it } from "vitest";
import { checkLoraFits, estimateLora, GPT2Config, GPT2LMHeadModel, getPeftModel, LoraConfig, memory } from "../../lib/index.js";

// vocab 50, 16 positions, 2 layers 8 wide: c_attn is 8 -> 24, c_proj 8 -> 8.
const tiny = () => new GPT2LMHeadModel(new GPT2Config({ vocabSize: 50, nPositions: 16, nEmbd: 8, nLayer: 2, nHead: 2 }));
const cpuBytes = () => memory().cpu?.bytes ?? 0;

describe("LoRA rank against the layers' dimensions", () => {
  it("warns once, naming the layers, when r exceeds min(in, out); not at r = min(in, out)", () => {
    for (const [r, warned] of [[8, false], [9, true]] as const) {
      const base = tiny();
      const warnings: string[] = [];
      const peft = getPeftModel(base, new LoraConfig({ r, targetModules: ["c_attn"], fanInFanOut: true }), "default", { onWarning: (w) => warnings.push(w) });
      expect(warnings).toEqual(warned ? [
        "r=9 is larger than the smaller dimension of 2 adapted layers (transformer.h.0.attn.c_attn (8 -> 24), transformer.h.1.attn.c_attn (8 -> 24)): " +
          "B·A cannot have a rank above min(in, out), so the extra rank only costs memory and time; use r <= 8.",
      ] : []);
      peft.dispose();
    }
  });

  it("estimateLora counts r·(in + out) float32 per targeted layer without allocating", () => {
    const base = tiny();
    const before = cpuBytes();
    const e = estimateLora(base, new LoraConfig({ r: 4, targetModules: ["c_attn", "c_proj"], fanInFanOut: true }));
    expect(cpuBytes()).toBe(before);
    // c_attn (8 -> 24), attn.c_proj (8 -> 8), mlp.c_proj (32 -> 8) in each of 2 layers
    expect(e.bytes).toBe(4 * 2 * 4 * ((8 + 24) + (8 + 8) + (32 + 8)));
    expect(e.layers.map((l) => `${l.name}:${l.in}->${l.out}`)).toEqual([
      "transformer.h.0.attn.c_attn:8->24", "transformer.h.0.attn.c_proj:8->8", "transformer.h.0.mlp.c_proj:32->8",
      "transformer.h.1.attn.c_attn:8->24", "transformer.h.1.attn.c_proj:8->8", "transformer.h.1.mlp.c_proj:32->8",
    ]);
    base.dispose();
  });
});

describe("an adapter that cannot fit in memory is refused before it is allocated", () => {
  // 2^40 · (8 + 24) · 2 layers · 4 bytes = 281 TB: more than any host here has.
  const r = 2 ** 40;
  const message = new RegExp(
    `^LoRA r=${r} on 2 layers \\(transformer\\.h\\.0\\.attn\\.c_attn \\(8 -> 24\\), transformer\\.h\\.1\\.attn\\.c_attn \\(8 -> 24\\)\\) for the adapter's weights ` +
      `needs 281 TB, more than the .* of memory on cpu; lower r \\(these layers' smaller dimension is 8: a larger r adds no rank\\) or target fewer modules$`,
  );

  it("by getPeftModel", () => {
    const base = tiny();
    const before = cpuBytes();
    expect(() => getPeftModel(base, new LoraConfig({ r, targetModules: ["c_attn"], fanInFanOut: true }), "default", { onWarning: () => {} })).toThrow(message);
    expect(cpuBytes()).toBe(before);
    expect(base.namedModules().some(([n]) => n.includes("lora_"))).toBe(false);
    base.dispose();
  });

  it("by checkLoraFits with the copies training needs (the CLI's check: weights, gradients, two AdamW moments)", () => {
    const base = tiny();
    // an adapter of a third of the memory fits once, not four times
    const third = Math.floor(totalmem() / 3 / 4 / (2 * (8 + 24)));
    const config = new LoraConfig({ r: third, targetModules: ["c_attn"], fanInFanOut: true });
    expect(() => checkLoraFits(base, config)).not.toThrow();
    expect(() => checkLoraFits(base, config, { copies: 4, purpose: "for training" })).toThrow(new RegExp(`^LoRA r=${third} on 2 layers .* for training needs .*, more than the .* of memory on cpu`));
    base.dispose();
  });
});

describe("GPT-2 configs whose sizes no memory holds", () => {
  it("a parameter count beyond 2^53 is refused by GPT2Config, naming config.json's fields", () => {
    expect(() => GPT2Config.fromHF({ model_type: "gpt2", n_embd: 1e20, n_layer: 2, n_head: 2, vocab_size: 100, n_positions: 10 })).toThrow(
      /^GPT2Config: n_embd 100000000000000000000, n_layer 2, vocab_size 100, n_positions 10 make 2\.40e\+41 parameters, more than any memory holds; check these fields of config\.json$/,
    );
  });

  it("a model larger than the device's memory is refused before a weight is allocated (not std::bad_alloc)", () => {
    const before = cpuBytes();
    const config = new GPT2Config({ nEmbd: 1_000_000, nHead: 1, nLayer: 2, vocabSize: 100, nPositions: 10 });
    expect(() => new GPT2LMHeadModel(config)).toThrow(
      /^GPT2Config \(n_embd 1000000, n_layer 2, vocab_size 100, n_positions 10\): the model's weights \(24,000,138,000,000 float32 parameters\) needs 96\.0 TB, more than the .* of memory on cpu; check these fields of config\.json$/,
    );
    expect(cpuBytes()).toBe(before);
  });
});
