// The Trainer on the tiny GPT-2 with a LoRA adapter and a tiny synthetic task: the loss falls, the
// same seed gives the same loss curve, a step frees all it allocates, eval loss and metrics are
// logged, checkpoints are complete and resume to the same curve, stop() and NaN losses stop cleanly.
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  Generator, GPT2LMHeadModel, getPeftModel, LoraConfig, memory, noGrad, PeftModel, readSafetensors, type DeviceMemory,
} from "../../lib/index.js";
import { IGNORE_INDEX, type TokenizedExample } from "../../lib/train/data.js";
import { DataLoader } from "../../lib/train/collate.js";
import { latestCheckpoint, listCheckpoints, readCheckpoint } from "../../lib/train/checkpoint.js";
import { NonFiniteLossError, Trainer, type TrainerOptions } from "../../lib/train/trainer.js";
import type { StepRecord } from "../../lib/train/metrics.js";

const MODEL = "test/fixtures/gpt2-tiny"; // vocab 101, eos 100, 64 positions
const EOS = 100;
const tmp = mkdtempSync(join(tmpdir(), "lowrank-trainer-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
let runs = 0;
const newOut = () => join(tmp, `run-${runs++}`);

/** A prompt of 3-6 ids in [0, 50) is answered by its last id plus 50, then EOS: each target is a function of the token before it. */
function task(n: number, seed: number): TokenizedExample[] {
  let s = seed;
  const rnd = (k: number) => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) >>> 8) % k;
  return Array.from({ length: n }, (_, i) => {
    const prompt = Array.from({ length: 3 + rnd(4) }, () => rnd(50));
    const ids = [...prompt, prompt.at(-1)! + 50, EOS];
    const labels = Int32Array.from(ids);
    labels.fill(IGNORE_INDEX, 0, prompt.length);
    return { inputIds: Int32Array.from(ids), labels, line: i + 1 };
  });
}
const TRAIN = task(48, 1);
const EVAL = task(8, 2);
const tokenizer = { eosTokenId: EOS };

/** A fresh LoRA model and trainer options, everything seeded from `seed` as the CLI does. */
function setup(seed: number, extra: Partial<TrainerOptions> = {}) {
  const generator = new Generator(seed);
  const base = GPT2LMHeadModel.fromPretrained(MODEL, { generator });
  const model = getPeftModel(base, new LoraConfig({ r: 4, loraAlpha: 8, loraDropout: 0.1, targetModules: ["c_attn", "c_proj"] }), "default", { generator, onWarning: () => {} });
  const options: TrainerOptions = {
    model,
    trainData: new DataLoader(TRAIN, { batchSize: 4, tokenizer, seed }),
    evalData: new DataLoader(EVAL, { batchSize: 4, tokenizer, shuffle: false }),
    maxSteps: 40, lr: 1e-2, warmupSteps: 2, schedule: "cosine", generators: { model: generator },
    progress: { quiet: true }, config: { seed },
    ...extra,
  };
  return { model, options };
}

async function run(seed: number, extra: Partial<TrainerOptions> = {}) {
  const { model, options } = setup(seed, extra);
  const trainer = new Trainer(options);
  try {
    return { result: await trainer.train(), model };
  } finally {
    trainer.dispose();
  }
}

const losses = (h: readonly StepRecord[]) => h.map((r) => r.loss);

describe("Trainer", () => {
  it("lowers the loss, logs eval loss and metrics.jsonl, and is deterministic per seed", async () => {
    const out = newOut();
    const a = await run(7, { outDir: out, evalEvery: 15 });
    const h = a.result.history;
    expect(a.result.status).toBe("completed");
    expect(h.map((r) => r.step)).toEqual(Array.from({ length: 40 }, (_, i) => i + 1));
    const mean = (rs: StepRecord[]) => rs.reduce((a, r) => a + r.loss!, 0) / rs.length;
    expect(mean(h.slice(-5))).toBeLessThan(0.6 * mean(h.slice(0, 5)));
    // eval every 15 steps and after the last one
    expect(h.filter((r) => r.evalLoss !== undefined).map((r) => r.step)).toEqual([15, 30, 40]);
    expect(h[39]!.evalLoss!).toBeLessThan(h[14]!.evalLoss!);
    // warmup from 0, then cosine down to 0 at the end
    expect(h[0]!.lr).toBe(0);
    expect(h[2]!.lr).toBeCloseTo(1e-2, 12);
    expect(h[39]!.lr).toBeLessThan(1e-4);
    for (const r of h) {
      expect(r.gradNorm).toBeGreaterThan(0);
      expect(r.tokensPerSec).toBeGreaterThan(0);
    }
    // 40 steps of 4 examples are 160 examples: 3 epochs of 48 and 16 more
    expect(h[39]!.epoch).toBeCloseTo(160 / 48, 12);
    expect(h[35]!.tokens).toBe(3 * TRAIN.reduce((n, e) => n + e.inputIds.length, 0));
    const lines = readFileSync(join(out, "metrics.jsonl"), "utf8").trimEnd().split("\n").map((l) => JSON.parse(l) as StepRecord);
    expect(lines).toEqual(JSON.parse(JSON.stringify(h)));

    const b = await run(7);
    expect(losses(b.result.history)).toEqual(losses(h));
    const c = await run(8);
    expect(losses(c.result.history)).not.toEqual(losses(h));
    for (const m of [a.model, b.model, c.model]) m.dispose();
  });
});
