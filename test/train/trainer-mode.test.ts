// Loaded models come in eval mode (GPT2LMHeadModel.fromPretrained, PeftModel.fromPretrained): the
// Trainer must switch the model to train mode itself (dropout on while it trains) and give it back
// in the mode it was handed.
import { describe, expect, it } from "vitest";
import { Generator, GPT2LMHeadModel, getPeftModel, LoraConfig } from "../../lib/index.js";
import { DataLoader } from "../../lib/train/collate.js";
import { IGNORE_INDEX, type TokenizedExample } from "../../lib/train/data.js";
import { Trainer } from "../../lib/train/trainer.js";

const EOS = 100;
const examples: TokenizedExample[] = Array.from({ length: 8 }, (_, i) => {
  const ids = [i, i + 1, i + 2, i + 50, EOS];
  const labels = Int32Array.from(ids).fill(IGNORE_INDEX, 0, 3);
  return { inputIds: Int32Array.from(ids), labels, line: i + 1 };
});

describe("Trainer and module modes", () => {
  it("trains an eval-mode model in train mode and returns it in eval mode", async () => {
    const generator = new Generator(1);
    const base = GPT2LMHeadModel.fromPretrainedSync("test/fixtures/gpt2-tiny", { generator });
    const model = getPeftModel(base, new LoraConfig({ r: 2, loraDropout: 0.1, targetModules: ["c_attn"], fanInFanOut: true }), "default", { generator, onWarning: () => {} });
    model.eval();
    const trainer = new Trainer({
      model, trainData: new DataLoader(examples, { batchSize: 4, tokenizer: { eosTokenId: EOS }, seed: 1 }),
      maxSteps: 2, lr: 1e-3, generators: { model: generator }, progress: { quiet: true }, config: {},
    });
    const evalModulesDuringSteps: number[] = [];
    trainer.on("step", () => evalModulesDuringSteps.push(model.modules().filter((m) => !m.training).length));
    try {
      await trainer.train();
    } finally {
      trainer.dispose();
    }
    expect(evalModulesDuringSteps).toEqual([0, 0]);
    expect(model.modules().filter((m) => m.training)).toEqual([]);
    model.dispose();
  });
});
