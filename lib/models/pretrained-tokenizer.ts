// Tokenizers saved as Hugging Face tokenizer.json (Llama 3, Qwen2.5/3, SmolLM2, Mistral, ...),
// run by @huggingface/tokenizers (a pure-JS implementation of the `tokenizers` pipeline:
// normalizer, pre-tokenizer, BPE/Unigram/WordPiece model, post-processor, decoder), with the
// special tokens, chat template and EOS ids that tokenizer_config.json, special_tokens_map.json and
// generation_config.json add, read as transformers reads them.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Tokenizer } from "@huggingface/tokenizers";
import { isJsonObject } from "../io/json-object.js";
import { readChatTemplate, renderTokenizerChat, type ApplyChatTemplateOptions, type ChatMessage, type ChatTemplateSpec } from "./chat-template.js";

export interface PretrainedEncodeOptions {
  /**
   * Add what the tokenizer's post-processor adds around a text (Llama 3's <|begin_of_text|>, for
   * one; Qwen adds nothing). Default true, as in transformers' tokenizer(text).
   */
  addSpecialTokens?: boolean;
  /** Keep only the first maxTokens ids. */
  maxTokens?: number;
}

export interface PretrainedDecodeOptions {
  /** Leave out the added tokens marked special (<|im_end|>, <|eot_id|>, ...). Default false. */
  skipSpecialTokens?: boolean;
}

/** The named special tokens transformers passes to chat templates and keeps in special_tokens_map. */
const SPECIAL_TOKEN_KEYS = ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"] as const;

/** The files a tokenizer folder may hold, already parsed (tokenizer.json is required). */
export interface PretrainedTokenizerFiles {
  tokenizerJson: unknown;
  tokenizerConfig?: Record<string, unknown>;
  specialTokensMap?: Record<string, unknown>;
  generationConfig?: Record<string, unknown>;
  chatTemplate?: ChatTemplateSpec;
  /** Where they came from (a folder), for error messages. */
  source: string;
}

function readJsonFile(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new Error(`cannot read ${path}: ${(err as Error).message}`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new Error(`${path} is not valid JSON: ${(err as Error).message}`);
  }
  if (!isJsonObject(value)) throw new Error(`${path} must hold a JSON object, got ${Array.isArray(value) ? "an array" : typeof value}`);
  return value;
}

/** A special token as configs write it: "<s>", or an AddedToken object {"content": "<s>", ...}. */
function tokenContent(value: unknown): string | undefined {
  if (typeof value === "string") return value;
  if (isJsonObject(value) && typeof value.content === "string") return value.content;
  return undefined;
}

/** generation_config.json's eos_token_id: one id or a list (Llama 3 Instruct stops on three). */
function idList(value: unknown, source: string): number[] | undefined {
  if (value === undefined || value === null) return undefined;
  const ids = Array.isArray(value) ? value : [value];
  if (!ids.every((id) => Number.isSafeInteger(id) && (id as number) >= 0)) throw new Error(`${source}: eos_token_id must be a token id or a list of them, got ${JSON.stringify(value)}`);
  return ids as number[];
}

export class PreTrainedTokenizer {
  readonly bosToken?: string;
  readonly bosTokenId?: number;
  readonly eosToken: string;
  readonly eosTokenId: number;
  /** Every id that ends generation: generation_config.json's eos_token_id when given, else [eosTokenId]. */
  readonly eosTokenIds: readonly number[];
  readonly padToken?: string;
  readonly padTokenId?: number;
  readonly unkToken?: string;
  readonly unkTokenId?: number;
  /** The named special tokens (bos_token, eos_token, ...) as chat templates see them. */
  readonly specialTokensMap: Readonly<Record<string, string>>;
  /** The chat template (tokenizer_config.json's, or chat_template.jinja's); settable, as in transformers. */
  chatTemplate: ChatTemplateSpec | undefined;
  readonly source: string;
  private readonly tokenizer: Tokenizer;
  private readonly vocab: ReadonlyMap<string, number>;
  private readonly cleanUpSpaces: boolean;
  private longestToken = 0;

  /**
   * Loads a folder holding tokenizer.json, with tokenizer_config.json, special_tokens_map.json,
   * generation_config.json and chat_template.jinja where present.
   */
  static fromPretrained(dir: string): PreTrainedTokenizer {
    const path = join(dir, "tokenizer.json");
    if (!existsSync(path)) throw new Error(`PreTrainedTokenizer: ${path} is missing; a tokenizer folder needs tokenizer.json (GPT-2 folders may have vocab.json + merges.txt instead)`);
    const optional = (name: string) => (existsSync(join(dir, name)) ? readJsonFile(join(dir, name)) : undefined);
    const tokenizerConfig = optional("tokenizer_config.json");
    return new PreTrainedTokenizer({
      tokenizerJson: readJsonFile(path),
      tokenizerConfig,
      specialTokensMap: optional("special_tokens_map.json"),
      generationConfig: optional("generation_config.json"),
      chatTemplate: readChatTemplate(dir, tokenizerConfig ?? {}),
      source: dir,
    });
  }

  constructor(files: PretrainedTokenizerFiles) {
    const config = files.tokenizerConfig ?? {};
    this.source = files.source;
    const jsonPath = join(files.source, "tokenizer.json");
    if (!isJsonObject(files.tokenizerJson) || !isJsonObject(files.tokenizerJson.model)) {
      throw new Error(`PreTrainedTokenizer: ${jsonPath} is not a Hugging Face tokenizer.json (no "model" object)`);
    }
    try {
      // tokenizers.js reads added-token flags and clean_up_tokenization_spaces from the config
      this.tokenizer = new Tokenizer(files.tokenizerJson, config);
    } catch (err) {
      throw new Error(`PreTrainedTokenizer: ${jsonPath} cannot be loaded: ${(err as Error).message}`);
    }
    this.vocab = this.tokenizer.get_vocab(true);
    // transformers 5 skips clean_up_tokenization_spaces for BPE tokenizers (it would strip the
    // space before punctuation that BPE keeps), and every causal LM lowrank loads is BPE.
    this.cleanUpSpaces = config.clean_up_tokenization_spaces === true && files.tokenizerJson.model.type === "WordPiece";

    // special_tokens_map.json wins over tokenizer_config.json, as in transformers' loading
    const named: Record<string, string> = {};
    for (const key of SPECIAL_TOKEN_KEYS) {
      const token = tokenContent(files.specialTokensMap?.[key]) ?? tokenContent(config[key]);
      if (token === undefined) continue;
      if (!this.vocab.has(token)) {
        throw new Error(`PreTrainedTokenizer: ${files.source}: ${key} ${JSON.stringify(token)} (tokenizer_config.json or special_tokens_map.json) is not in the vocabulary of tokenizer.json`);
      }
      named[key] = token;
    }
    this.specialTokensMap = named;
    const idOf = (key: string) => (named[key] === undefined ? undefined : this.vocab.get(named[key]!));
    [this.bosToken, this.bosTokenId] = [named.bos_token, idOf("bos_token")];
    [this.padToken, this.padTokenId] = [named.pad_token, idOf("pad_token")];
    [this.unkToken, this.unkTokenId] = [named.unk_token, idOf("unk_token")];

    const generationEos = idList(files.generationConfig?.eos_token_id, join(files.source, "generation_config.json"));
    const eosToken = named.eos_token ?? (generationEos?.length ? this.idToToken(generationEos[0]!) : undefined);
    if (eosToken === undefined) {
      throw new Error(
        `PreTrainedTokenizer: ${files.source} names no end-of-sequence token (no eos_token in tokenizer_config.json or special_tokens_map.json, ` +
          `no eos_token_id in generation_config.json); training appends it to every example, so add "eos_token" to tokenizer_config.json`,
      );
    }
    this.eosToken = eosToken;
    this.eosTokenId = this.vocab.get(eosToken)!;
    this.eosTokenIds = generationEos?.length ? generationEos : [this.eosTokenId];
    this.chatTemplate = files.chatTemplate;
  }

  /** Number of ids, added tokens included (transformers' len(tokenizer)): the embedding rows the model needs at least. */
  get vocabSize(): number {
    return this.vocab.size;
  }

  tokenToId(token: string): number | undefined {
    return this.vocab.get(token);
  }

  idToToken(id: number): string | undefined {
    return this.tokenizer.id_to_token(id);
  }

  /**
   * Token ids of `text`. Added tokens written in the text (<|im_start|>, <|eot_id|>, ...) are
   * matched as their ids, as transformers does: a chat template relies on it.
   */
  encode(text: string, opts: PretrainedEncodeOptions = {}): number[] {
    const max = opts.maxTokens ?? Infinity;
    if (!(max === Infinity || (Number.isSafeInteger(max) && max >= 0))) throw new Error(`PreTrainedTokenizer.encode: maxTokens must be a non-negative integer, got ${max}`);
    const encode = (t: string): number[] => this.tokenizer.encode(t, { add_special_tokens: opts.addSpecialTokens ?? true }).ids;
    if (max !== Infinity) {
      // A long text is encoded only up to a cut well past its first max tokens (no token spans
      // more characters than the longest vocabulary entry). The pipeline is local (normalizers,
      // pre-tokenizer splits, BPE within a word), so a cut changes only the ids near it; as a
      // check, a cut twice as far must give the same first max ids, else the whole text is encoded.
      const budget = (max + 64) * this.longestTokenChars();
      if (text.length > 4 * budget) {
        const near = encode(text.slice(0, budget)), far = encode(text.slice(0, 2 * budget));
        if (near.length > max && near.slice(0, max).every((id, i) => id === far[i])) return near.slice(0, max);
      }
    }
    const ids = encode(text);
    return ids.length > max ? ids.slice(0, max) : ids;
  }

  /** The text of `ids`, as transformers' decode gives it. */
  decode(ids: Iterable<number>, opts: PretrainedDecodeOptions = {}): string {
    const list = [...ids];
    for (const id of list) {
      if (!Number.isSafeInteger(id) || this.tokenizer.id_to_token(id) === undefined) {
        throw new Error(`PreTrainedTokenizer.decode: id ${id} is not in the vocabulary of ${this.source} (${this.vocabSize} ids)`);
      }
    }
    if (list.length === 0) return "";
    return this.tokenizer.decode(list, { skip_special_tokens: opts.skipSpecialTokens ?? false, clean_up_tokenization_spaces: this.cleanUpSpaces });
  }

  /**
   * The conversation rendered with the chat template, as transformers' apply_chat_template:
   * text by default, ids with tokenize (the rendered text encoded without adding special tokens).
   */
  applyChatTemplate(messages: readonly ChatMessage[], opts: ApplyChatTemplateOptions & { tokenize: true }): number[];
  applyChatTemplate(messages: readonly ChatMessage[], opts?: ApplyChatTemplateOptions): string;
  applyChatTemplate(messages: readonly ChatMessage[], opts: ApplyChatTemplateOptions = {}): string | number[] {
    const text = renderTokenizerChat(this.chatTemplate, this.source, this.specialTokensMap, messages, opts);
    return opts.tokenize ? this.encode(text, { addSpecialTokens: false }) : text;
  }

  private longestTokenChars(): number {
    if (this.longestToken === 0) for (const token of this.vocab.keys()) this.longestToken = Math.max(this.longestToken, token.length);
    return this.longestToken;
  }
}
