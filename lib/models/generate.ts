// Autoregressive decoding: greedy, temperature, top-k and top-p sampling, stop at any EOS id.
// Model-independent: GPT-2 and the Llama family implement CausalDecoder (lib/models/kvcache.ts).
// With the KV cache each new token runs the model on one position; without it the whole prefix
// is recomputed every step (kept for checking the cache). On text: generateText and streamText
// encode the prompt, decode as they go (TextStreamer) and yield to the event loop between tokens.
import { setImmediate as yieldToEventLoop } from "node:timers/promises";
import { noGrad } from "../tensor/tensor.js";
import { rand, tensor } from "../tensor/creation.js";
import { defaultGenerator, type Generator as RandomGenerator } from "../tensor/random.js";
import { tidy } from "../tensor/scope.js";
import { KVCache, type CausalDecoder } from "./kvcache.js";
import { describeNonFiniteWeights } from "./gpt2/nonfinite.js";
import { TextStreamer, type TokenDecoder } from "./streamer.js";

export interface GenerateOptions {
  maxNewTokens?: number;
  /** 0 (default) decodes greedily; > 0 samples from softmax(logits / temperature). */
  temperature?: number;
  /** Sample only among the k most likely tokens (0 = no limit). */
  topK?: number;
  /** Sample only among the smallest set of tokens whose probability reaches p (1 = no limit). */
  topP?: number;
  /** Stop after this token or any of these (default: the config's eos_token_id). null never stops early. */
  eosTokenId?: number | readonly number[] | null;
  useCache?: boolean;
  /** Random stream for sampling. */
  generator?: RandomGenerator;
  /** Called with each new token as it is produced. */
  onToken?: (id: number) => void;
  /**
   * Aborting it ends the generation before the next token: generate returns the tokens so far,
   * streamText's iterator ends, generateText resolves with stopReason "aborted". The KV cache is
   * freed either way.
   */
  signal?: AbortSignal;
}

/** Why a generation ended. */
export type StopReason = "eos" | "max-new-tokens" | "context-full" | "aborted";

/** Picks the next token from one row of logits. */
export function sampleToken(logits: Float32Array, opts: GenerateOptions, uniform: () => number): number {
  const temperature = opts.temperature ?? 0;
  if (!(temperature > 0)) {
    let best = 0;
    for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[best]!) best = i;
    return best;
  }
  let order = Array.from(logits.keys()).sort((a, b) => logits[b]! - logits[a]!);
  if (opts.topK && opts.topK > 0) order = order.slice(0, opts.topK);
  const max = logits[order[0]!]!;
  let probs = order.map((i) => Math.exp((logits[i]! - max) / temperature));
  const total = probs.reduce((a, b) => a + b, 0);
  probs = probs.map((p) => p / total);
  const topP = opts.topP ?? 1;
  if (topP < 1) {
    let cum = 0, keep = 0;
    while (keep < probs.length && cum < topP) cum += probs[keep++]!;
    order = order.slice(0, keep);
    probs = probs.slice(0, keep).map((p) => p / cum);
  }
  let u = uniform();
  for (let i = 0; i < probs.length; i++) {
    u -= probs[i]!;
    if (u < 0) return order[i]!;
  }
  return order[order.length - 1]!;
}

/** Whether every value is finite: one pass, no callback per logit (50K of them a token for GPT-2). */
function allFinite(x: Float32Array): boolean {
  let acc = 0;
  for (let i = 0; i < x.length; i++) acc += x[i]! * 0; // NaN · 0 and ±Inf · 0 are NaN
  return acc === 0;
}

/**
 * What generate() decodes with: a causal decoder (GPT2LMHeadModel, LlamaForCausalLM), or a
 * wrapper that holds one as `.model` (a PeftModel, whose LoRA layers sit inside that model's
 * module tree).
 */
export type GenerationModel = CausalDecoder | { readonly model: CausalDecoder };

function isDecoder(m: unknown): m is CausalDecoder {
  return typeof (m as CausalDecoder | null)?.generationSpec === "function";
}

/**
 * The decoding loop, one new token per iteration; its return value says why it ended. Leaving it
 * early (return() on the generator, as a for...of break does) frees the cache and restores the
 * model's mode, as finishing does. Autograd is off per token, not across yields: other code runs
 * between tokens when streaming.
 */
function* decodeTokens(wrapped: GenerationModel, prompt: readonly number[], opts: GenerateOptions): Generator<number, StopReason> {
  // A decoder is checked first: LlamaForCausalLM has a `.model` too (its LlamaModel).
  const model = isDecoder(wrapped) ? wrapped : wrapped?.model;
  if (!isDecoder(model)) {
    throw new TypeError(`generate: expected a causal LM (GPT2LMHeadModel, LlamaForCausalLM) or a PeftModel wrapping one, got ${wrapped?.constructor?.name ?? String(wrapped)}`);
  }
  if (prompt.length === 0) throw new Error("generate: the prompt is empty; pass at least one token id");
  const spec = model.generationSpec();
  const maxNew = opts.maxNewTokens ?? 32;
  const eosOpt = opts.eosTokenId === undefined ? spec.eosTokenIds : opts.eosTokenId;
  const eos = new Set<number>(eosOpt === null ? [] : typeof eosOpt === "number" ? [eosOpt] : eosOpt);
  const generator = opts.generator ?? defaultGenerator;
  const uniform = () => tidy(() => rand([1], { generator }).item());
  const useCache = opts.useCache ?? true;
  const cache = useCache ? new KVCache(spec.numLayers) : null;
  const tokens = [...prompt];
  const wasTraining = model.training;
  model.eval();
  try {
    for (let step = 0; step < maxNew; step++) {
      if (opts.signal?.aborted) return "aborted";
      if (tokens.length >= spec.maxPositions) return "context-full";
      const feed = cache && cache.length > 0 ? tokens.slice(cache.length) : tokens;
      const last = noGrad(() => tidy(() => {
        const ids = tensor(Int32Array.from(feed), { shape: [1, feed.length], device: spec.device });
        // The last position's logits: a model that honours logitsToKeep computes only those.
        const { logits } = model.forward({ inputIds: ids, cache, logitsToKeep: 1 });
        return logits.slice(1, logits.shape[1]! - 1).reshape(-1).to("cpu").dataSync() as Float32Array;
      }));
      // A NaN logit would be sampled as if it were a number (argmax skips it): refuse, naming the broken weights.
      if (!allFinite(last)) {
        throw new Error(`generate: the logits for new token ${step + 1} hold NaN or Inf, so there is nothing to sample from: ${describeNonFiniteWeights(model)}`);
      }
      const next = sampleToken(last, opts, uniform);
      tokens.push(next);
      opts.onToken?.(next);
      yield next;
      if (eos.has(next)) return "eos";
    }
    return "max-new-tokens";
  } finally {
    cache?.dispose();
    model.train(wasTraining);
  }
}

/** Extends `prompt` (token ids) by up to maxNewTokens tokens; returns only the new ones. Blocks until done. */
export function generate(wrapped: GenerationModel, prompt: readonly number[], opts: GenerateOptions = {}): number[] {
  return [...decodeTokens(wrapped, prompt, opts)];
}

/** What generateText and streamText need from a tokenizer (GPT2Tokenizer has it). */
export interface TextTokenizer extends TokenDecoder {
  encode(text: string): number[];
}

/** generateText's result. */
export interface TextGenerationResult {
  /** The generated text (special tokens left out), without the prompt. */
  text: string;
  /** The new token ids. */
  tokenIds: number[];
  stopReason: StopReason;
}

/**
 * Continues `prompt` (text, encoded with `tokenizer`, or token ids) and yields the generated text in
 * chunks as the tokens come: a character split across tokens comes out whole, once its last byte
 * is there. Between tokens it yields to the event loop (a server stays responsive). The iterator
 * ends at an EOS id, after maxNewTokens, when the model's positions are used up, or when
 * opts.signal is aborted; its return value (for those who call next() themselves) is the whole
 * result. Breaking out of a for await loop frees the KV cache, as finishing does.
 */
export async function* streamText(
  model: GenerationModel, tokenizer: TextTokenizer, prompt: string | readonly number[], opts: GenerateOptions = {},
): AsyncGenerator<string, TextGenerationResult, undefined> {
  const ids = typeof prompt === "string" ? tokenizer.encode(prompt) : prompt;
  const chunks: string[] = [];
  const streamer = new TextStreamer(tokenizer, (text) => chunks.push(text));
  const tokenIds: number[] = [];
  const decoding = decodeTokens(model, ids, opts);
  try {
    let step = decoding.next();
    while (!step.done) {
      tokenIds.push(step.value);
      streamer.push(step.value);
      for (const chunk of chunks.splice(0)) yield chunk;
      // timers, I/O and an abort() get their turn before the next token
      await yieldToEventLoop();
      step = decoding.next();
    }
    streamer.end();
    for (const chunk of chunks.splice(0)) yield chunk;
    return { text: tokenizer.decode(tokenIds, { skipSpecialTokens: true }), tokenIds, stopReason: step.value };
  } finally {
    decoding.return("aborted"); // a consumer that stopped early: free the cache now
  }
}

/**
 * generateText: streamText collected. Resolves with the text, the new token ids and why it stopped
 * ("aborted" when opts.signal ended it: the text so far comes back, nothing is thrown).
 */
export async function generateText(
  model: GenerationModel, tokenizer: TextTokenizer, prompt: string | readonly number[], opts: GenerateOptions = {},
): Promise<TextGenerationResult> {
  const stream = streamText(model, tokenizer, prompt, opts);
  for (let step = await stream.next(); ; step = await stream.next()) {
    if (step.done) return step.value;
  }
}
