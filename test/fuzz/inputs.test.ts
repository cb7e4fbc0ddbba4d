// Corrupted inputs, made deterministically from the committed fixtures (mutate.ts): model folders
// (config.json, model.safetensors, a sharded index), tokenizer files, adapter folders, trainer checkpoint folders and
// JSONL data. Each must load, or fail with an Error that names the file or its folder and says what
// is wrong (no TypeError from deep inside, no std::bad_alloc), or, for JSONL, report every bad line
// with its line number. Nothing may be written next to the inputs (no partial output). A native
// crash (abort, segfault) kills vitest's worker process and fails this file.
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Generator, GPT2LMHeadModel, GPT2Tokenizer, getPeftModel, LoraConfig, PeftModel } from "../../lib/index.js";
import { DataLoader } from "../../lib/train/collate.js";
import { IGNORE_INDEX, readJsonl, type TokenizedExample } from "../../lib/train/data.js";
import { Trainer } from "../../lib/train/trainer.js";
import { buildCli, makeTinyModel, runCli } from "../cli/helpers.js";
import { mutateBytes, mutateJsonFile, mutateLines, mutateSafetensors, Rng } from "./mutate.js";

const FIXTURES = join(import.meta.dirname, "..", "fixtures");
const tmp = mkdtempSync(join(tmpdir(), "lowrank-fuzz-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
const quiet = { onWarning: () => {} };

/** Messages that come from a missing check rather than from one that explains the problem. */
const UNCLEAR = /Cannot read propert|Cannot convert|is not a function|is not iterable|undefined is not|Invalid array length|Maximum call stack|Array buffer allocation failed|std::|bad_alloc|Invalid typed array length|out of memory/i;

/** A folder holding the given files; returns a function that writes one file corrupted, the rest intact. */
function caseFolder(name: string, files: Record<string, string>): { dir: string; write: (file: string, bytes: Uint8Array) => void; originals: Record<string, Buffer> } {
  const dir = join(tmp, name);
  mkdirSync(dir);
  const originals = Object.fromEntries(Object.entries(files).map(([f, src]) => [f, readFileSync(src)]));
  return {
    dir, originals,
    write: (file, bytes) => {
      for (const [f, b] of Object.entries(originals)) writeFileSync(join(dir, f), f === file ? bytes : b);
    },
  };
}

interface Outcome { loaded: number; rejected: number }

/** Why an error is not a clear one (null when it is): not an Error, does not name `where`, or reads like a missing check. */
function unclear(err: unknown, where: string): string | null {
  if (!(err instanceof Error)) return `threw a non-Error: ${String(err)}`;
  const msg = err.message;
  if (!msg.includes(where)) return `the message does not name ${where}: ${msg.slice(0, 300)}`;
  if (UNCLEAR.test(msg)) return `the message reads like a missing check: ${msg.slice(0, 300)}`;
  if (msg.length > 2000) return `the message is ${msg.length} characters long: ${msg.slice(0, 300)}...`;
  return null;
}

/**
 * Runs `load` on `n` corrupted variants. An Error must name `dir` (the path of the file, or of
 * the folder when the files disagree with each other) and read as an explanation; the folder must
 * hold exactly its input files afterwards. Every failing case is listed, each with its seed.
 */
function fuzz(n: number, seed: number, dir: string, mutate: (rng: Rng, i: number) => string, load: () => void): Outcome {
  const rng = new Rng(seed);
  const out: Outcome = { loaded: 0, rejected: 0 };
  const failures: string[] = [];
  const files = () => readdirSync(dir).sort();
  for (let i = 0; i < n; i++) {
    const what = mutate(rng, i);
    const label = `case ${i} (seed ${seed}, ${what})`;
    const inputs = files();
    try {
      load();
      out.loaded++;
    } catch (err) {
      out.rejected++;
      const why = unclear(err, dir);
      if (why) failures.push(`${label}: ${why}`);
    }
    const after = files();
    if (after.join() !== inputs.join()) failures.push(`${label}: left ${after.filter((f) => !inputs.includes(f)).join(", ")} next to the inputs`);
  }
  expect(failures).toEqual([]);
  return out;
}

/** A file's lines as bytes, split as readJsonl splits them ("\n", a "\r" before it dropped). */
function splitLines(bytes: Buffer): Buffer[] {
  const lines: Buffer[] = [];
  let start = 0;
  for (let nl = bytes.indexOf(0x0a); nl !== -1; nl = bytes.indexOf(0x0a, start)) {
    lines.push(bytes.subarray(start, nl));
    start = nl + 1;
  }
  if (start < bytes.length) lines.push(bytes.subarray(start));
  return lines.map((l) => (l.at(-1) === 0x0d ? l.subarray(0, -1) : l));
}

function isUtf8(bytes: Uint8Array): boolean {
  try {
    new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    return true;
  } catch {
    return false;
  }
}

describe("fuzzed inputs", () => {
  let total = 0;
  afterAll(() => {
    // the corpus: at least 1,000 corrupted inputs across the six kinds
    expect(total).toBeGreaterThanOrEqual(1000);
  });

  const modelFiles = { "config.json": join(FIXTURES, "gpt2-tiny/config.json"), "model.safetensors": join(FIXTURES, "gpt2-tiny/model.safetensors") };

  it("model.safetensors: header lengths, dtypes, shapes, offsets, names, truncation, bit flips", () => {
    const c = caseFolder("model-st", modelFiles);
    const r = fuzz(220, 1, c.dir, (rng) => {
      c.write("model.safetensors", mutateSafetensors(c.originals["model.safetensors"]!, rng));
      return "model.safetensors";
    }, () => GPT2LMHeadModel.fromPretrainedSync(c.dir).dispose());
    total += 220;
    expect(r.rejected).toBeGreaterThan(150);
  });

  it("config.json: invalid JSON, wrong types, NaN strings, huge and negative sizes, missing keys", () => {
    const c = caseFolder("model-config", modelFiles);
    const r = fuzz(200, 2, c.dir, (rng) => {
      c.write("config.json", mutateJsonFile(c.originals["config.json"]!, rng));
      return "config.json";
    }, () => GPT2LMHeadModel.fromPretrainedSync(c.dir).dispose());
    total += 200;
    expect(r.rejected).toBeGreaterThan(60);
  });

  it("sharded checkpoints: model.safetensors.index.json", () => {
    const src = join(FIXTURES, "gpt2-tiny-sharded");
    const names = readdirSync(src).filter((f) => f.endsWith(".json") || f.endsWith(".safetensors"));
    const c = caseFolder("model-sharded", Object.fromEntries(names.map((f) => [f, join(src, f)])));
    const r = fuzz(60, 7, c.dir, (rng) => {
      c.write("model.safetensors.index.json", mutateJsonFile(c.originals["model.safetensors.index.json"]!, rng));
      return "model.safetensors.index.json";
    }, () => GPT2LMHeadModel.fromPretrainedSync(c.dir).dispose());
    total += 60;
    expect(r.rejected).toBeGreaterThan(20);
  });

  it("tokenizer files: tokenizer.json, vocab.json + merges.txt, tokenizer_config.json", () => {
    const tok = join(FIXTURES, "tiny-tokenizer");
    const json = caseFolder("tok-json", { "tokenizer.json": join(tok, "tokenizer.json") });
    const pair = caseFolder("tok-pair", { "vocab.json": join(tok, "vocab.json"), "merges.txt": join(tok, "merges.txt") });
    const load = (dir: string) => () => {
      const t = GPT2Tokenizer.fromPretrained(dir);
      t.decode(t.encode("Hello, world! <|endoftext|> café 😀"));
    };
    const a = fuzz(70, 3, json.dir, (rng) => {
      json.write("tokenizer.json", mutateJsonFile(json.originals["tokenizer.json"]!, rng));
      return "tokenizer.json";
    }, load(json.dir));
    const b = fuzz(60, 4, pair.dir, (rng) => {
      pair.write("vocab.json", mutateJsonFile(pair.originals["vocab.json"]!, rng));
      return "vocab.json";
    }, load(pair.dir));
    const c = fuzz(60, 5, pair.dir, (rng) => {
      pair.write("merges.txt", rng.next() < 0.5 ? mutateLines(pair.originals["merges.txt"]!.toString("utf8"), rng) : mutateBytes(pair.originals["merges.txt"]!, rng));
      return "merges.txt";
    }, load(pair.dir));
    const cfg = caseFolder("tok-config", { "tokenizer.json": join(tok, "tokenizer.json") });
    const d = fuzz(30, 6, cfg.dir, (rng) => {
      cfg.write("tokenizer.json", cfg.originals["tokenizer.json"]!);
      const value = rng.pick([{ eos_token: "<|endoftext|>" }, { eos_token: { content: "<|endoftext|>" } }, { eos_token: "<|nope|>" }, { eos_token: 5 }, null, [], "x"]);
      writeFileSync(join(cfg.dir, "tokenizer_config.json"), rng.next() < 0.3 ? mutateBytes(Buffer.from(JSON.stringify(value)), rng) : JSON.stringify(value));
      return "tokenizer_config.json";
    }, load(cfg.dir));
    rmSync(join(cfg.dir, "tokenizer_config.json"));
    total += 70 + 60 + 60 + 30;
    expect(a.rejected + b.rejected + c.rejected + d.rejected).toBeGreaterThan(80);
  });

  it("adapter folders: adapter_config.json and adapter_model.safetensors", () => {
    const base = GPT2LMHeadModel.fromPretrainedSync(join(FIXTURES, "gpt2-tiny"));
    const state = base.stateDict();
    const fresh = () => {
      const m = new GPT2LMHeadModel(base.config, { initialize: false });
      m.loadStateDict(state);
      return m;
    };
    let rejected = 0;
    for (const [k, name] of ["adapter-c_attn", "adapter-patterns"].entries()) {
      const src = join(FIXTURES, "peft-tiny", name);
      const c = caseFolder(`adapter-${name}`, { "adapter_config.json": join(src, "adapter_config.json"), "adapter_model.safetensors": join(src, "adapter_model.safetensors") });
      const load = () => {
        const model = fresh();
        try {
          PeftModel.fromPretrainedSync(model, c.dir, quiet).dispose();
        } catch (err) {
          model.dispose();
          throw err;
        }
      };
      rejected += fuzz(50, 10 + k, c.dir, (rng) => {
        c.write("adapter_config.json", mutateJsonFile(c.originals["adapter_config.json"]!, rng));
        return "adapter_config.json";
      }, load).rejected;
      rejected += fuzz(50, 20 + k, c.dir, (rng) => {
        c.write("adapter_model.safetensors", mutateSafetensors(c.originals["adapter_model.safetensors"]!, rng));
        return "adapter_model.safetensors";
      }, load).rejected;
    }
    base.dispose();
    total += 200;
    expect(rejected).toBeGreaterThan(100);
  });

  describe("trainer checkpoint folders", () => {
    const EOS = 100;
    const examples: TokenizedExample[] = Array.from({ length: 16 }, (_, i) => {
      const ids = [i % 50, (i * 7) % 50, (i * 13) % 50, EOS];
      const labels = Int32Array.from(ids);
      labels[0] = IGNORE_INDEX;
      return { inputIds: Int32Array.from(ids), labels, line: i + 1 };
    });
    const trainer = (outDir?: string) => {
      const generator = new Generator(5);
      const model = getPeftModel(GPT2LMHeadModel.fromPretrainedSync(join(FIXTURES, "gpt2-tiny"), { generator }),
        new LoraConfig({ r: 2, targetModules: ["c_attn"], loraDropout: 0.1 }), "default", { generator, ...quiet });
      return new Trainer({
        model, trainData: new DataLoader(examples, { batchSize: 4, tokenizer: { eosTokenId: EOS }, seed: 5 }),
        maxSteps: 2, lr: 1e-2, checkpointEvery: 2, generators: { model: generator }, progress: { quiet: true }, config: { seed: 5 }, outDir,
      });
    };
    let checkpoint = "";
    beforeAll(async () => {
      const t = trainer(join(tmp, "run"));
      await t.train();
      t.dispose();
      checkpoint = join(tmp, "run", "checkpoints", "step-2");
    });

    it("trainer_state.json, optimizer.json, trainable.safetensors, optimizer.safetensors", () => {
      // the folder holds only files (a nested folder would not be copied by caseFolder)
      const names = readdirSync(checkpoint).sort();
      expect(names).toEqual(expect.arrayContaining(["optimizer.json", "optimizer.safetensors", "trainable.safetensors", "trainer_state.json"]));
      const c = caseFolder("ckpt", Object.fromEntries(names.map((f) => [f, join(checkpoint, f)])));
      const t = trainer();
      const files = ["trainer_state.json", "optimizer.json", "trainable.safetensors", "optimizer.safetensors"];
      const r = fuzz(160, 30, c.dir, (rng, i) => {
        const file = files[i % files.length]!;
        c.write(file, file.endsWith(".json") ? mutateJsonFile(c.originals[file]!, rng) : mutateSafetensors(c.originals[file]!, rng));
        return file;
      }, () => t.restore(c.dir));
      t.dispose();
      total += 160;
      expect(r.rejected).toBeGreaterThan(80);
    });
  });

  it("JSONL data: every corrupt line reported with its line number, or one Error naming the file", async () => {
    const rng = new Rng(40);
    const dir = join(tmp, "jsonl");
    mkdirSync(dir);
    const sources = ["alpaca.jsonl", "text.jsonl"].map((f) => readFileSync(join(FIXTURES, "data", f)));
    let reported = 0, rejected = 0;
    for (let i = 0; i < 180; i++) {
      const path = join(dir, `data-${i}.jsonl`);
      const src = sources[i % 2]!;
      const bytes = rng.next() < 0.75 ? mutateLines(src.toString("utf8"), rng) : mutateBytes(src, rng);
      writeFileSync(path, bytes);
      const label = `case ${i} (seed 40)`;
      try {
        const r = await readJsonl(path);
        // nothing is dropped silently: every non-blank line is an example or a reported problem,
        // and every line that is not valid UTF-8 is reported (a problem or a warning)
        const lines = splitLines(bytes);
        const exampleLines = new Set(r.examples.map((e) => e.line));
        // invalid UTF-8 is read (as U+FFFD) and reported in a warning naming the lines
        const warnings = (r as { warnings?: string[] }).warnings ?? [];
        const warnedLines = new Set(warnings.flatMap((w) => [...(/invalid UTF-8 on (?:line|\d+ lines:) ([\d, ]+)/.exec(w)?.[1] ?? "").matchAll(/\d+/g)].map(Number)));
        const problemLines = new Set(r.problems.map((p) => p.line));
        lines.forEach((line, k) => {
          const text = new TextDecoder().decode(line).replace(/^\uFEFF/, "");
          if (text.trim() !== "") expect(exampleLines.has(k + 1) || problemLines.has(k + 1), `${label}: line ${k + 1} vanished`).toBe(true);
          if (!isUtf8(line)) expect(warnedLines.has(k + 1) || problemLines.has(k + 1), `${label}: line ${k + 1} is not UTF-8 and was not reported`).toBe(true);
        });
        for (const p of r.problems) {
          expect(p.file, label).toBe(path);
          expect(p.line, label).toBeGreaterThanOrEqual(1);
          expect(p.line, label).toBeLessThanOrEqual(lines.length);
        }
        reported += r.problems.length;
      } catch (err) {
        rejected++;
        expect(unclear(err, path), label).toBeNull();
      }
      rmSync(path);
    }
    expect(readdirSync(dir)).toEqual([]);
    total += 180;
    expect(reported).toBeGreaterThan(100);
    expect(rejected).toBeGreaterThan(0);
  });
});

// The commands that write: a corrupted input must stop them before anything is written.
describe("fuzzed inputs through the CLI", () => {
  let cli: Awaited<ReturnType<typeof buildCli>>;
  let model = "";
  beforeAll(async () => {
    cli = await buildCli();
    model = join(tmp, "cli-model");
    makeTinyModel(model);
  });
  afterAll(() => cli?.cleanup());

  /** Copies `src` to a fresh folder with `file` replaced by `bytes`. */
  function corrupted(src: string, name: string, file: string, bytes: Uint8Array): string {
    const dir = join(tmp, name);
    cpSync(src, dir, { recursive: true });
    writeFileSync(join(dir, file), bytes);
    return dir;
  }

  it("merge and train refuse corrupted models, adapters and data, naming the file, and write nothing", async () => {
    const rng = new Rng(50);
    const adapter = join(FIXTURES, "peft-tiny", "adapter-c_attn");
    const tiny = join(FIXTURES, "gpt2-tiny");
    const st = (dir: string, f: string) => readFileSync(join(dir, f));
    const cases: { name: string; args: (out: string) => string[]; names: string }[] = [];
    const mergeWith = (name: string, m: string, a: string) => cases.push({ name, names: name.startsWith("adapter") ? a : m, args: (out) => ["merge", "--model", m, "--adapter", a, "--out", out] });
    const truncatedAdapter = corrupted(adapter, "cli-a1", "adapter_model.safetensors", st(adapter, "adapter_model.safetensors").subarray(0, 300));
    mergeWith("adapter weights truncated", tiny, truncatedAdapter);
    const badRank = corrupted(adapter, "cli-a2", "adapter_config.json", Buffer.from(JSON.stringify({ ...JSON.parse(st(adapter, "adapter_config.json").toString()), r: "NaN" })));
    mergeWith("adapter config r=\"NaN\"", tiny, badRank);
    const badHeader = corrupted(tiny, "cli-m1", "model.safetensors", mutateSafetensors(st(tiny, "model.safetensors"), rng).fill(0xff, 0, 8));
    mergeWith("model header length", badHeader, adapter);
    const badConfig = corrupted(tiny, "cli-m2", "config.json", Buffer.from(st(tiny, "config.json").toString().replace('"n_embd": 64', '"n_embd": "64"')));
    mergeWith("model config n_embd \"64\"", badConfig, adapter);
    const data = join(tmp, "cli-data.jsonl");
    writeFileSync(data, "{oops\n[1, 2]\n{\"text\": 5}\n");
    cases.push({ name: "data with no valid line", names: data, args: (out) => ["train", "--model", model, "--data", data, "--out", out, "--steps", "2", "--quiet"] });
    const brokenTokenizer = corrupted(model, "cli-t1", "vocab.json", Buffer.from("{\"a\": 0"));
    rmSync(join(brokenTokenizer, "tokenizer.json"), { force: true });
    writeFileSync(join(tmp, "cli-ok.jsonl"), "{\"text\": \"hello world\"}\n".repeat(8));
    cases.push({ name: "tokenizer vocab.json cut short", names: brokenTokenizer, args: (out) => ["train", "--model", brokenTokenizer, "--data", join(tmp, "cli-ok.jsonl"), "--out", out, "--steps", "2", "--quiet"] });

    const failures: string[] = [];
    for (const [i, c] of cases.entries()) {
      const out = join(tmp, `cli-out-${i}`);
      const r = await runCli(cli.main, c.args(out));
      const why = r.code !== 1 && r.code !== 2 ? `exit ${r.code} (signal ${r.signal})`
        : !r.stderr.includes(c.names) ? `stderr does not name ${c.names}`
        : /\n\s+at /.test(r.stderr) ? "stderr holds a stack trace"
        : UNCLEAR.test(r.stderr) ? "the message reads like a missing check"
        : existsSync(out) ? `left ${out}: ${readdirSync(out).join(", ")}`
        : null;
      if (why) failures.push(`${c.name}: ${why}: ${r.stderr.slice(0, 300)}`);
    }
    expect(failures).toEqual([]);
  });
});
