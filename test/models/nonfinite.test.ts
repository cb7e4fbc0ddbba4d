// NaN weights are named, not hidden: generate() refuses NaN/Inf logits, safe merges and the
// Trainer say whether the base model or which adapter (which layer, which tensor) is broken.
// (The CLI's merge and generate: test/cli/merge-generate.test.ts.)
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import {
  copyInto, generate, Generator, GPT2LMHeadModel, getPeftModel, LoraConfig, noGrad, PeftModel, tensor, UnsafeMergeError, type Tensor,
} from "../../lib/index.js";
import { DataLoader } from "../../lib/train/collate.js";
import { IGNORE_INDEX } from "../../lib/train/data.js";
import { NonFiniteLossError, Trainer } from "../../lib/train/trainer.js";

const MODEL = "test/fixtures/gpt2-tiny";
const ADAPTER = "test/fixtures/peft-tiny/adapter-c_attn";
const quiet = { onWarning: () => {} };

/** Sets element `index` of t to `value` (NaN by default). */
function poison(t: Tensor, index: number, value = NaN): void {
  noGrad(() => {
    const v = Float32Array.from(t.dataSync());
    v[index] = value;
    const src = tensor(v, { shape: t.shape });
    copyInto(t, src);
    src.dispose();
  });
}

/** The adapter with one NaN in layer 1's lora_B, in a row that feeds a query (head 0): every score of that head is NaN. */
function brokenAdapter(): PeftModel<GPT2LMHeadModel> {
  const peft = PeftModel.fromPretrainedSync(GPT2LMHeadModel.fromPretrainedSync(MODEL), ADAPTER, quiet);
  poison(peft.loraLayers.get("transformer.h.1.attn.c_attn")!.parametersOf("default")[1]!, 5 * 4);
  return peft;
}

describe("generate() refuses NaN/Inf logits and names the broken weights", () => {
  it("one NaN in an adapter's lora_B: names the adapter, the layer and the tensor", () => {
    const peft = brokenAdapter();
    expect(() => generate(peft.model, [1, 2, 3], { maxNewTokens: 4 })).toThrow(
      /^generate: the logits for new token 1 hold NaN or Inf, so there is nothing to sample from: adapter "default" is broken: transformer\.h\.1\.attn\.c_attn\.lora_B \(layer 1\) holds 1 NaN of its 768 values$/,
    );
    // the base model alone is fine
    expect(peft.disableAdapter(() => generate(peft.model, [1, 2, 3], { maxNewTokens: 4 }))).toHaveLength(4);
    peft.dispose();
  });

  it("NaN in the base model's weights: names the base model and the tensor", () => {
    const model = GPT2LMHeadModel.fromPretrainedSync(MODEL);
    poison(model.transformer.h.at(0)!.mlp.c_fc.weight, 10);
    poison(model.transformer.h.at(0)!.mlp.c_fc.weight, 11, Infinity);
    expect(() => generate(model, [1, 2, 3])).toThrow(/the base model is broken: transformer\.h\.0\.mlp\.c_fc\.weight \(layer 0\) holds 1 NaN and 1 Inf of its 16384 values$/);
    model.dispose();
  });
});

describe("safe merge names the right cause", () => {
  it("a broken adapter: PEFT's sentence, with the layer and the tensor", () => {
    const peft = brokenAdapter();
    expect(() => peft.mergeAdapter({ safeMerge: true })).toThrow(
      /^NaNs detected in the merged weights of transformer\.h\.1\.attn\.c_attn\. The adapter default seems to be broken: its lora_B hold NaN\/Inf$/,
    );
    peft.dispose();
  });

  it("a broken base model: not the adapter", () => {
    const peft = PeftModel.fromPretrainedSync(GPT2LMHeadModel.fromPretrainedSync(MODEL), ADAPTER, quiet);
    poison((peft.model.getSubmodule("transformer.h.0.attn.c_attn.base_layer") as unknown as { weight: Tensor }).weight, 0);
    const err = (() => {
      try {
        peft.mergeAdapter({ safeMerge: true });
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(UnsafeMergeError);
    expect((err as Error).message).toBe(
      "NaNs detected in the merged weights of transformer.h.0.attn.c_attn. The base model is broken, not the adapter default: " +
        "the base weight of transformer.h.0.attn.c_attn holds NaN/Inf before merging",
    );
    peft.dispose();
  });
});

describe("the Trainer on a NaN loss", () => {
  const EOS = 100;
  const examples = Array.from({ length: 4 }, (_, i) => {
    const ids = [i, i + 1, i + 2, i + 50, EOS];
    return { inputIds: Int32Array.from(ids), labels: Int32Array.from(ids).fill(IGNORE_INDEX, 0, 3), line: i + 1 };
  });
  const run = async (model: PeftModel<GPT2LMHeadModel>) => {
    const trainer = new Trainer({
      model, trainData: new DataLoader(examples, { batchSize: 2, tokenizer: { eosTokenId: EOS }, seed: 1 }),
      maxSteps: 2, lr: 1e-3, generators: { model: new Generator(1) }, progress: { quiet: true }, config: {},
    });
    try {
      await trainer.train();
      return null;
    } catch (e) {
      return e;
    } finally {
      trainer.dispose();
      model.dispose();
    }
  };

  it("NaN base weights: names the base model's tensor, and does not advise a lower learning rate", async () => {
    const base = GPT2LMHeadModel.fromPretrainedSync(MODEL);
    poison(base.transformer.wpe.weight, 3);
    const err = await run(getPeftModel(base, new LoraConfig({ r: 2, targetModules: ["c_attn"], fanInFanOut: true }), "default", quiet));
    expect(err).toBeInstanceOf(NonFiniteLossError);
    expect((err as Error).message).toMatch(
      /^loss is NaN at step 1 \(lr 1\.00e-3\); training stopped without applying this update\. The base model is broken: transformer\.wpe\.weight holds 1 NaN of its 4096 values\. Its weights are frozen, so training did not do this: use a model whose weights are finite\.$/,
    );
    expect((err as Error).message).not.toMatch(/learning rate/);
  });

  it("an adapter loaded with NaN: names it, before any update", async () => {
    const peft = PeftModel.fromPretrainedSync(GPT2LMHeadModel.fromPretrainedSync(MODEL), ADAPTER, { isTrainable: true, ...quiet });
    poison(peft.loraLayers.get("transformer.h.0.attn.c_attn")!.parametersOf("default")[0]!, 0);
    const err = await run(peft);
    expect((err as Error).message).toMatch(/Adapter "default" is broken: transformer\.h\.0\.attn\.c_attn\.lora_A \(layer 0\) holds 1 NaN of its 256 values, before any update of this run/);
  });
});
