// AutoTokenizer and PreTrainedTokenizer against Python on real published tokenizer.json files
// (Qwen3, Llama 3.1, Llama 2: test/fixtures/tokenizers/README.md), made by
// test/fixtures/make_tokenizer_json_fixtures.py: ids with and without special tokens, decoding,
// special tokens; then loading rules and errors.
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { AutoTokenizer, GPT2Tokenizer, PreTrainedTokenizer } from "../../lib/index.js";
import { expected, loadTokenizer, TOKENIZER_NAMES, tokenizerDir, type TokenizerName } from "./tokenizer-fixtures.js";

interface Expected {
  special: Record<string, string | number | null>;
  encode: { text: string; tokenizersSpecial: number[]; tokenizersPlain: number[]; transformersSpecial: number[]; transformersPlain: number[] }[];
  decode: { ids: number[]; text: string; skipSpecial: string }[];
}

// transformers 5.18 re-derives Llama 2's (SentencePiece-style) pre-tokenization instead of running
// its tokenizer.json, and differs from `tokenizers` on leading spaces and spaces around special
// tokens; tokenizer.json, and so lowrank, follows `tokenizers` there (so no transformers test for it).
const FOLLOWS_TRANSFORMERS: Record<TokenizerName, boolean> = { qwen3: true, llama3: true, llama2: false };

describe.each(TOKENIZER_NAMES)("%s tokenizer.json", (name) => {
  const want = expected<Expected>(name);

  it("encodes the corpus as Python's tokenizers does, with and without special tokens", () => {
    const tok = loadTokenizer(name);
    for (const row of want.encode) {
      expect(tok.encode(row.text), JSON.stringify(row.text)).toEqual(row.tokenizersSpecial);
      expect(tok.encode(row.text, { addSpecialTokens: false }), JSON.stringify(row.text)).toEqual(row.tokenizersPlain);
    }
  });

  if (FOLLOWS_TRANSFORMERS[name]) it("and as transformers' AutoTokenizer does", () => {
    const tok = loadTokenizer(name);
    for (const row of want.encode) {
      expect(tok.encode(row.text), JSON.stringify(row.text)).toEqual(row.transformersSpecial);
      expect(tok.encode(row.text, { addSpecialTokens: false }), JSON.stringify(row.text)).toEqual(row.transformersPlain);
    }
  });

  it("decodes as transformers does, with and without skipSpecialTokens", () => {
    const tok = loadTokenizer(name);
    for (const row of want.decode) {
      expect(tok.decode(row.ids), JSON.stringify(row.text)).toBe(row.text);
      expect(tok.decode(row.ids, { skipSpecialTokens: true }), JSON.stringify(row.text)).toBe(row.skipSpecial);
    }
  });

  it("has transformers' special tokens, ids and vocabulary size", () => {
    const tok = loadTokenizer(name);
    const s = want.special;
    expect({
      bosToken: tok.bosToken ?? null, bosTokenId: tok.bosTokenId ?? null, eosToken: tok.eosToken, eosTokenId: tok.eosTokenId,
      padToken: tok.padToken ?? null, padTokenId: tok.padTokenId ?? null, unkToken: tok.unkToken ?? null, unkTokenId: tok.unkTokenId ?? null,
      vocabSize: tok.vocabSize,
    }).toEqual(s);
    expect(tok.eosTokenIds).toEqual([s.eosTokenId]);
  });

  it("stops at maxTokens with the ids the whole text starts with, also when it cuts a long text short", () => {
    const tok = loadTokenizer(name);
    const text = want.encode.map((r) => r.text).join("\n").repeat(100); // ~170 KB: long enough to be cut before encoding
    const whole = tok.encode(text);
    for (const max of [0, 1, 7, 300]) expect(tok.encode(text, { maxTokens: max })).toEqual(whole.slice(0, max));
  });
});

describe("PreTrainedTokenizer loading", () => {
  const tmp = mkdtempSync(join(tmpdir(), "lowrank-autotok-"));
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));
  /** A copy of the llama3 fixture folder plus `files` (name -> content). */
  const folder = (label: string, files: Record<string, string> = {}) => {
    const dir = join(tmp, label);
    mkdirSync(dir);
    for (const f of ["tokenizer.json", "tokenizer_config.json"]) copyFileSync(join(tokenizerDir("llama3"), f), join(dir, f));
    for (const [f, text] of Object.entries(files)) writeFileSync(join(dir, f), text);
    return dir;
  };

  it("AutoTokenizer gives a PreTrainedTokenizer for tokenizer.json and GPT2Tokenizer for GPT-2 folders", () => {
    expect(AutoTokenizer.fromPretrained(tokenizerDir("qwen3"))).toBeInstanceOf(PreTrainedTokenizer);
    // vocab.json + merges.txt only (the bundled demo model), and a gpt2 config with tokenizer.json
    expect(AutoTokenizer.fromPretrained("data/demo/model")).toBeInstanceOf(GPT2Tokenizer);
    const gpt2 = join(tmp, "gpt2-json");
    mkdirSync(gpt2);
    copyFileSync("test/fixtures/tiny-tokenizer/tokenizer.json", join(gpt2, "tokenizer.json"));
    writeFileSync(join(gpt2, "config.json"), JSON.stringify({ model_type: "gpt2" }));
    expect(AutoTokenizer.fromPretrained(gpt2)).toBeInstanceOf(GPT2Tokenizer);
  });

  it("resolves a Hugging Face name in the local cache", () => {
    const snap = join(tmp, "hub", "models--meta-llama--Tok", "snapshots", "a".repeat(40));
    mkdirSync(snap, { recursive: true });
    for (const f of ["tokenizer.json", "tokenizer_config.json"]) copyFileSync(join(tokenizerDir("llama3"), f), join(snap, f));
    mkdirSync(join(tmp, "hub", "models--meta-llama--Tok", "refs"));
    writeFileSync(join(tmp, "hub", "models--meta-llama--Tok", "refs", "main"), "a".repeat(40));
    const saved = process.env.HF_HUB_CACHE;
    process.env.HF_HUB_CACHE = join(tmp, "hub");
    try {
      const tok = AutoTokenizer.fromPretrained("meta-llama/Tok");
      expect(tok.encode("Hello world")).toEqual(loadTokenizer("llama3").encode("Hello world"));
      expect(() => AutoTokenizer.fromPretrained("meta-llama/Missing")).toThrow(/nor in the Hugging Face cache \(looked for .*models--meta-llama--Missing/);
    } finally {
      if (saved === undefined) delete process.env.HF_HUB_CACHE;
      else process.env.HF_HUB_CACHE = saved;
    }
  });

  it("takes every EOS id of generation_config.json, and special_tokens_map.json over tokenizer_config.json", () => {
    const dir = folder("gen", {
      "generation_config.json": JSON.stringify({ eos_token_id: [128001, 128008, 128009] }),
      "special_tokens_map.json": JSON.stringify({ pad_token: { content: "<|end_of_text|>", lstrip: false } }),
    });
    const tok = AutoTokenizer.fromPretrained(dir) as PreTrainedTokenizer;
    expect(tok.eosTokenIds).toEqual([128001, 128008, 128009]);
    expect(tok.eosTokenId).toBe(128009);
    expect([tok.padToken, tok.padTokenId]).toEqual(["<|end_of_text|>", 128001]);
    expect(tok.specialTokensMap).toEqual({ bos_token: "<|begin_of_text|>", eos_token: "<|eot_id|>", pad_token: "<|end_of_text|>" });
  });

  it("names the file and the fix when tokenizer files are missing or malformed", () => {
    const empty = join(tmp, "empty");
    mkdirSync(empty);
    expect(() => AutoTokenizer.fromPretrained(empty)).toThrow(`${empty} has no tokenizer: looked for ${join(empty, "tokenizer.json")}`);
    writeFileSync(join(empty, "tokenizer.model"), "");
    expect(() => AutoTokenizer.fromPretrained(empty)).toThrow(/only tokenizer.model \(SentencePiece\).*save_pretrained/);
    const bad = folder("bad-json", { "tokenizer.json": '{"model": ' });
    expect(() => AutoTokenizer.fromPretrained(bad)).toThrow(`${join(bad, "tokenizer.json")} is not valid JSON`);
    const noModel = folder("no-model", { "tokenizer.json": '{"version": "1.0"}' });
    expect(() => AutoTokenizer.fromPretrained(noModel)).toThrow(`${join(noModel, "tokenizer.json")} is not a Hugging Face tokenizer.json (no "model" object)`);
    const badModel = folder("bad-model", { "tokenizer.json": '{"model": {"type": "Nope"}, "decoder": null}' });
    expect(() => AutoTokenizer.fromPretrained(badModel)).toThrow(`${join(badModel, "tokenizer.json")} cannot be loaded`);
    const badConfig = folder("bad-config", { "tokenizer_config.json": "[1]" });
    expect(() => AutoTokenizer.fromPretrained(badConfig)).toThrow(`${join(badConfig, "tokenizer_config.json")} must hold a JSON object, got an array`);
    const unknownEos = folder("unknown-eos", { "tokenizer_config.json": JSON.stringify({ eos_token: "<|nope|>" }) });
    expect(() => AutoTokenizer.fromPretrained(unknownEos)).toThrow(/eos_token "<\|nope\|>" .* is not in the vocabulary/);
    const noEos = folder("no-eos", { "tokenizer_config.json": "{}" });
    expect(() => AutoTokenizer.fromPretrained(noEos)).toThrow(/names no end-of-sequence token.*add "eos_token" to tokenizer_config.json/);
    const badGen = folder("bad-gen", { "generation_config.json": JSON.stringify({ eos_token_id: "x" }) });
    expect(() => AutoTokenizer.fromPretrained(badGen)).toThrow(`${join(badGen, "generation_config.json")}: eos_token_id must be a token id or a list of them`);
  });

  it("refuses ids outside the vocabulary when decoding", () => {
    const tok = loadTokenizer("qwen3");
    expect(tok.decode([])).toBe("");
    expect(() => tok.decode([9, 151669])).toThrow(/id 151669 is not in the vocabulary .* \(151669 ids\)/);
    expect(() => tok.decode([-1])).toThrow(/id -1 is not in the vocabulary/);
  });
});
