// Instruction data: JSONL files in Alpaca form ({"instruction", "input"?, "output"}), chat form
// ({"messages": [{"role", "content"}, ...]}), prompt/completion form ({"prompt", "completion"}) or
// plain form ({"text"}), read line by line, turned into token ids with the prompt masked out of
// the labels (for chat: everything but the assistant turns), and split into train and eval parts
// deterministically from a seed.
//
// Bad lines never stop a run: each is reported as file:line and skipped. Only a file that cannot
// give a single example (missing, empty, nothing valid) is an error.
import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import { formatPrompt, resolveTemplate, type TemplateSpec } from "./template.js";
import { chatTokens, parseMessages, prefixTokenCount, type ChatTokenizer } from "./chat-data.js";
import type { ChatMessage } from "../models/chat-template.js";

/** Label value that the loss ignores (PyTorch's and transformers' ignore_index). */
export const IGNORE_INDEX = -100;

/**
 * What the data pipeline needs from a tokenizer. GPT2Tokenizer and PreTrainedTokenizer satisfy it;
 * tests use tiny fakes. padTokenId defaults to eosTokenId (GPT-2 has no pad token).
 */
export interface TokenizerLike {
  /**
   * Token ids of `text`; with maxTokens, at least the first maxTokens of them (more are cut here).
   * addSpecialTokens (default true) adds what the tokenizer puts around a text, such as Llama's
   * BOS; GPT-2's adds nothing.
   */
  encode(text: string, opts?: { maxTokens?: number; addSpecialTokens?: boolean }): number[];
  eosTokenId: number;
  padTokenId?: number;
  /** The chat template, for chat records (PreTrainedTokenizer and GPT2Tokenizer have it). */
  applyChatTemplate?: ChatTokenizer["applyChatTemplate"];
}

export interface AlpacaRecord {
  kind: "alpaca";
  instruction: string;
  /** "" when the record has no input (absent, null or ""). */
  input: string;
  output: string;
  /** 1-based line in the source file. */
  line: number;
}

export interface TextRecord {
  kind: "text";
  text: string;
  line: number;
}

export interface ChatRecord {
  kind: "chat";
  /** At least one with role "assistant"; the first is not. */
  messages: ChatMessage[];
  line: number;
}

export interface PromptCompletionRecord {
  kind: "prompt-completion";
  prompt: string;
  completion: string;
  line: number;
}

export type DataRecord = AlpacaRecord | ChatRecord | PromptCompletionRecord | TextRecord;

/** A skipped line (or example) and why. */
export interface DataProblem {
  file: string;
  line: number;
  message: string;
}

/** "file:line: message", the one-line form used in logs and errors. */
export function formatProblem(p: DataProblem): string {
  return `${p.file}:${p.line}: ${p.message}`;
}

export interface ReadResult {
  file: string;
  /** The file's form, set by its first valid record. */
  format: DataRecord["kind"];
  examples: DataRecord[];
  problems: DataProblem[];
  /** What was read but may not be what the file meant (invalid UTF-8), one line each, with line numbers. */
  warnings: string[];
}

const FORM_NAME = {
  alpaca: 'an Alpaca ({"instruction", "output"})',
  chat: 'a chat ({"messages"})',
  "prompt-completion": 'a prompt/completion ({"prompt", "completion"})',
  text: 'a plain ({"text"})',
} as const;

function describeJson(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  return `a ${typeof value}`;
}

/** Why obj[name] is not a usable non-empty string, or null when it is. */
function stringFieldError(obj: Record<string, unknown>, name: string): string | null {
  const v = obj[name];
  if (v === undefined) return `"${name}" is missing`;
  if (typeof v !== "string") return `"${name}" must be a string, got ${describeJson(v)}`;
  return v.trim() === "" ? `"${name}" is empty` : null;
}

/** One parsed JSON value as a record, or the reason it is not one. */
function toRecord(value: unknown, line: number): DataRecord | string {
  if (value === null || typeof value !== "object" || Array.isArray(value)) return `expected a JSON object, got ${describeJson(value)}`;
  const obj = value as Record<string, unknown>;
  // Alpaca fields win over "text": published Alpaca sets (tatsu-lab/alpaca) carry a "text" copy of
  // the formatted prompt next to the fields, and the fields are what the template needs.
  if ("instruction" in obj || "output" in obj) {
    const error = stringFieldError(obj, "instruction") ?? stringFieldError(obj, "output");
    if (error) return error;
    const input = obj.input ?? "";
    if (typeof input !== "string") return `"input" must be a string, got ${describeJson(input)}`;
    return { kind: "alpaca", instruction: obj.instruction as string, input, output: obj.output as string, line };
  }
  // "messages" and "prompt"/"completion" win over "text" for the same reason (TRL's data sets keep
  // extra columns beside them).
  if ("messages" in obj) {
    const messages = parseMessages(obj.messages);
    return typeof messages === "string" ? messages : { kind: "chat", messages, line };
  }
  if ("prompt" in obj || "completion" in obj) {
    if (Array.isArray(obj.prompt) || Array.isArray(obj.completion)) return `"prompt" and "completion" must be strings; give a conversation as {"messages": [...]}`;
    const error = stringFieldError(obj, "prompt") ?? stringFieldError(obj, "completion");
    return error ?? { kind: "prompt-completion", prompt: obj.prompt as string, completion: obj.completion as string, line };
  }
  if ("text" in obj) return stringFieldError(obj, "text") ?? { kind: "text", text: obj.text as string, line };
  const keys = Object.keys(obj);
  return `expected "instruction" and "output" (Alpaca form), "messages" (chat), "prompt" and "completion", or "text", found ${keys.length ? `keys ${keys.join(", ")}` : "an empty object"}`;
}

/**
 * Reads a JSONL data file, streaming it line by line. Blank lines are skipped silently; a line
 * that is not valid JSON, not an object, or lacks or mistypes a field is reported in `problems`
 * (file, 1-based line, reason) and skipped.
 *
 * One file holds one form: the first valid record decides (Alpaca, chat, prompt/completion or
 * plain text), and records of another form are reported and skipped. Mixing is almost always a
 * mistake (two files concatenated), and a mixed file would train half its examples with and half
 * without prompt masking.
 *
 * Throws one line naming the file when it is missing, is not a file, holds no records, or holds
 * no valid example.
 */
export async function readJsonl(file: string): Promise<ReadResult> {
  let info;
  try {
    info = await stat(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new Error(code === "ENOENT" ? `${file}: data file not found` : `${file}: cannot read data file (${code ?? String(err)})`);
  }
  if (!info.isFile()) throw new Error(`${file}: not a file (expected a JSONL data file)`);

  const examples: DataRecord[] = [];
  const problems: DataProblem[] = [];
  let format: ReadResult["format"] | null = null;
  let formatLine = 0;
  let lineNo = 0;
  let records = 0;
  const invalidUtf8: number[] = [];
  for await (const raw of utf8Lines(file, invalidUtf8)) {
    lineNo++;
    const text = lineNo === 1 ? raw.replace(/^\uFEFF/, "") : raw;
    if (text.trim() === "") continue;
    records++;
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (err) {
      problems.push({ file, line: lineNo, message: `invalid JSON: ${(err as Error).message}` });
      continue;
    }
    const record = toRecord(value, lineNo);
    if (typeof record === "string") {
      problems.push({ file, line: lineNo, message: record });
    } else if (format !== null && record.kind !== format) {
      problems.push({
        file, line: lineNo,
        message: `${FORM_NAME[record.kind]} record in a file of ${FORM_NAME[format].replace(/^an? /, "")} records (set by line ${formatLine}); one file holds one form`,
      });
    } else {
      if (format === null) [format, formatLine] = [record.kind, lineNo];
      examples.push(record);
    }
  }
  if (records === 0) throw new Error(`${file}: empty data file (no JSONL records)`);
  if (format === null) {
    throw new Error(`${file}: no valid example in ${records} record${records === 1 ? "" : "s"} (first problem: line ${problems[0]!.line}: ${problems[0]!.message})`);
  }
  const warnings: string[] = [];
  if (invalidUtf8.length > 0) {
    const shown = invalidUtf8.slice(0, 10).join(", ") + (invalidUtf8.length > 10 ? ` and ${invalidUtf8.length - 10} more` : "");
    warnings.push(
      `${file}: invalid UTF-8 on ${invalidUtf8.length === 1 ? "line" : `${invalidUtf8.length} lines:`} ${shown}; ` +
        "the bad bytes were read as U+FFFD. Re-save the file as UTF-8 (iconv -f <its encoding> -t UTF-8)",
    );
  }
  return { file, format, examples, problems, warnings };
}

/**
 * The lines of a file (split at \n, a trailing \r dropped), each decoded as strict UTF-8: a line
 * that is not valid UTF-8 is decoded with U+FFFD for the bad bytes, as Node's "utf8" reading does,
 * and its 1-based number is added to `invalid`, so the replacement is never silent.
 */
async function* utf8Lines(file: string, invalid: number[]): AsyncGenerator<string> {
  // ignoreBOM keeps a U+FEFF where it is; readJsonl drops it at the start of the file only.
  const strict = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
  const lenient = new TextDecoder("utf-8", { ignoreBOM: true });
  let lineNo = 0;
  const decode = (bytes: Buffer): string => {
    lineNo++;
    const end = bytes.length > 0 && bytes[bytes.length - 1] === 0x0d ? bytes.length - 1 : bytes.length;
    const line = bytes.subarray(0, end);
    try {
      return strict.decode(line);
    } catch {
      invalid.push(lineNo);
      return lenient.decode(line);
    }
  };
  let pending: Buffer[] = [];
  for await (const chunk of createReadStream(file) as AsyncIterable<Buffer>) {
    let start = 0;
    for (let nl = chunk.indexOf(0x0a); nl !== -1; nl = chunk.indexOf(0x0a, start)) {
      pending.push(chunk.subarray(start, nl));
      yield decode(pending.length === 1 ? pending[0]! : Buffer.concat(pending));
      pending = [];
      start = nl + 1;
    }
    if (start < chunk.length) pending.push(chunk.subarray(start));
  }
  if (pending.length > 0) yield decode(Buffer.concat(pending));
}

// ---- tokenization ------------------------------------------------------------------------------

/** One training example as token ids; labels are unshifted (the model shifts them). */
export interface TokenizedExample {
  inputIds: Int32Array;
  /** IGNORE_INDEX where the loss must not look (the prompt, unless trainOnPrompt). */
  labels: Int32Array;
  /** Where it came from, for messages. */
  line: number;
}

export interface TokenizeOptions {
  /**
   * Longest example in tokens; omit for no truncation (packing can cut examples across blocks).
   * A longer Alpaca, prompt/completion or chat example keeps its prompt and loses the end of its
   * response (and the EOS, since the response no longer ends there); a longer text example keeps
   * its start.
   */
  maxLength?: number;
  /** Prompt template for Alpaca records (default: the Alpaca template). */
  template?: TemplateSpec;
  /** Chat template (its text) for chat records, instead of the tokenizer's own. */
  chatTemplate?: string;
  /** Also compute the loss on prompt tokens (default false: only the response and its EOS). */
  trainOnPrompt?: boolean;
  /**
   * An example is skipped when truncation would leave it fewer response tokens than this
   * (default 1, i.e. skipped when the prompt alone fills maxLength).
   */
  minResponseTokens?: number;
}

export interface TokenizeResult {
  examples: TokenizedExample[];
  /** Examples shortened to maxLength. */
  truncated: number;
  /** Examples skipped because their prompt leaves too little room for the response. */
  skipped: DataProblem[];
  /** Chat examples skipped because the chat template fails on them or cannot locate their assistant turns. */
  unusable: DataProblem[];
}

function checkTokenizer(tok: TokenizerLike): void {
  if (!Number.isInteger(tok.eosTokenId) || tok.eosTokenId < 0) throw new Error(`tokenizer: eosTokenId must be a non-negative integer, got ${tok.eosTokenId}`);
  if (tok.padTokenId !== undefined && (!Number.isInteger(tok.padTokenId) || tok.padTokenId < 0)) {
    throw new Error(`tokenizer: padTokenId must be a non-negative integer, got ${tok.padTokenId}`);
  }
}

/**
 * Token ids and labels for each record, labels IGNORE_INDEX where the loss must not look:
 * - Alpaca: input_ids = prompt + response + [eos], the prompt masked (unless trainOnPrompt). Prompt
 *   and response are encoded separately, so the mask boundary is exact and the ids are the ones
 *   generation sees (the encoded prompt, then the tokens the model emits); the response gets no
 *   BOS. With the Alpaca template, which ends in "\n" where GPT-2's pre-tokenizer splits, this
 *   equals encoding the joined text, unless the response itself starts with a newline.
 * - prompt/completion: as TRL, prompt + completion encoded as one text, then [eos] unless the
 *   tokenizer already ended it with one; the prompt's tokens (those that encoding the prompt
 *   alone shares with the whole) are masked.
 * - chat: the conversation rendered by the chat template (which holds the BOS and end-of-turn
 *   tokens, so nothing is added); only the assistant turns carry the loss (chat-data.ts says how
 *   they are found).
 * - text: text + [eos], every token labelled.
 */
export function tokenizeRecords(file: string, records: readonly DataRecord[], tokenizer: TokenizerLike, opts: TokenizeOptions = {}): TokenizeResult {
  checkTokenizer(tokenizer);
  const maxLength = opts.maxLength ?? Infinity;
  const minResponse = opts.minResponseTokens ?? 1;
  if (maxLength !== Infinity && !(Number.isInteger(maxLength) && maxLength >= 1)) throw new Error(`tokenize: maxLength must be a positive integer, got ${maxLength}`);
  if (!(Number.isInteger(minResponse) && minResponse >= 1)) throw new Error(`tokenize: minResponseTokens must be a positive integer, got ${minResponse}`);
  const template = resolveTemplate(opts.template);
  const eos = tokenizer.eosTokenId;
  const out: TokenizeResult = { examples: [], truncated: 0, skipped: [], unusable: [] };

  // Each text is tokenized only as far as the window reaches (one token past it, to tell a cut
  // from a fit): a 50 MB example costs what its first maxLength tokens cost.
  const upTo = (n: number) => (n === Infinity ? {} : { maxTokens: Math.max(n, 0) });
  /** Whether a prompt of `promptTokens` leaves room for the response; records the skip when not. */
  const fits = (rec: DataRecord, promptTokens: number, promptOver = false): boolean => {
    const room = maxLength - promptTokens;
    if (room >= minResponse) return true;
    const size = promptOver ? `over ${maxLength}` : String(promptTokens);
    out.skipped.push({
      file, line: rec.line,
      message: `prompt is ${size} tokens; maxLength ${maxLength} leaves room for ${Math.max(room, 0)} response tokens (need ${minResponse}); example skipped`,
    });
    return false;
  };
  /** Adds ids cut to maxLength, with labels masked where `trainable` is false. */
  const push = (rec: DataRecord, ids: number[], trainable: (i: number) => boolean) => {
    if (ids.length > maxLength) out.truncated++;
    const inputIds = Int32Array.from(ids.slice(0, maxLength));
    const labels = inputIds.map((id, i) => (opts.trainOnPrompt || trainable(i) ? id : IGNORE_INDEX));
    out.examples.push({ inputIds, labels, line: rec.line });
  };

  for (const rec of records) {
    if (rec.kind === "text") {
      push(rec, [...tokenizer.encode(rec.text, upTo(maxLength)), eos], () => true);
    } else if (rec.kind === "alpaca") {
      let prompt: string;
      try {
        prompt = formatPrompt(template, rec.instruction, rec.input);
      } catch (err) {
        // A template that cannot hold this record's input is a configuration error, not a bad line.
        throw new Error(`${file}:${rec.line}: ${(err as Error).message}`);
      }
      const promptIds = tokenizer.encode(prompt, upTo(maxLength + 1));
      if (!fits(rec, promptIds.length, promptIds.length > maxLength)) continue;
      const responseIds = tokenizer.encode(rec.output, { ...upTo(maxLength - promptIds.length), addSpecialTokens: false });
      push(rec, [...promptIds, ...responseIds, eos], (i) => i >= promptIds.length);
    } else if (rec.kind === "prompt-completion") {
      const whole = tokenizer.encode(rec.prompt + rec.completion, upTo(maxLength + 1));
      const promptTokens = prefixTokenCount(tokenizer.encode(rec.prompt, upTo(maxLength + 1)), whole);
      if (!fits(rec, promptTokens, promptTokens > maxLength)) continue;
      push(rec, whole.at(-1) === eos ? whole : [...whole, eos], (i) => i >= promptTokens);
    } else {
      if (!tokenizer.applyChatTemplate) {
        throw new Error(`${file}: chat records need a tokenizer with applyChatTemplate (AutoTokenizer.fromPretrained gives one); this tokenizer has none`);
      }
      let chat: ReturnType<typeof chatTokens>;
      try {
        chat = chatTokens(rec.messages, tokenizer as ChatTokenizer, opts.chatTemplate);
      } catch (err) {
        chat = (err as Error).message; // the template refused this conversation (raise_exception, ...)
      }
      if (typeof chat === "string") {
        out.unusable.push({ file, line: rec.line, message: chat });
        continue;
      }
      const { ids, assistant } = chat;
      if (!fits(rec, assistant[0]?.[0] ?? ids.length)) continue;
      push(rec, ids, (i) => assistant.some(([start, end]) => i >= start && i < end));
    }
  }
  return out;
}

// ---- seeded randomness -------------------------------------------------------------------------

/** splitmix32's finalizer: spreads the bits of a 32-bit word. */
function mix32(x: number): number {
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b);
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35);
  return (x ^ (x >>> 16)) >>> 0;
}

/**
 * A small seeded PRNG (xoshiro128**) in 32-bit integer arithmetic, so the same (seed, stream)
 * gives the same numbers on every machine and Node version. `stream` selects an independent
 * sequence for the same seed (one per epoch, one for the eval split).
 */
export class SeededRandom {
  private s = new Uint32Array(4);

  constructor(seed: number, stream = 0) {
    if (!Number.isSafeInteger(seed) || seed < 0) throw new Error(`SeededRandom: seed must be a non-negative safe integer, got ${seed}`);
    if (!Number.isSafeInteger(stream) || stream < 0) throw new Error(`SeededRandom: stream must be a non-negative safe integer, got ${stream}`);
    const words = [seed >>> 0, Math.floor(seed / 2 ** 32), stream >>> 0, Math.floor(stream / 2 ** 32)];
    let h = 0x9e3779b9;
    for (let i = 0; i < 4; i++) {
      h = mix32((h + 0x9e3779b9 + words[i]!) >>> 0);
      this.s[i] = h;
    }
    // xoshiro's all-zero state is a fixed point; the mixing makes it practically unreachable, but be exact.
    if (this.s.every((v) => v === 0)) this.s[0] = 1;
  }

  /** A uniform integer in [0, 2^32). */
  nextUint32(): number {
    const s = this.s;
    const r = Math.imul(rotl(Math.imul(s[1]!, 5), 7), 9) >>> 0;
    const t = s[1]! << 9;
    s[2] ^= s[0]!;
    s[3] ^= s[1]!;
    s[1] ^= s[2]!;
    s[0] ^= s[3]!;
    s[2] ^= t;
    s[3] = rotl(s[3]!, 11);
    return r;
  }

  /** A uniform integer in [0, n), without modulo bias (rejection sampling). */
  below(n: number): number {
    if (!(Number.isInteger(n) && n >= 1 && n <= 2 ** 32)) throw new Error(`SeededRandom.below: n must be an integer in [1, 2^32], got ${n}`);
    const limit = 2 ** 32 - (2 ** 32 % n);
    let u: number;
    do u = this.nextUint32();
    while (u >= limit);
    return u % n;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/** 0..n-1 in a Fisher-Yates order drawn from (seed, stream). */
export function shuffledIndices(n: number, seed: number, stream = 0): number[] {
  const rng = new SeededRandom(seed, stream);
  const order = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = rng.below(i + 1);
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  return order;
}

// ---- train / eval split ------------------------------------------------------------------------

export interface SplitOptions {
  /** Share of the examples held out for eval, in [0, 1). */
  evalFraction?: number;
  /** Number of examples held out for eval. */
  evalCount?: number;
  seed?: number;
}

/** The stream reserved for the split, apart from the per-epoch shuffles (streams 0, 1, ...). */
const SPLIT_STREAM = 2 ** 32 - 1;

/**
 * Holds out a seeded random subset for eval, before any training shuffle: the same seed and
 * item count always pick the same items, whatever the epoch or loader settings. Both parts keep
 * the file order. A fraction rounds to the nearest count, at least 1 when the fraction is > 0.
 */
export function splitTrainEval<T>(items: readonly T[], opts: SplitOptions = {}): { train: T[]; eval: T[] } {
  const n = items.length;
  if (opts.evalFraction !== undefined && opts.evalCount !== undefined) throw new Error("split: give evalFraction or evalCount, not both");
  let count = opts.evalCount ?? 0;
  if (opts.evalFraction !== undefined) {
    const f = opts.evalFraction;
    if (!(f >= 0 && f < 1)) throw new Error(`split: evalFraction must be in [0, 1), got ${f}`);
    count = f === 0 ? 0 : Math.max(1, Math.round(f * n));
  }
  if (!(Number.isInteger(count) && count >= 0 && count < n)) {
    throw new Error(`split: ${count} eval examples out of ${n} leaves no training example (evalCount must be an integer in [0, ${n - 1}])`);
  }
  const held = new Set(shuffledIndices(n, opts.seed ?? 0, SPLIT_STREAM).slice(0, count));
  const train: T[] = [];
  const evalPart: T[] = [];
  items.forEach((item, i) => (held.has(i) ? evalPart : train).push(item));
  return { train, eval: evalPart };
}

// ---- all together ------------------------------------------------------------------------------

export interface LoadDataOptions extends TokenizeOptions, SplitOptions {
  /** A separate eval file; when given, the train file is not split. */
  evalFile?: string;
  /** Called with the train file's form once it is read, before anything is tokenized (it may throw to refuse it). */
  onFormat?: (format: DataRecord["kind"]) => void;
}

export interface LoadedData {
  /** The training file's form (its first valid record's). */
  format: DataRecord["kind"];
  train: TokenizedExample[];
  eval: TokenizedExample[];
  /** Lines skipped while reading (both files). */
  problems: DataProblem[];
  /** One line per file with skipped or truncated examples, for the log. */
  warnings: string[];
}

function tokenizeWithWarnings(file: string, records: readonly DataRecord[], tok: TokenizerLike, opts: TokenizeOptions, warnings: string[]): TokenizedExample[] {
  const r = tokenizeRecords(file, records, tok, opts);
  if (r.unusable.length > 0) {
    warnings.push(`${file}: ${r.unusable.length} chat example${r.unusable.length === 1 ? "" : "s"} skipped (first: ${formatProblem(r.unusable[0]!)})`);
    if (r.examples.length === 0 && r.skipped.length === 0) throw new Error(`${file}: no usable example: every chat example was skipped (first: ${formatProblem(r.unusable[0]!)})`);
  }
  if (r.skipped.length > 0) {
    warnings.push(`${file}: ${r.skipped.length} example${r.skipped.length === 1 ? "" : "s"} skipped, prompt too long for maxLength ${opts.maxLength} (first: ${formatProblem(r.skipped[0]!)})`);
  }
  if (r.truncated > 0) warnings.push(`${file}: ${r.truncated} example${r.truncated === 1 ? "" : "s"} truncated to maxLength ${opts.maxLength}`);
  if (r.examples.length === 0) {
    throw new Error(
      `${file}: no example fits maxLength ${opts.maxLength} (${r.skipped.length} skipped, prompt too long${r.skipped[0] ? `; first: ${formatProblem(r.skipped[0])}` : ""}); ` +
        `use a shorter prompt template (e.g. the template.txt a model folder ships) or a larger maxLength`,
    );
  }
  return r.examples;
}

/**
 * Reads, splits and tokenizes instruction data: the train file (split by evalFraction/evalCount
 * unless evalFile is given) and the optional eval file.
 */
export async function loadInstructionData(file: string, tokenizer: TokenizerLike, opts: LoadDataOptions = {}): Promise<LoadedData> {
  const main = await readJsonl(file);
  opts.onFormat?.(main.format);
  const warnings: string[] = [...main.warnings];
  const problems = [...main.problems];
  let train: TokenizedExample[];
  let evalSet: TokenizedExample[] = [];
  if (opts.evalFile !== undefined) {
    if (opts.evalFraction !== undefined || opts.evalCount !== undefined) throw new Error("data: give evalFile or evalFraction/evalCount, not both");
    const ev = await readJsonl(opts.evalFile);
    problems.push(...ev.problems);
    warnings.push(...ev.warnings);
    train = tokenizeWithWarnings(file, main.examples, tokenizer, opts, warnings);
    evalSet = tokenizeWithWarnings(opts.evalFile, ev.examples, tokenizer, opts, warnings);
  } else {
    const split = splitTrainEval(main.examples, opts);
    train = tokenizeWithWarnings(file, split.train, tokenizer, opts, warnings);
    if (split.eval.length > 0) evalSet = tokenizeWithWarnings(file, split.eval, tokenizer, opts, warnings);
  }
  return { format: main.format, train, eval: evalSet, problems, warnings };
}
