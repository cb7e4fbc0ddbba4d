// The Trainer on the tiny GPT-2 with a LoRA adapter and a tiny synthetic task: the loss falls, the
// same seed gives the same loss curve, a step frees all it allocates, eval loss and metrics are
// logged, checkpoints are complete and resume to the same curve, stop() and NaN losses stop cleanly.
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  copyInto, fullLike, Generator, GPT2LMHeadModel, getPeftModel, LoraConfig, memory, noGrad, PeftModel, tensor, tidy, type DeviceMemory,
} from "../../lib/index.js";
import { IGNORE_INDEX, type TokenizedExample } from "../../lib/train/data.js";
import { DataLoader } from "../../lib/train/collate.js";
import { latestCheckpoint, listCheckpoints, readCheckpoint } from "../../lib/train/checkpoint.js";
import { NonFiniteLossError, settingDifferences, Trainer, type TrainerOptions } from "../../lib/train/trainer.js";
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
  const base = GPT2LMHeadModel.fromPretrainedSync(MODEL, { generator });
  const model = getPeftModel(base, new LoraConfig({ r: 4, loraAlpha: 8, loraDropout: 0.1, targetModules: ["c_attn", "c_proj"], fanInFanOut: true }), "default", { generator });
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
    // The last eval loss is the trained model's mean loss over every label token of EVAL, computed
    // here one unpadded example at a time (the Trainer pads batches of 4): float32 rounding apart.
    let sum = 0, count = 0;
    a.model.train(false);
    noGrad(() => tidy(() => {
      for (const e of EVAL) {
        const ids = tensor(e.inputIds, { shape: [1, e.inputIds.length] }), labels = tensor(e.labels, { shape: [1, e.labels.length] });
        const n = e.labels.slice(1).filter((l) => l !== IGNORE_INDEX).length; // the loss predicts labels[1:]
        sum += a.model.forwardLoss({ inputIds: ids, labels }).item() * n;
        count += n;
      }
    }));
    expect(Math.abs(h[39]!.evalLoss! - sum / count)).toBeLessThan(1e-5 * (sum / count));
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

  it("frees everything each step allocates (memory equal after steps 2..N, evals and checkpoints included)", async () => {
    const { model, options } = setup(3, { maxSteps: 12, evalEvery: 4, checkpointEvery: 3, keepCheckpoints: 1, outDir: newOut() });
    const trainer = new Trainer(options);
    const seen: DeviceMemory[] = [];
    trainer.on("step", () => seen.push(memory().cpu!));
    await trainer.train();
    const pick = (m: DeviceMemory) => ({ bytes: m.bytes, buffers: m.buffers, tensors: m.tensors });
    // step 1 creates AdamW's moments; nothing grows after that
    for (const m of seen.slice(2)) expect(pick(m)).toEqual(pick(seen[1]!));
    trainer.dispose();
    model.dispose();
  });

  it("accumulating 2 micro-batches of 2 takes the same steps as batches of 4 (loss weighted by label tokens)", async () => {
    // Without dropout the two layouts compute the same mean over the same tokens.
    const dir = join(tmp, "no-dropout");
    mkdirSync(dir);
    const config = JSON.parse(readFileSync(join(MODEL, "config.json"), "utf8"));
    writeFileSync(join(dir, "config.json"), JSON.stringify({ ...config, resid_pdrop: 0, embd_pdrop: 0, attn_pdrop: 0 }));
    copyFileSync(join(MODEL, "model.safetensors"), join(dir, "model.safetensors"));
    const curve = async (batchSize: number, gradAccum: number) => {
      const generator = new Generator(5);
      const model = getPeftModel(GPT2LMHeadModel.fromPretrainedSync(dir, { generator }), new LoraConfig({ r: 4, targetModules: ["c_attn"], fanInFanOut: true }), "default", { generator });
      const trainer = new Trainer({
        model, trainData: new DataLoader(TRAIN, { batchSize, tokenizer, seed: 5 }), maxSteps: 8, gradAccum, lr: 1e-2, progress: { quiet: true },
      });
      const { history } = await trainer.train();
      trainer.dispose();
      model.dispose();
      return history;
    };
    const whole = await curve(4, 1), accumulated = await curve(2, 2);
    for (let i = 0; i < whole.length; i++) {
      expect(Math.abs(accumulated[i]!.loss! - whole[i]!.loss!) / whole[i]!.loss!).toBeLessThan(1e-5);
      expect(Math.abs(accumulated[i]!.gradNorm - whole[i]!.gradNorm) / whole[i]!.gradNorm).toBeLessThan(1e-4);
      expect(accumulated[i]!.tokens).toBe(whole[i]!.tokens);
    }
  });

  it("writes complete checkpoints (adapter in PEFT format, optimizer, state), keeps the newest K, points `latest` at the newest", async () => {
    const out = newOut();
    const seen: number[] = [];
    const { model, options } = setup(11, { maxSteps: 25, checkpointEvery: 10, keepCheckpoints: 2, outDir: out });
    const trainer = new Trainer(options);
    trainer.on("checkpoint", (e) => seen.push(e.step));
    const result = await trainer.train();
    // every 10 steps and the final step; only the newest two are left
    expect(seen).toEqual([10, 20, 25]);
    const dir = join(out, "checkpoints");
    expect(listCheckpoints(dir).map((c) => c.step)).toEqual([20, 25]);
    expect(latestCheckpoint(dir)).toBe(join(dir, "step-25"));
    expect(result.checkpoint).toBe(join(dir, "step-25"));
    expect(readdirSync(dir).sort()).toEqual(["latest", "step-20", "step-25"]); // no temporaries left
    const ckpt = readCheckpoint(join(dir, "step-25"));
    expect(ckpt.state.step).toBe(25);
    expect(ckpt.state.history).toEqual(JSON.parse(JSON.stringify(result.history)));
    expect(ckpt.optimizerMeta.optimizer).toBe("AdamW");
    expect(ckpt.optimizerTensors.names).toHaveLength(2 * model.trainableParameters().length);
    // the adapter in the checkpoint loads with PeftModel.fromPretrained and equals the trained one
    const loaded = PeftModel.fromPretrainedSync(GPT2LMHeadModel.fromPretrainedSync(MODEL), join(dir, "step-25"));
    const want = model.adapterStateDict(), got = loaded.adapterStateDict();
    for (const key of Object.keys(want)) expect(got[key]!.dataSync(), key).toEqual(want[key]!.dataSync());
    loaded.dispose();
    trainer.dispose();
    model.dispose();
  });

  it("stop() ends after the current step with a checkpoint; resuming from it continues the exact same curve", async () => {
    const full = await run(21, { maxSteps: 30, evalEvery: 10, checkpointEvery: 10, outDir: newOut() });

    const out = newOut();
    const first = setup(21, { maxSteps: 30, evalEvery: 10, checkpointEvery: 10, outDir: out });
    const t1 = new Trainer(first.options);
    t1.on("step", (r) => r.step === 17 && t1.stop());
    const stopped = await t1.train();
    expect(stopped.status).toBe("stopped");
    expect(stopped.step).toBe(17);
    expect(stopped.checkpoint).toBe(join(out, "checkpoints", "step-17"));
    t1.dispose();
    first.model.dispose();

    // a fresh process would build everything anew from the same settings: so do we
    const second = setup(21, { maxSteps: 30, evalEvery: 10, checkpointEvery: 10, outDir: out, resume: true });
    const t2 = new Trainer(second.options);
    const resumed = await t2.train();
    expect(resumed.status).toBe("completed");
    // bit-identical: the same float32 operations in the same order on the same state
    expect(resumed.history.map(({ elapsed, tokensPerSec, ...r }) => r)).toEqual(full.result.history.map(({ elapsed, tokensPerSec, ...r }) => r));
    const a = full.model.adapterStateDict(), b = second.model.adapterStateDict();
    for (const key of Object.keys(a)) expect(b[key]!.dataSync(), key).toEqual(a[key]!.dataSync());
    // metrics.jsonl was rewound to the checkpoint, then continued: one line per step
    const lines = readFileSync(join(out, "metrics.jsonl"), "utf8").trimEnd().split("\n").map((l) => JSON.parse(l).step);
    expect(lines).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
    t2.dispose();
    second.model.dispose();
    full.model.dispose();
  });

  it("refuses to resume with other settings, naming what differs", async () => {
    const out = newOut();
    const a = await run(4, { maxSteps: 3, outDir: out });
    a.model.dispose();
    const { model, options } = setup(4, { maxSteps: 3, lr: 5e-3, outDir: out, resume: join(out, "checkpoints", "step-3") });
    const trainer = new Trainer(options);
    await expect(trainer.train()).rejects.toThrow(
      /^resume from .*step-3: the run's settings differ from the checkpoint's: trainer\.lr was 0\.01, now 0\.005; resume with the same settings, or start a new run in another output folder$/,
    );
    trainer.dispose();
    model.dispose();
  });

  it("names each changed setting by its path, with the old and the new value", () => {
    const saved = { seed: 1, lora: { r: 8, target_modules: ["c_attn"] }, trainer: { lr: 0.01, warmupSteps: 0 } };
    expect(settingDifferences(saved, saved)).toEqual([]);
    expect(settingDifferences(saved, { seed: 1, lora: { r: 16, target_modules: ["c_attn", "c_proj"] }, trainer: { lr: 0.01 }, packing: true })).toEqual([
      'lora.r was 8, now 16', 'lora.target_modules was ["c_attn"], now ["c_attn","c_proj"]', "packing was not set, now true", "trainer.warmupSteps was 0, now not set",
    ]);
  });

  it("yields to the event loop between steps: callbacks run while it trains", async () => {
    const { model, options } = setup(2, { maxSteps: 50 });
    const trainer = new Trainer(options);
    setImmediate(() => trainer.stop()); // can only run when the loop yields, after the first step
    const result = await trainer.train();
    expect(result.status).toBe("stopped");
    expect(result.step).toBe(1);
    expect(result.checkpoint).toBeNull(); // no outDir: nothing written
    trainer.dispose();
    model.dispose();
  });

  it("stops on a NaN/Inf loss without applying the update, keeping the last good checkpoint", async () => {
    const out = newOut();
    const { model, options } = setup(9, { maxSteps: 10, lr: 1e30, warmupSteps: 0, schedule: "constant", checkpointEvery: 1, keepCheckpoints: 1, outDir: out });
    const trainer = new Trainer(options);
    let error: unknown;
    await trainer.train().catch((e) => (error = e));
    expect(error).toBeInstanceOf(NonFiniteLossError);
    const e = error as NonFiniteLossError;
    expect(e.step).toBeGreaterThan(1);
    expect(e.message).toMatch(new RegExp(`^(loss|gradient norm) is (NaN|-?Infinity) at step ${e.step} \\(lr 1\\.00e\\+30\\); training stopped without applying this update\\. Lower the learning rate`));
    const good = join(out, "checkpoints", `step-${e.step - 1}`);
    expect(e.lastCheckpoint).toBe(good);
    expect(listCheckpoints(join(out, "checkpoints")).map((c) => c.dir)).toEqual([good]);
    expect(readCheckpoint(good).state.history.every((r) => Number.isFinite(r.loss))).toBe(true);
    trainer.dispose();
    model.dispose();
  });

  it("stops at step 1 when a weight is poisoned", async () => {
    const { model, options } = setup(9, { maxSteps: 5 });
    const [, B] = model.loraLayers.get("transformer.h.0.attn.c_attn")!.parametersOf("default");
    noGrad(() => tidy(() => copyInto(B!, fullLike(B!, NaN))));
    const trainer = new Trainer(options);
    // the adapter was NaN before any update: named, and no learning-rate advice
    await expect(trainer.train()).rejects.toThrow(/^loss is NaN at step 1 .*Adapter "default" is broken: transformer\.h\.0\.attn\.c_attn\.lora_B \(layer 0\) holds \d+ NaN .*before any update of this run/);
    trainer.dispose();
    model.dispose();
  });
});
