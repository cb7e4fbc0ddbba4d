// Chat and prompt/completion data with the real Qwen3 and Llama 3.1 tokenizers: the loss lies
// exactly on the assistant turns (labels equal to those test/fixtures/make_tokenizer_json_fixtures.py
// computes with transformers, and decoding to the answers plus their end-of-turn tokens), and bad
// records are reported with their line numbers.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import type { ChatMessage } from "../../lib/models/chat-template.js";
import { GPT2Tokenizer } from "../../lib/models/tokenizer.js";
import { IGNORE_INDEX, loadInstructionData, readJsonl, tokenizeRecords, type DataRecord, type TokenizedExample } from "../../lib/train/data.js";
import { expected, loadTokenizer } from "../models/tokenizer-fixtures.js";

const tmp = mkdtempSync(join(tmpdir(), "lowrank-chat-data-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const chat = (messages: ChatMessage[], line = 1): DataRecord => ({ kind: "chat", messages, line });
/** The labelled stretches of an example, each decoded. */
function labelledText(ex: TokenizedExample, decode: (ids: number[]) => string): string[] {
  const parts: string[] = [];
  let run: number[] = [];
  ex.labels.forEach((label, i) => {
    if (label !== IGNORE_INDEX) {
      expect(label).toBe(ex.inputIds[i]);
      run.push(label);
    } else if (run.length > 0) {
      parts.push(decode(run));
      run = [];
    }
  });
  if (run.length > 0) parts.push(decode(run));
  return parts;
}

interface LabelCase { messages: ChatMessage[]; ids?: number[]; labels?: number[]; error?: string }

describe.each(["qwen3", "llama3"] as const)("chat records with the %s chat template", (name) => {
  const cases = expected<{ chatLabels: LabelCase[] }>(name).chatLabels;

  it("labels the tokens transformers' rendering puts in each assistant turn, and no other", () => {
    const tok = loadTokenizer(name);
    const usable = cases.filter((c) => c.ids);
    expect(usable.length).toBeGreaterThanOrEqual(3);
    const r = tokenizeRecords("chat.jsonl", usable.map((c, i) => chat(c.messages, i + 1)), tok);
    expect(r.unusable).toEqual([]);
    r.examples.forEach((ex, i) => {
      expect(Array.from(ex.inputIds)).toEqual(usable[i]!.ids);
      expect(Array.from(ex.labels)).toEqual(usable[i]!.labels);
    });
  });

  it("the labelled tokens are the assistant answers and their end-of-turn tokens", () => {
    const tok = loadTokenizer(name);
    const conv: ChatMessage[] = [
      { role: "system", content: "You answer in French." },
      { role: "user", content: "Hello!" },
      { role: "assistant", content: "Bonjour !" },
      { role: "user", content: "How are you?" },
      { role: "assistant", content: "Très bien." },
    ];
    const decode = (ids: number[]) => tok.decode(ids);
    if (name === "llama3") {
      const [ex] = tokenizeRecords("f", [chat(conv)], tok).examples;
      expect(labelledText(ex!, decode)).toEqual(["Bonjour !<|eot_id|>", "Très bien.<|eot_id|>"]);
      expect(ex!.inputIds[0]).toBe(tok.bosTokenId); // the template's BOS, once
      expect(Array.from(ex!.inputIds).filter((id) => id === tok.bosTokenId)).toHaveLength(1);
    } else {
      // Qwen3 writes an empty reasoning block before the last answer; it belongs to what the model produces
      const [ex] = tokenizeRecords("f", [chat(conv.slice(0, 3))], tok).examples;
      expect(labelledText(ex!, decode)).toEqual(["<think>\n\n</think>\n\nBonjour !<|im_end|>\n"]);
    }
  });

  it("trains on every token with trainOnPrompt, and truncates or skips by maxLength", () => {
    const tok = loadTokenizer(name);
    const c = cases.find((x) => x.ids && x.messages.length === 3)!;
    const all = tokenizeRecords("f", [chat(c.messages)], tok, { trainOnPrompt: true }).examples[0]!;
    expect(Array.from(all.labels)).toEqual(c.ids);
    const firstLabel = c.labels!.findIndex((l) => l !== IGNORE_INDEX);
    const cut = tokenizeRecords("f", [chat(c.messages)], tok, { maxLength: firstLabel + 2 });
    expect(cut.truncated).toBe(1);
    expect(Array.from(cut.examples[0]!.labels)).toEqual(c.labels!.slice(0, firstLabel + 2));
    const skipped = tokenizeRecords("f", [chat(c.messages, 7)], tok, { maxLength: firstLabel });
    expect(skipped.examples).toEqual([]);
    expect(skipped.skipped).toEqual([{ file: "f", line: 7, message: `prompt is ${firstLabel} tokens; maxLength ${firstLabel} leaves room for 0 response tokens (need 1); example skipped` }]);
  });
});

describe("chat records that cannot be trained", () => {
  it("refuses a conversation whose earlier turns the template rewrites (Qwen3, multi-turn), naming the line", () => {
    const tok = loadTokenizer("qwen3");
    const c = expected<{ chatLabels: LabelCase[] }>("qwen3").chatLabels.find((x) => x.error)!;
    expect(c.error).toMatch(/not prefix-stable/); // transformers' rendering agrees: Python could not find the spans either
    const r = tokenizeRecords("chat.jsonl", [chat(c.messages, 4)], tok);
    expect(r.examples).toEqual([]);
    expect(r.unusable).toEqual([{ file: "chat.jsonl", line: 4, message: expect.stringMatching(/^the chat template renders messages 1-3 differently when later messages follow .*give each assistant turn as its own conversation/) }]);
  });

  it("reports a template error per line, and a tokenizer without a chat template", async () => {
    const tok = loadTokenizer("llama3");
    const strict = "{% for m in messages %}{% if m.content == 'bad' %}{{ raise_exception('no bad words') }}{% endif %}{{ m.role }}: {{ m.content }}\n{% endfor %}";
    const r = tokenizeRecords("f", [chat([{ role: "user", content: "bad" }, { role: "assistant", content: "x" }], 3)], tok, { chatTemplate: strict });
    expect(r.unusable).toEqual([{ file: "f", line: 3, message: expect.stringMatching(/failed on this conversation: .*no bad words/) }]);
    const file = join(tmp, "bad.jsonl");
    writeFileSync(file, `${JSON.stringify({ messages: [{ role: "user", content: "bad" }, { role: "assistant", content: "x" }] })}\n`);
    await expect(loadInstructionData(file, tok, { chatTemplate: strict })).rejects.toThrow(`${file}: no usable example: every chat example was skipped (first: ${file}:1: chat template`);
    const gpt2 = GPT2Tokenizer.fromPretrained("data/demo/model");
    await expect(loadInstructionData(file, gpt2)).rejects.toThrow(/no usable example: .*has no chat template .*pass one \(chatTemplate\)/);
  });
});

describe("chat records with GPT-2's tokenizer and a given template", () => {
  it("labels the answer and the template's end of turn; a token straddling the generation prompt counts as answer", () => {
    const gpt2 = GPT2Tokenizer.fromPretrained("test/fixtures/gpt2-tokenizer"); // GPT-2's own vocabulary
    const template = "{% for m in messages %}{{ m.role + ': ' + m.content }}{% if m.role == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}";
    const conv: ChatMessage[] = [{ role: "user", content: "Hi" }, { role: "assistant", content: "Hello" }, { role: "user", content: "Bye" }, { role: "assistant", content: "Ciao" }];
    const [ex] = tokenizeRecords("f", [chat(conv)], gpt2, { chatTemplate: template }).examples;
    // the special token in the rendered text is the end-of-text id, not its characters
    expect(Array.from(ex!.inputIds)).toEqual(gpt2.applyChatTemplate(conv, { chatTemplate: template, tokenize: true }));
    expect(Array.from(ex!.inputIds).filter((id) => id === gpt2.eosTokenId)).toHaveLength(2);
    // "assistant: " ends in a space that GPT-2 joins to the answer (" Hello"): that token is the answer's
    expect(labelledText(ex!, (ids) => gpt2.decode(ids))).toEqual([" Hello<|endoftext|>\n", " Ciao<|endoftext|>\n"]);
  });
});

describe("reading chat and prompt/completion JSONL", () => {
  it("reads chat records and reports every bad line with its number", async () => {
    const r = await readJsonl("test/fixtures/data/chat.jsonl");
    expect(r.format).toBe("chat");
    expect(r.examples.map((e) => e.line)).toEqual([1, 2, 12]);
    const message = (line: number) => r.problems.find((p) => p.line === line)?.message;
    expect(r.problems.map((p) => p.line)).toEqual([4, 5, 6, 7, 8, 9, 10, 11]);
    expect(message(4)).toBe('"messages" must be an array of {"role", "content"}, got a string');
    expect(message(5)).toBe('"messages" is empty');
    expect(message(6)).toBe('"messages"[1].role is missing');
    expect(message(7)).toBe('"messages"[0].content must be a string, got an array');
    expect(message(8)).toBe('"messages" has no "assistant" message, so nothing to train on');
    expect(message(9)).toMatch(/^"messages" starts with an assistant message/);
    expect(message(10)).toMatch(/^a plain \({"text"}\) record in a file of chat .* records \(set by line 1\)/);
    expect(message(11)).toBe('"prompt" and "completion" must be strings; give a conversation as {"messages": [...]}');
  });

  it("prompt/completion: BOS + prompt + completion + EOS with the loss on the completion and EOS (Llama 3.1)", async () => {
    const tok = loadTokenizer("llama3");
    const data = await loadInstructionData("test/fixtures/data/prompt-completion.jsonl", tok);
    expect(data.problems.map((p) => [p.line, p.message])).toEqual([
      [3, '"prompt" is empty'],
      [4, '"completion" is missing'],
      [5, '"completion" must be a string, got a number'],
    ]);
    const [paris, four] = data.train;
    expect(Array.from(paris!.inputIds)).toEqual([...tok.encode("The capital of France is Paris."), tok.eosTokenId]);
    expect(paris!.inputIds[0]).toBe(tok.bosTokenId);
    expect(labelledText(paris!, (ids) => tok.decode(ids))).toEqual([" Paris.<|eot_id|>"]);
    expect(labelledText(four!, (ids) => tok.decode(ids))).toEqual([" 4<|eot_id|>"]);
  });

  it("prompt/completion: a token that straddles prompt and completion counts as completion", () => {
    const tok = loadTokenizer("qwen3");
    const rec: DataRecord = { kind: "prompt-completion", prompt: "Hello wor", completion: "ld peace", line: 1 };
    const [ex] = tokenizeRecords("f", [rec], tok).examples;
    expect(Array.from(ex!.inputIds)).toEqual([...tok.encode("Hello world peace"), tok.eosTokenId]);
    expect(labelledText(ex!, (ids) => tok.decode(ids))).toEqual([" world peace<|im_end|>"]);
  });

  it("Alpaca and text records with a tokenizer that adds a BOS: one BOS, at the start", () => {
    const tok = loadTokenizer("llama3");
    const records: DataRecord[] = [
      { kind: "alpaca", instruction: "Say hi.", input: "", output: "hi", line: 1 },
      { kind: "text", text: "Hello world", line: 2 },
    ];
    const [alpaca, text] = tokenizeRecords("f", records, tok, { template: "Q: {instruction}\nA:" }).examples;
    const bos = tok.bosTokenId!;
    expect(Array.from(alpaca!.inputIds)).toEqual([...tok.encode("Q: Say hi.\nA:"), ...tok.encode("hi", { addSpecialTokens: false }), tok.eosTokenId]);
    expect(Array.from(alpaca!.inputIds).filter((id) => id === bos)).toEqual([bos]);
    expect(labelledText(alpaca!, (ids) => tok.decode(ids))).toEqual(["hi<|eot_id|>"]);
    expect(Array.from(text!.inputIds)).toEqual([bos, ...tok.encode("Hello world", { addSpecialTokens: false }), tok.eosTokenId]);
  });
});
