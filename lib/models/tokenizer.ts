// GPT-2's byte-level BPE tokenizer, compatible with Hugging Face's (tokenizers' ByteLevel
// pre-tokenizer + BPE model + ByteLevel decoder) for any vocab.json/merges.txt pair or
// tokenizer.json of that kind, not only GPT-2's own.
//
// Encoding: the text is split by GPT-2's regex into words, each word's UTF-8 bytes are written in
// GPT-2's byte-to-unicode alphabet (so every byte is a printable symbol), and BPE merges adjacent
// symbols in merges.txt order until no ranked pair is left. Decoding maps symbols back to bytes.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { isJsonObject } from "../io/json-object.js";
import { readChatTemplate, renderTokenizerChat, type ApplyChatTemplateOptions, type ChatMessage, type ChatTemplateSpec } from "./chat-template.js";

/**
 * GPT-2's pre-tokenizer. \s is spelled \p{White_Space} because JavaScript's \s differs from
 * Unicode White_Space (which the reference implementations use) on U+0085 and U+FEFF.
 */
const PRETOKENIZE =
  /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\p{White_Space}\p{L}\p{N}]+|\p{White_Space}+(?!\P{White_Space})|\p{White_Space}+/gu;

/**
 * GPT-2's bytes_to_unicode(): printable Latin-1 bytes stand for themselves, the other 68 bytes
 * (controls, space, ...) for U+0100 onwards, in byte order.
 */
const BYTE_TO_SYMBOL: readonly string[] = (() => {
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  let next = 0x100;
  return Array.from({ length: 256 }, (_, b) => String.fromCharCode(printable(b) ? b : next++));
})();
const SYMBOL_TO_BYTE = new Map(BYTE_TO_SYMBOL.map((s, b) => [s, b]));

/** GPT-2's byte-level alphabet: the symbol for each byte 0..255 (the first 256 entries of a byte-level vocabulary). */
export const BYTE_SYMBOLS: readonly string[] = BYTE_TO_SYMBOL;

/**
 * `text` split by GPT-2's pre-tokenizer, each word written in the byte-level alphabet: the units
 * BPE merges within (what a BPE trainer counts pairs in). Special tokens are not recognized.
 */
export function byteLevelWords(text: string): string[] {
  const utf8 = new TextEncoder();
  const words: string[] = [];
  for (const [word] of text.matchAll(PRETOKENIZE)) {
    let symbols = "";
    for (const b of utf8.encode(word)) symbols += BYTE_TO_SYMBOL[b];
    words.push(symbols);
  }
  return words;
}

/** The end-of-text token of GPT-2 and most byte-level BPE vocabularies. */
export const END_OF_TEXT = "<|endoftext|>";

/** Byte-level words kept in the BPE cache before the oldest are dropped. */
const CACHE_LIMIT = 100_000;

export interface TokenizerSpec {
  /** token -> id. */
  vocab: ReadonlyMap<string, number>;
  /** Merge rules in priority order, each a pair of tokens. */
  merges: readonly (readonly [string, string])[];
  /** Tokens matched whole in text when allowed (see EncodeOptions), never split by BPE. */
  specialTokens: ReadonlyMap<string, number>;
  /** The end-of-text token (default "<|endoftext|>"); it must have an id. */
  eosToken?: string;
  /** tokenizers' ignore_merges: a word that is itself in the vocabulary is taken whole. */
  ignoreMerges?: boolean;
  /** A chat template (GPT-2 ships none; a fine-tuned GPT-2's tokenizer_config.json may). */
  chatTemplate?: ChatTemplateSpec;
  /** Where the spec came from, for error messages. */
  source: string;
}

export interface EncodeOptions {
  /**
   * Special tokens recognized in the text: "all", or a list. Default: none, so text such as
   * "<|endoftext|>" in user data is encoded as ordinary characters and cannot inject control
   * tokens; append `eosTokenId` explicitly instead.
   */
  allowedSpecial?: "all" | readonly string[];
  /**
   * Stop after this many tokens: the result is the first maxTokens ids of the whole text's, at a
   * cost that grows with maxTokens rather than with the text (GPT-2's pre-tokenizer splits words
   * left to right and BPE works within a word, so the words that make the first ids are encoded
   * exactly as in the whole text). Default: no limit.
   */
  maxTokens?: number;
  /**
   * Accepted so that code written for any tokenizer (AutoTokenizer) can pass it: GPT-2's tokenizer
   * adds no special tokens around a text either way, as in transformers.
   */
  addSpecialTokens?: boolean;
}

export interface DecodeOptions {
  /** Leave special tokens out of the text. Default false. */
  skipSpecialTokens?: boolean;
}

function fail(source: string, what: string): Error {
  // what may quote a token or id from a corrupt file: keep the line readable
  return new Error(`GPT2Tokenizer: ${source}: ${what.length > 500 ? `${what.slice(0, 500)}…` : what}`);
}

function readText(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (err) {
    throw new Error(`GPT2Tokenizer: cannot read "${path}": ${(err as Error).message}`);
  }
}

function readJson(path: string): unknown {
  const text = readText(path);
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new Error(`GPT2Tokenizer: "${path}" is not valid JSON: ${(err as Error).message}`);
  }
}

/** vocab.json (or tokenizer.json's model.vocab): {token: id}. */
function vocabFrom(json: unknown, source: string): Map<string, number> {
  if (!isJsonObject(json)) throw fail(source, "the vocabulary must be a JSON object of token -> id");
  const vocab = new Map<string, number>();
  for (const [token, id] of Object.entries(json)) {
    if (!Number.isSafeInteger(id) || (id as number) < 0) throw fail(source, `token ${JSON.stringify(token)} has id ${JSON.stringify(id)}; ids must be integers >= 0`);
    vocab.set(token, id as number);
  }
  return vocab;
}

/** merges.txt: an optional "#version" line, then one "left right" pair per line. */
function mergesFromText(text: string, source: string): [string, string][] {
  const merges: [string, string][] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.replace(/\r$/, "");
    if (line === "" || (i === 0 && line.startsWith("#version"))) continue;
    const parts = line.split(" ");
    if (parts.length !== 2 || !parts[0] || !parts[1]) {
      throw fail(source, `line ${i + 1}: expected two tokens separated by one space, got ${JSON.stringify(line.slice(0, 80))}`);
    }
    merges.push([parts[0], parts[1]]);
  }
  return merges;
}

/** tokenizer.json's model.merges: ["left right", ...] (older) or [["left", "right"], ...] (newer). */
function mergesFromJson(json: unknown, source: string): [string, string][] {
  if (!Array.isArray(json)) throw fail(source, "model.merges must be an array");
  return json.map((m, i) => {
    const pair = typeof m === "string" ? m.split(" ") : m;
    if (!Array.isArray(pair) || pair.length !== 2 || pair.some((p) => typeof p !== "string" || p === "")) {
      throw fail(source, `model.merges[${i}] must be "left right" or ["left", "right"], got ${JSON.stringify(m).slice(0, 80)}`);
    }
    return [pair[0], pair[1]] as [string, string];
  });
}

/** tokenizer_config.json of `dir`, or {} when there is none. */
function tokenizerConfig(dir: string): Record<string, unknown> {
  const path = join(dir, "tokenizer_config.json");
  if (!existsSync(path)) return {};
  const json = readJson(path);
  return isJsonObject(json) ? json : {};
}

/** The eos token named in tokenizer_config.json (a string or {"content": ...}), if any. */
function configuredEos(config: Record<string, unknown>): string | undefined {
  const eos = config.eos_token;
  if (typeof eos === "string") return eos;
  if (isJsonObject(eos) && typeof eos.content === "string") return eos.content;
  return undefined;
}

/** Reads tokenizer.json, refusing the features this tokenizer does not implement. */
function specFromTokenizerJson(path: string): Omit<TokenizerSpec, "eosToken"> {
  const json = readJson(path);
  const unsupported = (what: string) => fail(`"${path}"`, `${what}; lowrank supports GPT-2-style byte-level BPE tokenizers only`);
  if (!isJsonObject(json) || !isJsonObject(json.model)) throw fail(`"${path}"`, "expected an object with a \"model\"");
  const model = json.model;
  if (model.type !== "BPE") throw unsupported(`model.type is ${JSON.stringify(model.type)}, not "BPE"`);
  if (json.normalizer != null) throw unsupported("it has a normalizer");
  const pre = json.pre_tokenizer;
  if (!isJsonObject(pre) || pre.type !== "ByteLevel" || pre.add_prefix_space === true || pre.use_regex === false) {
    throw unsupported(`pre_tokenizer must be ByteLevel with add_prefix_space false, got ${JSON.stringify(pre).slice(0, 120)}`);
  }
  // A ByteLevel post-processor only adjusts offsets, and so does a template made of the sequence
  // alone; any other template adds tokens (a BOS, say) that encode() would not.
  const post = json.post_processor;
  const onlySequence = (items: unknown) => Array.isArray(items) && items.every((p) => isJsonObject(p) && "Sequence" in p);
  if (post != null && !(isJsonObject(post) && (post.type === "ByteLevel" || (post.type === "TemplateProcessing" && onlySequence(post.single))))) {
    throw unsupported(`post_processor ${JSON.stringify(post).slice(0, 120)} adds tokens`);
  }
  if (json.decoder != null && !(isJsonObject(json.decoder) && json.decoder.type === "ByteLevel")) throw unsupported("decoder is not ByteLevel");
  if (model.dropout || model.continuing_subword_prefix || model.end_of_word_suffix || model.byte_fallback) {
    throw unsupported("BPE dropout, subword prefixes/suffixes and byte fallback are not implemented");
  }
  const specialTokens = new Map<string, number>();
  for (const t of Array.isArray(json.added_tokens) ? json.added_tokens : []) {
    if (!isJsonObject(t) || typeof t.content !== "string" || !Number.isSafeInteger(t.id)) throw fail(`"${path}"`, `malformed added_tokens entry ${JSON.stringify(t).slice(0, 80)}`);
    if (t.special !== true || t.lstrip || t.rstrip || t.single_word) {
      throw unsupported(`added token ${JSON.stringify(t.content)} is not a plain special token (special, no lstrip/rstrip/single_word)`);
    }
    specialTokens.set(t.content, t.id as number);
  }
  return {
    vocab: vocabFrom(model.vocab, `"${path}" model.vocab`),
    merges: mergesFromJson(model.merges, `"${path}"`),
    specialTokens,
    ignoreMerges: model.ignore_merges === true,
    source: `"${path}"`,
  };
}

export class GPT2Tokenizer {
  /** The end-of-text token ("<|endoftext|>" for GPT-2), also GPT-2's beginning-of-text token. */
  readonly eosToken: string;
  readonly eosTokenId: number;
  /** GPT-2 has no padding token (batches pad with eosTokenId). */
  readonly padToken?: string = undefined;
  readonly padTokenId?: number = undefined;
  /** The chat template, when the folder has one; settable, as in transformers. */
  chatTemplate: ChatTemplateSpec | undefined;
  private readonly encoder: ReadonlyMap<string, number>;
  private readonly decoder: Map<number, string>;
  /** "left right" -> merge priority (lower merges first). Symbols never contain a space. */
  private readonly mergeRanks = new Map<string, number>();
  private readonly special: ReadonlyMap<string, number>;
  private readonly specialIds: Set<number>;
  private readonly ignoreMerges: boolean;
  private readonly cache = new Map<string, readonly number[]>();
  private readonly utf8 = new TextEncoder();
  // ignoreBOM keeps a leading U+FEFF that the text itself holds (TextDecoder drops it by default).
  private readonly utf8Decoder = new TextDecoder("utf-8", { ignoreBOM: true });
  private readonly source: string;

  /**
   * Loads a tokenizer folder: tokenizer.json when present, otherwise vocab.json + merges.txt (with
   * "<|endoftext|>" as the special end-of-text token, or the eos_token of tokenizer_config.json).
   */
  static fromPretrained(dir: string): GPT2Tokenizer {
    const config = tokenizerConfig(dir);
    const eosToken = configuredEos(config);
    const chatTemplate = readChatTemplate(dir, config);
    const tokenizerJson = join(dir, "tokenizer.json");
    if (existsSync(tokenizerJson)) return new GPT2Tokenizer({ ...specFromTokenizerJson(tokenizerJson), eosToken, chatTemplate });
    const vocabPath = join(dir, "vocab.json"), mergesPath = join(dir, "merges.txt");
    for (const path of [vocabPath, mergesPath]) {
      if (!existsSync(path)) throw new Error(`GPT2Tokenizer: "${path}" is missing; a tokenizer folder needs tokenizer.json, or vocab.json and merges.txt`);
    }
    const vocab = vocabFrom(readJson(vocabPath), `"${vocabPath}"`);
    const merges = mergesFromText(readText(mergesPath), `"${mergesPath}"`);
    const eos = eosToken ?? END_OF_TEXT;
    const id = vocab.get(eos);
    const specialTokens = new Map(id === undefined ? [] : [[eos, id]]);
    return new GPT2Tokenizer({ vocab, merges, specialTokens, eosToken, chatTemplate, source: `"${vocabPath}" + merges.txt` });
  }

  constructor(spec: TokenizerSpec) {
    this.source = spec.source;
    this.encoder = spec.vocab;
    this.decoder = new Map();
    for (const [token, id] of spec.vocab) {
      const other = this.decoder.get(id);
      if (other !== undefined) throw fail(spec.source, `tokens ${JSON.stringify(other)} and ${JSON.stringify(token)} share id ${id}`);
      this.decoder.set(id, token);
    }
    for (const b of BYTE_TO_SYMBOL) {
      if (!spec.vocab.has(b)) {
        throw fail(spec.source, `the vocabulary lacks the byte-level symbol ${JSON.stringify(b)} (byte 0x${SYMBOL_TO_BYTE.get(b)!.toString(16).padStart(2, "0")}); a byte-level BPE vocabulary needs all 256`);
      }
    }
    spec.merges.forEach(([left, right], rank) => {
      for (const token of [left, right, left + right]) {
        if (!spec.vocab.has(token)) throw fail(spec.source, `merge ${rank + 1} (${JSON.stringify(`${left} ${right}`)}) uses ${JSON.stringify(token)}, which is not in the vocabulary`);
      }
      const key = `${left} ${right}`;
      if (!this.mergeRanks.has(key)) this.mergeRanks.set(key, rank);
    });
    for (const [token, id] of spec.specialTokens) {
      const other = this.decoder.get(id);
      if (other !== undefined && other !== token) throw fail(spec.source, `special token ${JSON.stringify(token)} has id ${id}, which belongs to ${JSON.stringify(other)}`);
      this.decoder.set(id, token);
    }
    this.special = spec.specialTokens;
    this.specialIds = new Set(spec.specialTokens.values());
    this.ignoreMerges = spec.ignoreMerges ?? false;
    this.eosToken = spec.eosToken ?? END_OF_TEXT;
    const eosId = this.special.get(this.eosToken);
    if (eosId === undefined) {
      throw fail(spec.source, `the end-of-text token ${JSON.stringify(this.eosToken)} is not a special token of this tokenizer; add it to the vocabulary (or name another eos_token in tokenizer_config.json)`);
    }
    this.eosTokenId = eosId;
    this.chatTemplate = spec.chatTemplate;
  }

  /** GPT-2 begins texts with the token that ends them (transformers' GPT2Tokenizer has bos_token = eos_token). */
  get bosToken(): string {
    return this.eosToken;
  }

  get bosTokenId(): number {
    return this.eosTokenId;
  }

  /** The named special tokens chat templates see: transformers' GPT2Tokenizer has bos = eos = unk = the end-of-text token. */
  get specialTokensMap(): Readonly<Record<string, string>> {
    return { bos_token: this.eosToken, eos_token: this.eosToken, unk_token: this.eosToken };
  }

  /** The conversation rendered with the chat template, as PreTrainedTokenizer.applyChatTemplate (special tokens in it are matched). */
  applyChatTemplate(messages: readonly ChatMessage[], opts: ApplyChatTemplateOptions & { tokenize: true }): number[];
  applyChatTemplate(messages: readonly ChatMessage[], opts?: ApplyChatTemplateOptions): string;
  applyChatTemplate(messages: readonly ChatMessage[], opts: ApplyChatTemplateOptions = {}): string | number[] {
    const text = renderTokenizerChat(this.chatTemplate, this.source, this.specialTokensMap, messages, opts);
    return opts.tokenize ? this.encode(text, { allowedSpecial: "all" }) : text;
  }

  /** The ids that end generation: the end-of-text token. */
  get eosTokenIds(): readonly number[] {
    return [this.eosTokenId];
  }

  /** Number of ids (vocabulary plus special tokens): the size of the model's embedding table. */
  get vocabSize(): number {
    return this.decoder.size;
  }

  tokenToId(token: string): number | undefined {
    return this.special.get(token) ?? this.encoder.get(token);
  }

  idToToken(id: number): string | undefined {
    return this.decoder.get(id);
  }

  /** Token ids of `text`. */
  encode(text: string, opts: EncodeOptions = {}): number[] {
    const max = opts.maxTokens ?? Infinity;
    if (!(max === Infinity || (Number.isSafeInteger(max) && max >= 0))) throw new Error(`GPT2Tokenizer.encode: maxTokens must be a non-negative integer, got ${max}`);
    const ids: number[] = [];
    const specials = this.allowedSpecialPattern(opts.allowedSpecial);
    if (!specials) {
      this.encodeOrdinary(text, ids, max);
    } else {
      let start = 0;
      for (const m of text.matchAll(specials)) {
        this.encodeOrdinary(text.slice(start, m.index), ids, max);
        if (ids.length >= max) break;
        ids.push(this.special.get(m[0])!);
        start = m.index + m[0].length;
      }
      this.encodeOrdinary(text.slice(start), ids, max);
    }
    if (ids.length > max) ids.length = max; // the last word may have gone past the limit
    return ids;
  }

  /** The text of `ids`. Bytes that do not form valid UTF-8 (a cut character) become U+FFFD. */
  decode(ids: Iterable<number>, opts: DecodeOptions = {}): string {
    const bytes: number[] = [];
    for (const id of ids) {
      const token = this.decoder.get(id);
      if (token === undefined) throw new Error(`GPT2Tokenizer.decode: id ${id} is not in the vocabulary of ${this.source} (${this.vocabSize} ids)`);
      if (this.specialIds.has(id)) {
        if (!opts.skipSpecialTokens) bytes.push(...this.utf8.encode(token));
        continue;
      }
      for (const symbol of token) {
        const b = SYMBOL_TO_BYTE.get(symbol);
        // A vocabulary entry outside the byte alphabet cannot come out of encode(); keep its text.
        if (b === undefined) bytes.push(...this.utf8.encode(symbol));
        else bytes.push(b);
      }
    }
    return this.utf8Decoder.decode(Uint8Array.from(bytes));
  }

  private allowedSpecialPattern(allowed: EncodeOptions["allowedSpecial"]): RegExp | undefined {
    if (allowed === undefined) return undefined;
    const tokens = allowed === "all" ? [...this.special.keys()] : [...allowed];
    for (const t of tokens) {
      if (!this.special.has(t)) throw new Error(`GPT2Tokenizer.encode: allowedSpecial names ${JSON.stringify(t)}, which is not a special token of ${this.source} (it has ${[...this.special.keys()].map((k) => JSON.stringify(k)).join(", ")})`);
    }
    if (tokens.length === 0) return undefined;
    // Longest first, so a special token that contains another one wins, as in tokenizers.
    const alternatives = tokens.sort((a, b) => b.length - a.length).map((t) => t.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
    return new RegExp(alternatives.join("|"), "g");
  }

  /** Appends the ids of text that holds no special tokens, stopping at the first word that takes `out` to `max` ids. */
  private encodeOrdinary(text: string, out: number[], max: number): void {
    for (const [word] of text.matchAll(PRETOKENIZE)) {
      if (out.length >= max) return;
      // Lone UTF-16 surrogates are encoded as U+FFFD (TextEncoder's rule): they have no UTF-8 form.
      let symbols = "";
      for (const b of this.utf8.encode(word)) symbols += BYTE_TO_SYMBOL[b];
      for (const id of this.bpe(symbols)) out.push(id);
    }
  }

  /** BPE of one pre-tokenized word (in byte symbols), cached. */
  private bpe(word: string): readonly number[] {
    const cached = this.cache.get(word);
    if (cached) return cached;
    let ids: number[];
    const whole = this.ignoreMerges ? this.encoder.get(word) : undefined;
    if (whole !== undefined) {
      ids = [whole];
    } else {
      let parts = [...word];
      // Repeatedly merge every occurrence (left to right) of the adjacent pair ranked first.
      while (parts.length > 1) {
        let best = Infinity, left = "", right = "";
        for (let i = 0; i + 1 < parts.length; i++) {
          const rank = this.mergeRanks.get(`${parts[i]} ${parts[i + 1]}`);
          if (rank !== undefined && rank < best) [best, left, right] = [rank, parts[i]!, parts[i + 1]!];
        }
        if (best === Infinity) break;
        const merged: string[] = [];
        for (let i = 0; i < parts.length; i++) {
          if (parts[i] === left && parts[i + 1] === right) {
            merged.push(left + right);
            i++;
          } else {
            merged.push(parts[i]!);
          }
        }
        parts = merged;
      }
      // Every part is a byte symbol or a merge result, both checked to be in the vocabulary.
      ids = parts.map((p) => this.encoder.get(p)!);
    }
    if (this.cache.size >= CACHE_LIMIT) this.cache.delete(this.cache.keys().next().value!);
    this.cache.set(word, ids);
    return ids;
  }
}
