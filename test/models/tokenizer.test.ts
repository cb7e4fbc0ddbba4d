import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { decode as r50kDecode, encode as r50kEncode } from "gpt-tokenizer/encoding/r50k_base";
import { afterAll, describe, expect, it } from "vitest";
import { GPT2Tokenizer } from "../../lib/models/tokenizer.js";
import { prng } from "../helpers.js";

const FIXTURES = join(import.meta.dirname, "..", "fixtures");
const GPT2_DIR = join(FIXTURES, "gpt2-tokenizer");
const TINY_DIR = join(FIXTURES, "tiny-tokenizer");

/**
 * `corpus`: varied text (prose, contractions, code, numbers, whitespace runs, scripts, emoji with
 * ZWJ sequences, special-token text). `pythonOnly`: text with U+0085 or U+FEFF, where JavaScript's
 * \s (used by gpt-tokenizer) differs from Unicode White_Space (used by Hugging Face and tiktoken).
 */
const { corpus, pythonOnly } = JSON.parse(readFileSync(join(FIXTURES, "tokenizer_corpus.json"), "utf8")) as { corpus: string[]; pythonOnly: string[] };
const allTexts = [...corpus, ...pythonOnly];

/** Ids from Python (transformers' GPT2Tokenizer), made by test/fixtures/make_tokenizer_fixtures.py. */
interface PythonIds {
  plain: number[][];
  special: number[][];
  decode: { ids: number[]; prefixes: string[] }[];
}
const python = JSON.parse(readFileSync(join(FIXTURES, "tokenizer_expected.json"), "utf8")) as { gpt2: PythonIds; tiny: PythonIds };

const gpt2 = GPT2Tokenizer.fromPretrained(GPT2_DIR);
const scratch = mkdtempSync(join(tmpdir(), "lowrank-tokenizer-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** gpt-tokenizer's GPT-2 encoding with special-token text treated as ordinary text. */
const reference = (text: string) => r50kEncode(text, { disallowedSpecial: new Set() });


function checkAgainstPython(tok: GPT2Tokenizer, ids: PythonIds): void {
  allTexts.forEach((text, i) => {
    expect(tok.encode(text), JSON.stringify(text)).toEqual(ids.plain[i]);
    expect(tok.encode(text, { allowedSpecial: "all" }), JSON.stringify(text)).toEqual(ids.special[i]);
    expect(tok.decode(ids.special[i]!)).toBe(text);
    expect(tok.decode(ids.plain[i]!)).toBe(text);
  });
  for (const { ids: list, prefixes } of ids.decode) {
    prefixes.forEach((want, k) => expect(tok.decode(list.slice(0, k))).toBe(want));
  }
}

describe("GPT-2 tokenizer (vocab.json + merges.txt rebuilt from r50k_base)", () => {
  it("has GPT-2's vocabulary size and end-of-text token", () => {
    expect(gpt2.vocabSize).toBe(50257);
    expect(gpt2.eosToken).toBe("<|endoftext|>");
    expect(gpt2.eosTokenId).toBe(50256);
    expect(gpt2.tokenToId("Ġthe")).toBe(262);
    expect(gpt2.idToToken(15496)).toBe("Hello");
    expect(gpt2.encode("Hello world")).toEqual([15496, 995]);
  });

  it("encodes the corpus exactly as gpt-tokenizer's r50k_base (GPT-2) does", () => {
    for (const text of corpus) expect(gpt2.encode(text), JSON.stringify(text)).toEqual(reference(text));
  });

  it("encodes and decodes the corpus exactly as Python's transformers does", () => {
    checkAgainstPython(gpt2, python.gpt2);
  });

  it("agrees with gpt-tokenizer on 400 seeded random strings and round-trips them", () => {
    const rand = prng(7);
    const pool = [..."abcXYZ019 '.,;!?-_()[]{}<>|\\/\"\t\n\r", "  ", "\n\n", "'s", "'ll", "'re", "é", "ü", "ß", "ñ", "中", "文", "ア", "한",
      "😀", "👍🏽", "👨‍👩‍👧", "🇯🇵", "e\u0301", "\u00a0", "\u3000", "\u2028", "١", "½", "ℕ", "𝔘", "<|endoftext|>"];
    for (let i = 0; i < 400; i++) {
      let text = "";
      for (let n = Math.floor(rand() * 40); n > 0; n--) text += pool[Math.floor(rand() * pool.length)];
      const ids = gpt2.encode(text);
      expect(ids, JSON.stringify(text)).toEqual(reference(text));
      expect(gpt2.decode(ids)).toBe(text);
      expect(r50kDecode(ids)).toBe(text);
    }
  });

  it("treats <|endoftext|> in text as ordinary characters unless allowed", () => {
    const text = "Hello<|endoftext|>World";
    expect(gpt2.encode(text)).not.toContain(50256);
    expect(gpt2.encode(text, { allowedSpecial: "all" })).toEqual([15496, 50256, 10603]);
    expect(gpt2.encode(text, { allowedSpecial: ["<|endoftext|>"] })).toEqual([15496, 50256, 10603]);
    expect(gpt2.encode(text, { allowedSpecial: [] })).toEqual(gpt2.encode(text));
    expect(gpt2.decode([15496, 50256, 10603])).toBe(text);
    expect(gpt2.decode([15496, 50256, 10603], { skipSpecialTokens: true })).toBe("HelloWorld");
    expect(() => gpt2.encode(text, { allowedSpecial: ["<|im_start|>"] })).toThrow(/allowedSpecial names "<\|im_start\|>", which is not a special token of .* \(it has "<\|endoftext\|>"\)/);
  });

  it("encodes lone surrogates as U+FFFD, like TextEncoder and gpt-tokenizer", () => {
    for (const text of ["a\ud800b", "\udc00", "x\ud83d", "ok 😀\ude00"]) {
      expect(gpt2.encode(text)).toEqual(reference(text));
      expect(gpt2.decode(gpt2.encode(text))).toBe(text.replace(/\p{Cs}/gu, "\ufffd"));
    }
  });

  it("maxTokens gives the first ids of the whole text's, for every cut of the corpus, with and without special tokens", () => {
    for (const text of allTexts) {
      for (const allowedSpecial of [undefined, "all"] as const) {
        const whole = gpt2.encode(text, { allowedSpecial });
        for (let n = 0; n <= whole.length + 1; n++) expect(gpt2.encode(text, { allowedSpecial, maxTokens: n }), `${JSON.stringify(text)} maxTokens ${n}`).toEqual(whole.slice(0, n));
      }
    }
    expect(() => gpt2.encode("x", { maxTokens: -1 })).toThrow("GPT2Tokenizer.encode: maxTokens must be a non-negative integer, got -1");
  });

  it("names the id that is not in the vocabulary", () => {
    expect(() => gpt2.decode([15496, 50257])).toThrow(/GPT2Tokenizer.decode: id 50257 is not in the vocabulary of .*vocab.json" \+ merges.txt \(50257 ids\)/);
  });
});

describe("any byte-level BPE vocabulary", () => {
  it("reads a tiny trained tokenizer from tokenizer.json and matches Python", () => {
    const tiny = GPT2Tokenizer.fromPretrained(TINY_DIR);
    expect(tiny.eosTokenId).toBe(0);
    expect(tiny.vocabSize).toBe(400);
    checkAgainstPython(tiny, python.tiny);
  });

  it("reads the same tokenizer from vocab.json + merges.txt and matches Python", () => {
    const dir = join(scratch, "tiny-vocab-merges");
    mkdirSync(dir);
    for (const f of ["vocab.json", "merges.txt"]) copyFileSync(join(TINY_DIR, f), join(dir, f));
    const tiny = GPT2Tokenizer.fromPretrained(dir);
    expect(tiny.eosTokenId).toBe(0);
    checkAgainstPython(tiny, python.tiny);
  });

  it("builds from an in-memory spec and merges the best-ranked pair everywhere, left to right", () => {
    const bytes = Array.from({ length: 256 }, (_, b) => gpt2.idToToken(b)!);
    const vocab = new Map(bytes.map((t, i) => [t, i]));
    for (const t of ["aa", "aaa", "ab", "<|eos|>"]) vocab.set(t, vocab.size);
    const tok = new GPT2Tokenizer({
      vocab, merges: [["a", "a"], ["a", "b"], ["aa", "a"]], specialTokens: new Map([["<|eos|>", 259]]), eosToken: "<|eos|>", source: "test spec",
    });
    const id = (t: string) => vocab.get(t)!;
    // "aaaa": (a a) merges twice -> [aa, aa]; "aaa" -> [aa, a] -> (aa a) -> [aaa]; "aab" -> [aa, b] (a a ranks before a b).
    expect(tok.encode("aaaa")).toEqual([id("aa"), id("aa")]);
    expect(tok.encode("aaa")).toEqual([id("aaa")]);
    expect(tok.encode("aab")).toEqual([id("aa"), id("b")]);
    expect(tok.encode("x<|eos|>", { allowedSpecial: "all" })).toEqual([id("x"), 259]);
    expect(tok.eosTokenId).toBe(259);
  });
});

describe("tokenizer file errors name the file", () => {
  function folder(name: string, files: Record<string, string>): string {
    const dir = join(scratch, name);
    mkdirSync(dir);
    for (const [f, text] of Object.entries(files)) writeFileSync(join(dir, f), text);
    return dir;
  }
  const tinyVocab = () => JSON.parse(readFileSync(join(TINY_DIR, "vocab.json"), "utf8")) as Record<string, number>;
  const tinyMerges = readFileSync(join(TINY_DIR, "merges.txt"), "utf8");

  it("missing files", () => {
    expect(() => GPT2Tokenizer.fromPretrained(folder("empty", {}))).toThrow(/GPT2Tokenizer: ".*empty.vocab.json" is missing; a tokenizer folder needs tokenizer.json, or vocab.json and merges.txt/);
    expect(() => GPT2Tokenizer.fromPretrained(folder("no-merges", { "vocab.json": "{}" }))).toThrow(/".*no-merges.merges.txt" is missing/);
  });

  it("corrupt vocab.json", () => {
    expect(() => GPT2Tokenizer.fromPretrained(folder("bad-json", { "vocab.json": "{\"a\": ", "merges.txt": "" }))).toThrow(/GPT2Tokenizer: ".*bad-json.vocab.json" is not valid JSON/);
    expect(() => GPT2Tokenizer.fromPretrained(folder("bad-id", { "vocab.json": "{\"a\": -1}", "merges.txt": "" }))).toThrow(/".*bad-id.vocab.json": token "a" has id -1; ids must be integers >= 0/);
    const shared = { ...tinyVocab(), extra: 5 };
    expect(() => GPT2Tokenizer.fromPretrained(folder("dup-id", { "vocab.json": JSON.stringify(shared), "merges.txt": tinyMerges }))).toThrow(/dup-id.vocab.json" \+ merges.txt: tokens ".*" and "extra" share id 5/);
    const noByte = tinyVocab();
    delete noByte["Ā"];
    expect(() => GPT2Tokenizer.fromPretrained(folder("no-byte", { "vocab.json": JSON.stringify(noByte), "merges.txt": tinyMerges }))).toThrow(/lacks the byte-level symbol "Ā" \(byte 0x00\); a byte-level BPE vocabulary needs all 256/);
    const noEos = tinyVocab();
    delete noEos["<|endoftext|>"];
    expect(() => GPT2Tokenizer.fromPretrained(folder("no-eos", { "vocab.json": JSON.stringify(noEos), "merges.txt": tinyMerges }))).toThrow(/the end-of-text token "<\|endoftext\|>" is not a special token of this tokenizer/);
  });

  it("corrupt merges.txt", () => {
    const vocab = JSON.stringify(tinyVocab());
    expect(() => GPT2Tokenizer.fromPretrained(folder("bad-line", { "vocab.json": vocab, "merges.txt": "#version: 0.2\na a\nab\n" }))).toThrow(/".*bad-line.merges.txt": line 3: expected two tokens separated by one space, got "ab"/);
    expect(() => GPT2Tokenizer.fromPretrained(folder("unknown-merge", { "vocab.json": vocab, "merges.txt": "#version: 0.2\nq z\n" }))).toThrow(/merge 1 \("q z"\) uses "qz", which is not in the vocabulary/);
  });

  it("unsupported tokenizer.json", () => {
    const json = JSON.parse(readFileSync(join(TINY_DIR, "tokenizer.json"), "utf8"));
    const wordPiece = folder("wordpiece", { "tokenizer.json": JSON.stringify({ ...json, model: { ...json.model, type: "WordPiece" } }) });
    expect(() => GPT2Tokenizer.fromPretrained(wordPiece)).toThrow(/wordpiece.tokenizer.json": model.type is "WordPiece", not "BPE"; lowrank supports GPT-2-style byte-level BPE tokenizers only/);
    const prefix = folder("prefix", { "tokenizer.json": JSON.stringify({ ...json, pre_tokenizer: { ...json.pre_tokenizer, add_prefix_space: true } }) });
    expect(() => GPT2Tokenizer.fromPretrained(prefix)).toThrow(/pre_tokenizer must be ByteLevel with add_prefix_space false/);
    const template = { type: "TemplateProcessing", single: [{ SpecialToken: { id: "<|endoftext|>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }] };
    const bos = folder("bos", { "tokenizer.json": JSON.stringify({ ...json, post_processor: template }) });
    expect(() => GPT2Tokenizer.fromPretrained(bos)).toThrow(/post_processor .* adds tokens/);
  });
});
