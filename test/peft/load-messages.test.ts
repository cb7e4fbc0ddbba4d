// Loading an adapter that does not fit: a short message naming the tensor, the expected and found
// shapes and, when only the rank differs, the config's r against the file's.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { GPT2Config, GPT2LMHeadModel, getPeftModel, LoraConfig, PeftModel } from "../../lib/index.js";

const tmp = mkdtempSync(join(tmpdir(), "lowrank-load-messages-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
const quiet = { onWarning: () => {} };
const tiny = (nEmbd = 8) => new GPT2LMHeadModel(new GPT2Config({ vocabSize: 50, nPositions: 16, nEmbd, nLayer: 2, nHead: 2 }));

/** An r=2 adapter on c_attn and c_proj of the 8-wide model, saved to DIR. */
function saveAdapter(dir: string): void {
  const peft = getPeftModel(tiny(), new LoraConfig({ r: 2, targetModules: ["c_attn", "c_proj"], fanInFanOut: true }), "default", quiet);
  peft.savePretrainedSync(dir);
  peft.dispose();
}

describe("an adapter that does not fit the model", () => {
  it("config r against the weights' r: one short line naming the tensor, both shapes and both ranks", () => {
    const dir = join(tmp, "rank");
    saveAdapter(dir);
    const configPath = join(dir, "adapter_config.json");
    writeFileSync(configPath, readFileSync(configPath, "utf8").replace('"r": 2', '"r": 4'));
    const base = tiny();
    let message = "";
    try {
      PeftModel.fromPretrainedSync(base, dir, quiet);
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toBe(
      `PeftModel: ${configPath} says r=4 but ${join(dir, "adapter_model.safetensors")} holds r=2 tensors ` +
        "(base_model.model.transformer.h.0.attn.c_attn.lora_A.weight: expected [4, 8], found [2, 8]; 11 more differ the same way); " +
        'set "r" (and any rank_pattern) in adapter_config.json to the rank the weights were trained with',
    );
    base.dispose();
  });

  it("another base model: at most three tensors listed, mis-shaped ones not also counted as missing", () => {
    const dir = join(tmp, "other-base");
    saveAdapter(dir);
    const base = tiny(16);
    expect(() => PeftModel.fromPretrainedSync(base, dir, quiet)).toThrow(
      new RegExp(
        "^PeftModel: adapter .*adapter_model\\.safetensors does not fit the model \\(mis-shaped: " +
          "base_model\\.model\\.transformer\\.h\\.0\\.attn\\.c_attn\\.lora_A\\.weight: expected \\[2, 16\\], found \\[2, 8\\], " +
          "base_model\\.model\\.transformer\\.h\\.0\\.attn\\.c_attn\\.lora_B\\.weight: expected \\[48, 2\\], found \\[24, 2\\], " +
          "base_model\\.model\\.transformer\\.h\\.0\\.attn\\.c_proj\\.lora_A\\.weight: expected \\[2, 16\\], found \\[2, 8\\] \\(\\+9 more\\)\\); " +
          "was it trained for another base model or config\\?$",
      ),
    );
    base.dispose();
  });
});
