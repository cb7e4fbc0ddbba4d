// The real tokenizer.json fixtures (test/fixtures/tokenizers/<name>/, gzipped to keep the
// repository small) unpacked into a temporary folder that loads like a model folder.
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { PreTrainedTokenizer } from "../../lib/models/pretrained-tokenizer.js";

export const FIXTURES = "test/fixtures/tokenizers";
export const TOKENIZER_NAMES = ["qwen3", "llama3", "llama2"] as const;
export type TokenizerName = (typeof TOKENIZER_NAMES)[number];

let root: string | undefined;

/** A folder holding <name>'s tokenizer.json and tokenizer_config.json (made once per test file). */
export function tokenizerDir(name: TokenizerName): string {
  if (root === undefined) {
    const made = (root = mkdtempSync(join(tmpdir(), "lowrank-tok-")));
    process.once("exit", () => rmSync(made, { recursive: true, force: true }));
  }
  const dir = join(root, name);
  if (!existsSync(join(dir, "tokenizer.json"))) {
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, "tokenizer.json"), gunzipSync(readFileSync(join(FIXTURES, name, "tokenizer.json.gz"))));
    copyFileSync(join(FIXTURES, name, "tokenizer_config.json"), join(dir, "tokenizer_config.json"));
  }
  return dir;
}

const loaded = new Map<TokenizerName, PreTrainedTokenizer>();

/** The fixture's tokenizer, loaded once per test file (a load takes about a second). */
export function loadTokenizer(name: TokenizerName): PreTrainedTokenizer {
  let tok = loaded.get(name);
  if (!tok) loaded.set(name, (tok = PreTrainedTokenizer.fromPretrained(tokenizerDir(name))));
  return tok;
}

/** The expected.json that make_tokenizer_json_fixtures.py wrote for <name>. */
export function expected<T = Record<string, unknown>>(name: TokenizerName): T {
  return JSON.parse(readFileSync(join(FIXTURES, name, "expected.json"), "utf8")) as T;
}
