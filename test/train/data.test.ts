import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { memory } from "../../lib/tensor/index.js";
import { GPT2Tokenizer } from "../../lib/models/tokenizer.js";
import {
  IGNORE_INDEX, loadInstructionData, readJsonl, SeededRandom, shuffledIndices, splitTrainEval, tokenizeRecords,
  type AlpacaRecord, type DataRecord, type TokenizedExample, type TokenizerLike,
} from "../../lib/train/data.js";
import { ALPACA_TEMPLATE, formatPrompt, resolveTemplate } from "../../lib/train/template.js";
import { DataLoader, packExamples, padBatch, type HostBatch } from "../../lib/train/collate.js";

const FIXTURES = "test/fixtures/data";
const fixture = (name: string) => join(FIXTURES, name);

/** One id per UTF-16 code unit (its code), EOS = 0: lengths and ids are readable in assertions. */
const charTokenizer: TokenizerLike = {
  encode: (text) => Array.from(text, (c) => c.charCodeAt(0)),
  eosTokenId: 0,
};
const codes = (text: string) => Array.from(text, (c) => c.charCodeAt(0));

const tmp = mkdtempSync(join(tmpdir(), "lowrank-data-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
function tmpFile(name: string, content: string): string {
  const path = join(tmp, name);
  writeFileSync(path, content);
  return path;
}

const alpaca = (instruction: string, output: string, input = "", line = 1): DataRecord => ({ kind: "alpaca", instruction, input, output, line });
const text = (t: string, line = 1): DataRecord => ({ kind: "text", text: t, line });
/** An example whose ids are `ids` and whose labels hide the first `masked` of them. */
function example(ids: number[], masked = 0, line = 1): TokenizedExample {
  const labels = Int32Array.from(ids);
  labels.fill(IGNORE_INDEX, 0, masked);
  return { inputIds: Int32Array.from(ids), labels, line };
}
const rows = (flat: Int32Array, width: number) => Array.from({ length: flat.length / width }, (_, r) => Array.from(flat.subarray(r * width, (r + 1) * width)));

describe("readJsonl", () => {
  it("reads Alpaca records and reports every bad line with its number, skipping it", async () => {
    const r = await readJsonl(fixture("alpaca.jsonl"));
    expect(r.format).toBe("alpaca");
    expect(r.examples).toEqual([
      { kind: "alpaca", instruction: "Say hi.", input: "", output: "hi", line: 1 },
      { kind: "alpaca", instruction: "Add the numbers.", input: "2 3", output: "5", line: 2 },
      { kind: "alpaca", instruction: "Null input is no input.", input: "", output: "ok", line: 11 },
      { kind: "alpaca", instruction: "Echo {braces}.", input: "{input}", output: "{input}", line: 13 },
    ]);
    // Line 3 is blank: skipped without a problem.
    expect(r.problems.map((p) => [p.file, p.line])).toEqual([4, 5, 6, 7, 8, 9, 10, 12].map((l) => [fixture("alpaca.jsonl"), l]));
    const message = (line: number) => r.problems.find((p) => p.line === line)!.message;
    expect(message(4)).toMatch(/^invalid JSON: /);
    expect(message(5)).toBe('"output" is missing');
    expect(message(6)).toBe('"instruction" must be a string, got a number');
    expect(message(7)).toBe('"input" must be a string, got an array');
    expect(message(8)).toMatch(/^a plain \({"text"}\) record in a file of Alpaca .* records \(set by line 1\); one file holds one form$/);
    expect(message(9)).toBe("expected a JSON object, got an array");
    expect(message(10)).toBe('"output" is empty');
    expect(message(12)).toMatch(/^a prompt\/completion \({"prompt", "completion"}\) record in a file of Alpaca .* records \(set by line 1\); one file holds one form$/);
    for (const p of r.problems) expect(p.message).not.toContain("\n");
  });

  it("reads plain text records; the first valid record sets the form", async () => {
    const r = await readJsonl(fixture("text.jsonl"));
    expect(r.format).toBe("text");
    expect(r.examples).toEqual([
      { kind: "text", text: "hello world", line: 1 },
      { kind: "text", text: "second line", line: 3 },
    ]);
    expect(r.problems.map((p) => [p.line, p.message])).toEqual([
      [2, '"text" is empty'],
      [4, expect.stringMatching(/^an Alpaca .* record in a file of plain .* records \(set by line 1\)/)],
    ]);
  });

  it("takes the Alpaca fields when a record also carries a formatted 'text'", async () => {
    const path = tmpFile("both.jsonl", '{"instruction": "i", "output": "o", "text": "### Instruction: i"}\n');
    expect((await readJsonl(path)).examples).toEqual([alpaca("i", "o")]);
  });

  it("handles CRLF line ends, a byte-order mark and a last line without newline", async () => {
    const path = tmpFile("crlf.jsonl", '\uFEFF{"text": "a"}\r\n\r\n{"text": "b"}');
    const r = await readJsonl(path);
    expect(r.examples).toEqual([text("a", 1), text("b", 3)]);
    expect(r.problems).toEqual([]);
  });

  it("throws one line naming the file when it is empty, missing, a folder or has no valid example", async () => {
    await expect(readJsonl(fixture("empty.jsonl"))).rejects.toThrow(`${fixture("empty.jsonl")}: empty data file (no JSONL records)`);
    await expect(readJsonl(tmpFile("blank.jsonl", "\n  \n\n"))).rejects.toThrow(/blank\.jsonl: empty data file/);
    await expect(readJsonl(fixture("nope.jsonl"))).rejects.toThrow(`${fixture("nope.jsonl")}: data file not found`);
    await expect(readJsonl(FIXTURES)).rejects.toThrow(`${FIXTURES}: not a file (expected a JSONL data file)`);
    await expect(readJsonl(fixture("invalid.jsonl"))).rejects.toThrow(
      new RegExp(`^${fixture("invalid.jsonl")}: no valid example in 2 records \\(first problem: line 1: invalid JSON: [^\\n]*\\)$`),
    );
  });

  it("streams a large file", async () => {
    const n = 50_000;
    const lines = Array.from({ length: n }, (_, i) => JSON.stringify({ instruction: `Task ${i}`, output: `Answer ${i}` }));
    lines[31_337] = "{oops";
    const r = await readJsonl(tmpFile("large.jsonl", lines.join("\n") + "\n"));
    expect(r.examples.length).toBe(n - 1);
    expect(r.problems.map((p) => p.line)).toEqual([31_338]);
    expect(r.examples[n - 2]).toEqual(alpaca(`Task ${n - 1}`, `Answer ${n - 1}`, "", n));
  });
});

describe("prompt template", () => {
  it("formats the Alpaca texts exactly", () => {
    const t = resolveTemplate();
    expect(formatPrompt(t, "Name a color.")).toBe(
      "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n" +
        "### Instruction:\nName a color.\n\n### Response:\n",
    );
    expect(formatPrompt(t, "Add them.", "2 and 3")).toBe(
      "Below is an instruction that describes a task, paired with an input that provides further context. " +
        "Write a response that appropriately completes the request.\n\n" +
        "### Instruction:\nAdd them.\n\n### Input:\n2 and 3\n\n### Response:\n",
    );
  });

  it("takes a custom template string and never expands placeholders inside the data", () => {
    const t = resolveTemplate("Q: {instruction} {input}\nA:");
    expect(formatPrompt(t, "say {input}", "{instruction}")).toBe("Q: say {input} {instruction}\nA:");
    expect(formatPrompt(t, "plain")).toBe("Q: plain \nA:");
    expect(formatPrompt(resolveTemplate({ withInput: "[{instruction}|{input}]", withoutInput: "[{instruction}]" }), "x")).toBe("[x]");
  });

  it("rejects templates without placeholders", () => {
    expect(() => resolveTemplate("no placeholders")).toThrow('prompt template: withInput has no {instruction} placeholder: "no placeholders"');
    expect(() => resolveTemplate({ withInput: "{instruction}", withoutInput: "{instruction}" })).toThrow(/withInput has no \{input\} placeholder/);
    expect(() => formatPrompt(resolveTemplate("{instruction}"), "x", "an input")).toThrow(/has an input but the template has no \{input\}/);
  });
});

describe("tokenization and prompt masking", () => {
  const prompt = (instruction: string, input = "") => formatPrompt(resolveTemplate(), instruction, input);

  it("masks exactly the prompt tokens; response and EOS keep their labels", () => {
    const [a, b] = tokenizeRecords("f.jsonl", [alpaca("Say hi.", "hi", "", 1), alpaca("Add.", "5", "2 3", 2)], charTokenizer).examples;
    const p = codes(prompt("Say hi."));
    expect(Array.from(a!.inputIds)).toEqual([...p, ...codes("hi"), 0]);
    expect(Array.from(a!.labels)).toEqual([...p.map(() => IGNORE_INDEX), ...codes("hi"), 0]);
    const q = codes(prompt("Add.", "2 3"));
    expect(Array.from(b!.labels)).toEqual([...q.map(() => IGNORE_INDEX), ...codes("5"), 0]);
    expect(b!.line).toBe(2);
  });

  it("labels the prompt too with trainOnPrompt, and every token of a text record", () => {
    const [a] = tokenizeRecords("f", [alpaca("Say hi.", "hi")], charTokenizer, { trainOnPrompt: true }).examples;
    expect(Array.from(a!.labels)).toEqual(Array.from(a!.inputIds));
    const [t] = tokenizeRecords("f", [text("abc")], charTokenizer).examples;
    expect(Array.from(t!.inputIds)).toEqual([...codes("abc"), 0]);
    expect(Array.from(t!.labels)).toEqual([...codes("abc"), 0]);
  });

  it("uses a custom template", () => {
    const [a] = tokenizeRecords("f", [alpaca("up", "UP", "x")], charTokenizer, { template: "{instruction}:{input}=" }).examples;
    expect(Array.from(a!.inputIds)).toEqual([...codes("up:x="), ...codes("UP"), 0]);
    expect(Array.from(a!.labels.subarray(0, 5))).toEqual(Array(5).fill(IGNORE_INDEX));
    expect(() => tokenizeRecords("f.jsonl", [alpaca("up", "UP", "x", 7)], charTokenizer, { template: "{instruction}=" })).toThrow(
      /^f\.jsonl:7: prompt template: the example has an input but the template has no \{input\} placeholder$/,
    );
  });

  it("truncates the end of the response to maxLength, keeping the whole prompt", () => {
    const template = "{instruction}>";
    const r = tokenizeRecords("f", [alpaca("ab", "cdefg"), alpaca("xy", "z")], charTokenizer, { template, maxLength: 6 });
    expect(r.truncated).toBe(1);
    expect(Array.from(r.examples[0]!.inputIds)).toEqual(codes("ab>cde")); // response cut, EOS gone with it
    expect(Array.from(r.examples[0]!.labels)).toEqual([IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, ...codes("cde")]);
    expect(Array.from(r.examples[1]!.inputIds)).toEqual([...codes("xy>z"), 0]);
    const t = tokenizeRecords("f", [text("abcdefgh")], charTokenizer, { maxLength: 4 });
    expect([t.truncated, Array.from(t.examples[0]!.inputIds)]).toEqual([1, codes("abcd")]);
  });

  it("skips, and counts, examples whose prompt leaves too little room", () => {
    const template = "{instruction}>";
    const records = [alpaca("abcdef", "x", "", 1), alpaca("abcd", "xyz", "", 2), alpaca("ab", "xyz", "", 3)];
    const r = tokenizeRecords("f.jsonl", records, charTokenizer, { template, maxLength: 6 });
    expect(r.examples.map((e) => e.line)).toEqual([2, 3]);
    expect(r.skipped).toEqual([{ file: "f.jsonl", line: 1, message: "prompt is over 6 tokens; maxLength 6 leaves room for 0 response tokens (need 1); example skipped" }]);
    const strict = tokenizeRecords("f.jsonl", records, charTokenizer, { template, maxLength: 6, minResponseTokens: 2 });
    expect(strict.skipped.map((p) => p.line)).toEqual([1, 2]);
  });

  it("rejects bad options", () => {
    expect(() => tokenizeRecords("f", [], charTokenizer, { maxLength: 0 })).toThrow("tokenize: maxLength must be a positive integer, got 0");
    expect(() => tokenizeRecords("f", [], { ...charTokenizer, eosTokenId: -1 })).toThrow(/eosTokenId must be a non-negative integer/);
  });

  it("with the GPT-2 tokenizer, encodes prompt and response apart, as generation sees them", () => {
    const tok = GPT2Tokenizer.fromPretrained("test/fixtures/gpt2-tokenizer");
    const records = [
      alpaca("Name a color.", "Blue."),
      alpaca("Add them.", " 5, since 2 + 3 = 5", "2 and 3"),
      alpaca("Greet.", "héllo wörld 👋"),
      alpaca("Repeat.", "\n\nfirst line\nsecond", "x y"),
    ];
    const { examples } = tokenizeRecords("f", records, tok);
    examples.forEach((e, i) => {
      const rec = records[i] as AlpacaRecord;
      const p = prompt(rec.instruction, rec.input);
      expect(Array.from(e.inputIds)).toEqual([...tok.encode(p), ...tok.encode(rec.output), tok.eosTokenId]);
      const start = e.labels.findIndex((l) => l !== IGNORE_INDEX);
      expect(tok.decode(e.inputIds.subarray(0, start))).toBe(p);
      expect(tok.decode(e.labels.subarray(start))).toBe(rec.output + "<|endoftext|>");
      // The template ends in "\n", where GPT-2's pre-tokenizer splits unless the response itself
      // starts with a newline ("\n" + "\n\n" encodes as "\n\n" + "\n" when joined).
      const joined = [...tok.encode(p + rec.output), tok.eosTokenId];
      if (rec.output.startsWith("\n")) expect(Array.from(e.inputIds)).not.toEqual(joined);
      else expect(Array.from(e.inputIds)).toEqual(joined);
    });
  });
});

describe("padding batches", () => {
  it("right-pads to the longest example with the pad id, a 1/0 mask and IGNORE_INDEX labels", () => {
    const b = padBatch([example([5, 6, 7, 8], 2), example([9, 10]), example([11, 12, 13], 1)], 0);
    expect([b.batchSize, b.seqLen, b.tokens]).toEqual([3, 4, 9]);
    expect(rows(b.inputIds, 4)).toEqual([[5, 6, 7, 8], [9, 10, 0, 0], [11, 12, 13, 0]]);
    expect(rows(b.attentionMask!, 4)).toEqual([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]]);
    const I = IGNORE_INDEX;
    expect(rows(b.labels, 4)).toEqual([[I, I, 7, 8], [9, 10, I, I], [I, 12, 13, I]]);
    // Column 0 is never a target once the model shifts: 2 + 1 + 2.
    expect(b.lossTokens).toBe(5);
  });

  it("pads with the tokenizer's pad id when it has one, else EOS", () => {
    const ex = [example([1, 2, 3]), example([4])];
    const pad = (tok: { eosTokenId: number; padTokenId?: number }) => Array.from(new DataLoader(ex, { batchSize: 2, tokenizer: tok, shuffle: false }).nextHost().inputIds);
    expect(pad({ eosTokenId: 50 })).toEqual([1, 2, 3, 4, 50, 50]);
    expect(pad({ eosTokenId: 50, padTokenId: 7 })).toEqual([1, 2, 3, 4, 7, 7]);
  });
});

describe("packing", () => {
  const EOS = 99;

  it("concatenates examples, adding an unlabelled EOS after a truncated one", () => {
    const s = packExamples([example([1, 2, EOS], 1), example([3, 4], 1), example([5, EOS])], EOS);
    expect(Array.from(s.inputIds)).toEqual([1, 2, EOS, 3, 4, EOS, 5, EOS]);
    const I = IGNORE_INDEX;
    expect(Array.from(s.labels)).toEqual([I, 2, EOS, I, 4, I, 5, EOS]);
  });

  it("cuts fixed-length blocks without an attention mask, padding only the last one", () => {
    const ex = [example([1, 2, 3, EOS], 2), example([4, 5, EOS], 1), example([6, 7, 8, 9, EOS])];
    const loader = new DataLoader(ex, { batchSize: 2, packBlockLength: 5, tokenizer: { eosTokenId: EOS, padTokenId: 0 }, shuffle: false });
    expect(loader.batchesPerEpoch).toBe(2); // 12 tokens -> 3 blocks -> batches of 2 and 1
    const a = loader.nextHost(), b = loader.nextHost();
    const I = IGNORE_INDEX;
    expect([a.attentionMask, a.batchSize, a.seqLen, a.tokens]).toEqual([null, 2, 5, 10]);
    expect(rows(a.inputIds, 5)).toEqual([[1, 2, 3, EOS, 4], [5, EOS, 6, 7, 8]]);
    expect(rows(a.labels, 5)).toEqual([[I, I, 3, EOS, I], [5, EOS, 6, 7, 8]]);
    expect(a.lossTokens).toBe(2 + 4);
    expect([b.batchSize, b.tokens]).toEqual([1, 2]);
    expect(rows(b.inputIds, 5)).toEqual([[9, EOS, 0, 0, 0]]);
    expect(rows(b.labels, 5)).toEqual([[9, EOS, I, I, I]]);
  });

  it("drops the last partial batch with dropLast, and refuses when no full batch is left", () => {
    const ex = [example([1, 2, 3, EOS]), example([4, 5, EOS])];
    const tokenizer = { eosTokenId: EOS };
    expect(new DataLoader(ex, { batchSize: 2, packBlockLength: 3, tokenizer, dropLast: true }).batchesPerEpoch).toBe(1);
    expect(() => new DataLoader(ex, { batchSize: 3, tokenizer, dropLast: true })).toThrow("DataLoader: 2 examples make no full batch of 3 (dropLast is on)");
  });
});

describe("seeded shuffling and splits", () => {
  it("implements xoshiro128** exactly (reference outputs for state 1, 2, 3, 4)", () => {
    const rng = new SeededRandom(0);
    (rng as unknown as { s: Uint32Array }).s.set([1, 2, 3, 4]);
    expect([rng.nextUint32(), rng.nextUint32(), rng.nextUint32()]).toEqual([11520, 0, 5927040]);
  });

  it("gives the same permutation for the same seed and stream, another for another", () => {
    const a = shuffledIndices(1000, 7, 3);
    expect([...a].sort((x, y) => x - y)).toEqual(Array.from({ length: 1000 }, (_, i) => i));
    expect(shuffledIndices(1000, 7, 3)).toEqual(a);
    expect(shuffledIndices(1000, 8, 3)).not.toEqual(a);
    expect(shuffledIndices(1000, 7, 4)).not.toEqual(a);
    // Pinned so a change of algorithm (which would silently change every resumed run) is seen.
    expect(shuffledIndices(10, 42)).toEqual([9, 5, 0, 8, 4, 3, 1, 7, 6, 2]);
  });

  it("draws below(n) uniformly", () => {
    const rng = new SeededRandom(1);
    const counts = [0, 0, 0, 0, 0, 0];
    for (let i = 0; i < 60_000; i++) counts[rng.below(6)]!++;
    for (const c of counts) expect(Math.abs(c - 10_000)).toBeLessThan(400); // ~4.4 sigma
  });

  it("holds out a deterministic eval subset, keeping file order in both parts", () => {
    const items = Array.from({ length: 100 }, (_, i) => i);
    const s = splitTrainEval(items, { evalFraction: 0.1, seed: 3 });
    expect(s.eval.length).toBe(10);
    expect([...s.train, ...s.eval].sort((x, y) => x - y)).toEqual(items);
    expect(s.train).toEqual([...s.train].sort((x, y) => x - y));
    expect(splitTrainEval(items, { evalCount: 10, seed: 3 })).toEqual(s);
    expect(splitTrainEval(items, { evalCount: 10, seed: 4 }).eval).not.toEqual(s.eval);
    expect(splitTrainEval(items, { evalFraction: 0.001 }).eval.length).toBe(1);
    expect(splitTrainEval(items).eval).toEqual([]);
    expect(() => splitTrainEval(items, { evalCount: 100 })).toThrow(/100 eval examples out of 100 leaves no training example/);
    expect(() => splitTrainEval(items, { evalFraction: 1 })).toThrow("split: evalFraction must be in [0, 1), got 1");
  });
});

describe("DataLoader", () => {
  const examples = Array.from({ length: 10 }, (_, i) => example(Array.from({ length: 2 + (i % 4) }, (_, k) => 10 * i + k + 1), 1, i + 1));
  const firstIds = (b: HostBatch) => rows(b.inputIds, b.seqLen).map((r) => (r[0]! - 1) / 10);

  it("visits every example once per epoch, in a new seeded order each epoch", () => {
    const loader = new DataLoader(examples, { batchSize: 4, tokenizer: { eosTokenId: 0 }, seed: 5 });
    expect(loader.batchesPerEpoch).toBe(3);
    const epoch = () => Array.from({ length: 3 }, () => firstIds(loader.nextHost())).flat();
    const e0 = epoch(), e1 = epoch();
    expect(e0).toEqual(shuffledIndices(10, 5, 0));
    expect(e1).toEqual(shuffledIndices(10, 5, 1));
    expect(e1).not.toEqual(e0);
    expect(loader.state()).toMatchObject({ epoch: 2, index: 0 });
    const inOrder = new DataLoader(examples, { batchSize: 4, tokenizer: { eosTokenId: 0 }, shuffle: false });
    expect(firstIds(inOrder.nextHost())).toEqual([0, 1, 2, 3]);
  });

  for (const packBlockLength of [undefined, 6]) {
    it(`resumes from state() with exactly the same remaining batches (${packBlockLength ? "packing" : "padding"})`, () => {
      const opts = { batchSize: 3, tokenizer: { eosTokenId: 0 }, seed: 11, packBlockLength };
      const a = new DataLoader(examples, opts);
      for (let i = 0; i < 5; i++) a.nextHost();
      const saved = JSON.parse(JSON.stringify(a.state()));
      const rest = Array.from({ length: 9 }, () => a.nextHost()); // crosses epoch boundaries
      const b = new DataLoader(examples, opts);
      b.restore(saved);
      expect(Array.from({ length: 9 }, () => b.nextHost())).toEqual(rest);
      expect(b.state()).toEqual(a.state());
    });
  }

  it("refuses a state from other data or a position outside the epoch", () => {
    const a = new DataLoader(examples, { batchSize: 4, tokenizer: { eosTokenId: 0 } });
    const other = new DataLoader(examples.slice(1), { batchSize: 4, tokenizer: { eosTokenId: 0 } });
    expect(() => other.restore(a.state())).toThrow(/^DataLoader\.restore: the state was saved for other data or loader options/);
    expect(() => a.restore({ ...a.state(), index: 3 })).toThrow("DataLoader.restore: bad position epoch 0, index 3 (index must be in [0, 3))");
  });

  it("makes int32 tensors [B, T] only on request, and the caller's dispose returns memory to baseline", () => {
    const loader = new DataLoader(examples, { batchSize: 4, tokenizer: { eosTokenId: 0 }, seed: 2 });
    const before = memory().cpu ?? { bytes: 0, tensors: 0 };
    const host = new DataLoader(examples, { batchSize: 4, tokenizer: { eosTokenId: 0 }, seed: 2 }).nextHost();
    const batch = loader.next();
    expect(batch.inputIds.shape).toEqual([4, host.seqLen]);
    expect([batch.inputIds.dtype, batch.attentionMask!.dtype, batch.labels.dtype]).toEqual(["int32", "int32", "int32"]);
    expect(Array.from(batch.inputIds.dataSync())).toEqual(Array.from(host.inputIds));
    expect(Array.from(batch.attentionMask!.dataSync())).toEqual(Array.from(host.attentionMask!));
    expect(Array.from(batch.labels.dataSync())).toEqual(Array.from(host.labels));
    expect([batch.tokens, batch.lossTokens]).toEqual([host.tokens, host.lossTokens]);
    expect(memory().cpu!.tensors).toBe(before.tensors + 3);
    batch.dispose();
    for (let step = 0; step < 5; step++) {
      using b = loader.next();
      expect(b.labels.shape[0]).toBeGreaterThan(0);
    }
    const packed = new DataLoader(examples, { batchSize: 2, tokenizer: { eosTokenId: 0 }, packBlockLength: 8 }).next();
    expect(packed.attentionMask).toBeNull();
    expect(packed.inputIds.shape).toEqual([2, 8]);
    packed.dispose();
    expect(memory().cpu).toMatchObject({ bytes: before.bytes, tensors: before.tensors });
  });
});

describe("loadInstructionData", () => {
  it("splits one file, or reads a separate eval file, and collects problems and warnings", async () => {
    const lines = Array.from({ length: 20 }, (_, i) => JSON.stringify({ instruction: "x".repeat(i), output: "ok" }));
    const file = tmpFile("twenty.jsonl", ["{bad", ...lines].join("\n"));
    const template = "{instruction}>";
    const split = await loadInstructionData(file, charTokenizer, { template, maxLength: 20, evalCount: 4, seed: 1 });
    // instruction lengths 0 ("" is invalid), 1..19; prompt = length + 1, room for the response when <= 19 tokens.
    expect(split.problems.map((p) => [p.line, p.message])).toEqual([[1, expect.stringMatching(/^invalid JSON: /)], [2, '"instruction" is empty']]);
    expect(split.train.length + split.eval.length).toBe(18);
    expect(split.eval.length).toBeLessThanOrEqual(4);
    expect(split.warnings.join("\n")).toMatch(/example.? skipped, prompt too long for maxLength 20 \(first: .*twenty\.jsonl:21: prompt is 20 tokens/);
    const again = await loadInstructionData(file, charTokenizer, { template, maxLength: 20, evalCount: 4, seed: 1 });
    expect(again.eval.map((e) => e.line)).toEqual(split.eval.map((e) => e.line));

    const separate = await loadInstructionData(fixture("alpaca.jsonl"), charTokenizer, { evalFile: fixture("text.jsonl") });
    expect(separate.train.map((e) => e.line)).toEqual([1, 2, 11, 13]);
    expect(separate.eval.map((e) => e.line)).toEqual([1, 3]);
    expect(separate.problems.length).toBe(8 + 2);
    await expect(loadInstructionData(file, charTokenizer, { evalFile: file, evalCount: 1 })).rejects.toThrow("data: give evalFile or evalFraction/evalCount, not both");
  });
});

describe("demo data (data/demo)", () => {
  const SHORT_TEMPLATE = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n";

  it("is what scripts/make-demo-data.mjs writes for its default seed", () => {
    const out = join(tmp, "demo");
    execFileSync(process.execPath, ["scripts/make-demo-data.mjs", "--out", out]);
    for (const name of ["train.jsonl", "eval.jsonl", "base.jsonl", "chat.jsonl"]) {
      expect(readFileSync(join(out, name)).equals(readFileSync(join("data/demo", name))), name).toBe(true);
    }
  });

  it("holds the task in train and eval (disjoint word lists) and other tasks in base", async () => {
    const [train, evalSet, base] = await Promise.all(["train", "eval", "base"].map((n) => readJsonl(`data/demo/${n}.jsonl`)));
    expect([train!.examples.length, evalSet!.examples.length, base!.examples.length]).toEqual([1000, 100, 10000]);
    expect([...train!.problems, ...evalSet!.problems, ...base!.problems]).toEqual([]);
    const rotated = (input: string) => {
      const [first, ...rest] = input.split(",");
      return [...rest, first].join(",");
    };
    for (const r of [...train!.examples, ...evalSet!.examples] as AlpacaRecord[]) {
      expect([r.instruction, r.output]).toEqual(["Move the first word to the end.", rotated(r.input)]);
    }
    const trainInputs = new Set((train!.examples as AlpacaRecord[]).map((r) => r.input));
    expect((evalSet!.examples as AlpacaRecord[]).filter((r) => trainInputs.has(r.input))).toEqual([]);
    expect(new Set((base!.examples as AlpacaRecord[]).map((r) => r.instruction))).toEqual(
      new Set(["Copy the words.", "Give the first word.", "Give the last word.", "Repeat the list twice."]),
    );
  });

  it("keeps every word one GPT-2 token, and examples short with the short template", async () => {
    const tok = GPT2Tokenizer.fromPretrained("test/fixtures/gpt2-tokenizer");
    const base = await readJsonl("data/demo/base.jsonl");
    const words = new Set((base.examples as AlpacaRecord[]).flatMap((r) => r.input.split(",")));
    expect(words.size).toBe(127);
    for (const w of words) expect([tok.encode(w).length, tok.encode(` ${w}`).length], w).toEqual([1, 1]);
    const data = await loadInstructionData("data/demo/train.jsonl", tok, { evalFile: "data/demo/eval.jsonl", template: SHORT_TEMPLATE, maxLength: 64 });
    expect(data.warnings).toEqual([]);
    expect(new Set([...data.train, ...data.eval].map((e) => e.inputIds.length))).toEqual(new Set([35]));
    // The loss covers the answer: 3 words, 2 commas and EOS.
    expect(data.train[0]!.labels.filter((l) => l !== IGNORE_INDEX).length).toBe(6);
  });
});

describe("data read as it is, and only as far as needed", () => {
  it("warns, with line numbers, about lines that are not valid UTF-8 (still read, with U+FFFD)", async () => {
    const ok = (i: string) => Buffer.from(JSON.stringify({ instruction: i, output: "o" }) + "\n");
    // line 2: "café" in Latin-1 (0xE9 alone); line 4: a cut 3-byte sequence; line 5 holds a real U+FFFD, which is valid UTF-8
    const latin1 = Buffer.concat([Buffer.from('{"instruction": "caf'), Buffer.from([0xe9]), Buffer.from('", "output": "o"}\r\n')]);
    const cut = Buffer.concat([Buffer.from('{"instruction": "x'), Buffer.from([0xe4, 0xb8]), Buffer.from('", "output": "o"}\n')]);
    const file = join(tmp, "latin1.jsonl");
    writeFileSync(file, Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), ok("a"), latin1, ok("b"), cut, ok("\ufffd")]));
    const r = await readJsonl(file);
    expect(r.problems).toEqual([]);
    expect(r.examples.map((e) => (e as AlpacaRecord).instruction)).toEqual(["a", "caf\ufffd", "b", "x\ufffd", "\ufffd"]);
    const warning = `${file}: invalid UTF-8 on 2 lines: 2, 4; the bad bytes were read as U+FFFD. Re-save the file as UTF-8 (iconv -f <its encoding> -t UTF-8)`;
    expect(r.warnings).toEqual([warning]);
    expect((await loadInstructionData(file, charTokenizer, { evalCount: 0 })).warnings).toEqual([warning]);
    expect((await readJsonl(fixture("alpaca.jsonl"))).warnings).toEqual([]);
  });

  it("a huge example is tokenized only up to the window: fast, and the same ids as tokenizing it whole and cutting", async () => {
    const tok = GPT2Tokenizer.fromPretrained("test/fixtures/gpt2-tokenizer");
    const sentence = "The quick brown fox, 42 times, jumps over the lazy dog's 7 kennels; naïve café owners shrug. ";
    const words = (n: number) => Array.from({ length: n }, (_, i) => `${sentence.slice(i % 17)}w${i} `).join("");
    const moderate = words(2_000); // ~200 KB: small enough to tokenize whole for the comparison
    const template = "{instruction}\n";
    const records = [text(moderate, 1), alpaca("Summarize.", moderate, "", 2), alpaca(moderate, "short", "", 3)];
    const cut = tokenizeRecords("f", records, tok, { maxLength: 128, template });
    const whole = tok.encode(moderate);
    expect(Array.from(cut.examples[0]!.inputIds)).toEqual(whole.slice(0, 128));
    const prompt = tok.encode("Summarize.\n");
    expect(Array.from(cut.examples[1]!.inputIds)).toEqual([...prompt, ...whole.slice(0, 128 - prompt.length)]);
    expect(cut.truncated).toBe(2);
    expect(cut.skipped).toEqual([{ file: "f", line: 3, message: "prompt is over 128 tokens; maxLength 128 leaves room for 0 response tokens (need 1); example skipped" }]);

    // 50 MB in one line: read and tokenized in seconds (tokenizing it whole took about a minute and 1.5 GB)
    const huge = words(550_000);
    expect(huge.length).toBeGreaterThan(50e6);
    const file = join(tmp, "huge.jsonl");
    writeFileSync(file, JSON.stringify({ text: huge }) + "\n" + JSON.stringify({ text: "tiny" }) + "\n");
    const started = performance.now();
    const data = await loadInstructionData(file, tok, { maxLength: 128, evalCount: 0 });
    const seconds = (performance.now() - started) / 1000;
    expect(data.train.map((e) => e.inputIds.length)).toEqual([128, 2]);
    expect(Array.from(data.train[0]!.inputIds)).toEqual(tok.encode(huge.slice(0, 20_000)).slice(0, 128));
    expect(seconds).toBeLessThan(10);
  });
});
