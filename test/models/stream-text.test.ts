// Generation on text: streamText's chunks and generateText's result against the token-level
// generate(), whole characters only in every chunk, the event loop served between tokens, and an
// AbortSignal (or a break) that ends the stream and frees the KV cache.
import { afterAll, describe, expect, it } from "vitest";
import {
  GPT2LMHeadModel, GPT2Tokenizer, Module, generate, generateText, memory, streamText, tensor, type GenerationSpec, type Tensor,
} from "../../lib/index.js";

const DEMO = "data/demo/model";
const model = GPT2LMHeadModel.fromPretrainedSync(DEMO);
const tokenizer = GPT2Tokenizer.fromPretrained(DEMO);
afterAll(() => model.dispose());
const PROMPT = "Give the first word.\nrocket,pan,head\n";
// eosTokenId null: every run produces exactly maxNewTokens tokens
const OPTS = { maxNewTokens: 12, eosTokenId: null };

async function collect(stream: AsyncIterable<string>): Promise<string[]> {
  const chunks: string[] = [];
  for await (const chunk of stream) chunks.push(chunk);
  return chunks;
}

/** A decoder that emits a fixed list of token ids (one-hot logits), to steer the text through multi-byte characters. */
class Scripted extends Module {
  calls = 0;
  constructor(private readonly script: number[], private readonly vocab: number) {
    super();
  }
  generationSpec(): GenerationSpec {
    return { numLayers: 1, maxPositions: Infinity, eosTokenIds: [], device: "cpu" };
  }
  forward({ inputIds }: { inputIds: Tensor }): { logits: Tensor } {
    const T = inputIds.shape[1]!;
    const logits = new Float32Array(T * this.vocab);
    logits[(T - 1) * this.vocab + this.script[this.calls++ % this.script.length]!] = 1;
    return { logits: tensor(logits, { shape: [1, T, this.vocab] }) };
  }
}

describe("generateText and streamText", () => {
  it("give the text of generate()'s tokens: the chunks join to it, and the prompt may be text or ids", async () => {
    const ids = tokenizer.encode(PROMPT);
    const want = generate(model, ids, OPTS);
    const result = await generateText(model, tokenizer, PROMPT, OPTS);
    expect(result.tokenIds).toEqual(want);
    expect(result.text).toBe(tokenizer.decode(want, { skipSpecialTokens: true }));
    expect(result.stopReason).toBe("max-new-tokens");
    const chunks = await collect(streamText(model, tokenizer, ids, OPTS));
    expect(chunks.join("")).toBe(result.text);
    expect(chunks.length).toBeGreaterThan(1);
    // the config's EOS by default, as generate()
    const eos = await generateText(model, tokenizer, PROMPT, { maxNewTokens: 64, eosTokenId: [want[0]!] });
    expect(eos).toMatchObject({ tokenIds: [want[0]], stopReason: "eos" });
  });

  it("never splits a multi-byte character: each chunk is whole text", async () => {
    const text = "aé€😀b";
    const script = tokenizer.encode(text);
    expect(script.length).toBeGreaterThan([...text].length); // é, € and 😀 span several byte tokens
    const chunks = await collect(streamText(new Scripted(script, tokenizer.vocabSize), tokenizer, [0], { maxNewTokens: script.length }));
    expect(chunks.join("")).toBe(text);
    for (const c of chunks) expect(c, JSON.stringify(chunks)).not.toContain("\uFFFD");
    expect(chunks.every((c) => c.length > 0)).toBe(true);
  });

  it("lets the event loop run between tokens", async () => {
    let turns = 0, running = true;
    const tick = () => {
      if (running) (turns++, setImmediate(tick));
    };
    setImmediate(tick);
    let tokensSeen = 0;
    for await (const _ of streamText(model, tokenizer, PROMPT, { ...OPTS, onToken: () => tokensSeen++ })) void _;
    running = false;
    expect(tokensSeen).toBe(OPTS.maxNewTokens);
    expect(turns).toBeGreaterThanOrEqual(OPTS.maxNewTokens - 1);
  });

  it("ends when the signal is aborted mid-stream, and frees everything it allocated", async () => {
    const before = memory().cpu;
    const controller = new AbortController();
    let tokens = 0;
    const chunks: string[] = [];
    for await (const chunk of streamText(model, tokenizer, PROMPT, { maxNewTokens: 200, eosTokenId: null, signal: controller.signal, onToken: () => ++tokens === 3 && setImmediate(() => controller.abort()) })) {
      chunks.push(chunk);
    }
    expect(tokens).toBe(3); // the abort came between tokens 3 and 4: no 4th
    expect(memory().cpu.tensors).toBe(before.tensors);
    expect(memory().cpu.bytes).toBe(before.bytes);

    const aborted = new AbortController();
    const late = generateText(model, tokenizer, PROMPT, { maxNewTokens: 200, eosTokenId: null, signal: aborted.signal });
    setTimeout(() => aborted.abort(), 50);
    const result = await late;
    expect(result.stopReason).toBe("aborted");
    expect(result.tokenIds.length).toBeGreaterThan(0);
    expect(result.tokenIds.length).toBeLessThan(200);
    expect(result.text).toBe(tokenizer.decode(result.tokenIds, { skipSpecialTokens: true }));
    expect(await generateText(model, tokenizer, PROMPT, { ...OPTS, signal: AbortSignal.abort() })).toEqual({ text: "", tokenIds: [], stopReason: "aborted" });
    expect(memory().cpu.tensors).toBe(before.tensors);
  });

  it("frees the KV cache when the consumer breaks out of the loop, and restores the model's mode", async () => {
    const before = memory().cpu.tensors;
    model.train(true);
    let mid = 0;
    for await (const _ of streamText(model, tokenizer, PROMPT, { maxNewTokens: 200, eosTokenId: null })) {
      void _;
      mid = memory().cpu.tensors;
      break;
    }
    expect(mid).toBeGreaterThan(before); // the cache was alive while streaming
    expect(memory().cpu.tensors).toBe(before);
    expect(model.training).toBe(true);
    model.eval();
  });

  it("generate() (blocking) stops when the signal is aborted from onToken", () => {
    const controller = new AbortController();
    const ids = generate(model, tokenizer.encode(PROMPT), { maxNewTokens: 50, eosTokenId: null, signal: controller.signal, onToken: () => controller.abort() });
    expect(ids).toHaveLength(1);
  });
});
