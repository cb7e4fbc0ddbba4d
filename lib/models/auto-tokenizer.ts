// AutoTokenizer: the tokenizer a model folder (or a Hugging Face name in the local cache) ships.
// GPT-2 keeps its own byte-level BPE (lib/models/tokenizer.ts: faster, and it encodes only as far
// as maxTokens reaches); every other tokenizer.json goes through PreTrainedTokenizer.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { resolveModelDir } from "./hub.js";
import { GPT2Tokenizer } from "./tokenizer.js";
import { PreTrainedTokenizer } from "./pretrained-tokenizer.js";

export type AnyTokenizer = GPT2Tokenizer | PreTrainedTokenizer;

/** config.json's model_type, when the folder has a readable one (a tokenizer-only folder has none). */
function modelType(dir: string): unknown {
  try {
    return (JSON.parse(readFileSync(join(dir, "config.json"), "utf8")) as { model_type?: unknown }).model_type;
  } catch {
    return undefined;
  }
}

export const AutoTokenizer = {
  /**
   * The tokenizer of a folder, or of a Hugging Face model name already in the local cache (at
   * `revision`, "main" by default): GPT2Tokenizer for GPT-2 (config.json's model_type "gpt2", or
   * vocab.json + merges.txt without tokenizer.json), PreTrainedTokenizer for tokenizer.json.
   */
  fromPretrained(nameOrPath: string, opts: { revision?: string } = {}): AnyTokenizer {
    const dir = resolveModelDir(nameOrPath, "AutoTokenizer.fromPretrained", opts.revision);
    const hasJson = existsSync(join(dir, "tokenizer.json"));
    const hasBpeFiles = existsSync(join(dir, "vocab.json")) && existsSync(join(dir, "merges.txt"));
    if ((hasJson || hasBpeFiles) && modelType(dir) === "gpt2") return GPT2Tokenizer.fromPretrained(dir);
    if (hasJson) return PreTrainedTokenizer.fromPretrained(dir);
    if (hasBpeFiles) return GPT2Tokenizer.fromPretrained(dir);
    // A SentencePiece model alone needs converting: transformers writes tokenizer.json when it saves.
    const fix = existsSync(join(dir, "tokenizer.model"))
      ? "it has only tokenizer.model (SentencePiece), which lowrank does not read: write tokenizer.json with Python's " +
        "`AutoTokenizer.from_pretrained(dir).save_pretrained(dir)`"
      : "copy the tokenizer files of the model into the folder";
    throw new Error(
      `AutoTokenizer.fromPretrained: ${dir} has no tokenizer: looked for ${join(dir, "tokenizer.json")} ` +
        `(or vocab.json + merges.txt for a GPT-2 tokenizer); ${fix}`,
    );
  },
};
