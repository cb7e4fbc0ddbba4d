// LoRA on GPT-2's token embedding against PEFT's lora.Embedding (fixture made by
// test/fixtures/make_embedding_fixture.py). wte is tied to the output head: unmerged, the head reads
// the base table; merged, it reads the merged one — in PEFT and here alike.
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { GPT2LMHeadModel, LoraEmbedding, noGrad, PeftModel, tensor, tidy } from "../../lib/index.js";
import { relError } from "../helpers.js";

const DIR = "test/fixtures/peft-embedding";
const ref = JSON.parse(readFileSync(`${DIR}/reference.json`, "utf8"));
const ids = (rows: number[][]) => tensor(Int32Array.from(rows.flat()), { shape: [rows.length, rows[0]!.length] });
const flat = (x: unknown): number[] => (Array.isArray(x) ? x.flatMap(flat) : [x as number]);

describe("LoRA on an Embedding", () => {
  it("loads PEFT's lora_embedding_A/B, gives PEFT's logits unmerged and merged", () => {
    const peft = PeftModel.fromPretrainedSync(GPT2LMHeadModel.fromPretrainedSync("test/fixtures/gpt2-tiny"), DIR, { onWarning: () => {} });
    peft.eval();
    expect(peft.loraLayers.get("transformer.wte")).toBeInstanceOf(LoraEmbedding);
    const run = () => noGrad(() => tidy(() => peft.forward({ inputIds: ids(ref.input_ids), attentionMask: ids(ref.attention_mask) }).logits.dataSync()));
    // float32 on both sides: ~1e-6 observed; 1e-4 relative is the project's bar
    expect(relError(run(), flat(ref.logits))).toBeLessThan(1e-4);
    peft.mergeAdapter();
    expect(relError(run(), flat(ref.merged_logits))).toBeLessThan(1e-4);
    peft.unmergeAdapter();
    expect(relError(run(), flat(ref.logits))).toBeLessThan(1e-4);
    peft.dispose();
  });
});
