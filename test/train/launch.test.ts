// The data-parallel launcher on the CPU: a fake rank entry point (fixtures/ddp-rank.ts) run by
// launchRanks with a file-based stand-in for NCCL (file-comm.ts). Two ranks train the same run as
// one process (dropout off: each rank draws its own masks), rank 0 alone writes the run folder,
// the ranks see their environment; a rank killed mid-run stops the other, the launcher names it,
// --resume with the same N finishes the run as if it had never stopped (with another N, within
// float32 summation error), a stop asked for on one rank stops all after the same step. The product CLI's
// --gpus refuses to start without NCCL or with a batch that does not divide.
import { spawnSync } from "node:child_process";
import { copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { build } from "vite";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Generator, GPT2Config, GPT2LMHeadModel } from "../../lib/index.js";
import { fineTune } from "../../lib/train/fine-tune.js";
import { readMetrics } from "../../lib/analysis/sweep.js";
import { readSafetensors, toTensor } from "../../lib/io/safetensors.js";
import { buildCli, cliEnv, demoLines, runCli, SHORT_TEMPLATE } from "../cli/helpers.js";

const ROOT = resolve(import.meta.dirname, "../..");
let dir = "", entry = "", model = "", data = "", cli: Awaited<ReturnType<typeof buildCli>> | null = null;
const bundle = join(ROOT, `dist-ddp-test-${process.pid}`);

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "lowrank-launch-"));
  await build({ configFile: false, logLevel: "silent", root: ROOT, build: { ssr: "test/train/fixtures/ddp-rank.ts", outDir: bundle, emptyOutDir: true, minify: false, target: "node20" } });
  entry = join(bundle, "ddp-rank.js");
  // The tiny CLI model without dropout, so a rank's rows see exactly what they see in one process.
  model = join(dir, "model");
  const config = new GPT2Config({ vocabSize: 400, nPositions: 128, nEmbd: 32, nLayer: 2, nHead: 2, bosTokenId: 0, eosTokenId: 0, residPdrop: 0, embdPdrop: 0, attnPdrop: 0 });
  const m = new GPT2LMHeadModel(config, { generator: new Generator(1) });
  m.savePretrainedSync(model);
  m.dispose();
  const tok = join(ROOT, "test/fixtures/tiny-tokenizer");
  for (const f of readdirSync(tok)) copyFileSync(join(tok, f), join(model, f));
  writeFileSync(join(model, "template.txt"), SHORT_TEMPLATE);
  data = join(dir, "data.jsonl");
  writeFileSync(data, demoLines(40));
  cli = await buildCli();
}, 120_000);
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
  rmSync(bundle, { recursive: true, force: true });
  cli?.cleanup();
});

const STEPS = 8;
let launches = 0;
function launch(out: string, extra: Record<string, unknown> = {}) {
  const n = launches++;
  const logDir = join(dir, `log-${n}`);
  mkdirSync(logDir);
  const settings = { world: 2, model, data, out, commDir: join(dir, `comm-${n}`), logDir, steps: STEPS, ...extra };
  const r = spawnSync(process.execPath, [entry, JSON.stringify(settings)], { cwd: ROOT, env: cliEnv(), encoding: "utf8", timeout: 240_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, logDir };
}
const losses = (out: string) => readMetrics(join(out, "metrics.jsonl")).map((r) => r.loss!);
const adapter = (out: string) => readFileSync(join(out, "adapter_model.safetensors"));
function weights(out: string): Record<string, Float32Array> {
  const f = readSafetensors(join(out, "adapter_model.safetensors"));
  return Object.fromEntries(f.names.map((n) => {
    const t = toTensor(f.get(n));
    const v = t.dataSync() as Float32Array;
    t.dispose();
    return [n, v];
  }));
}

describe("launchRanks with a CPU stand-in communicator", () => {
  let twoRankOut = "";

  it("two ranks train the same run as one process; rank 0 alone writes; each rank gets its environment", async () => {
    const one = join(dir, "one");
    const r1 = await fineTune({
      model, data, out: one, steps: STEPS, batchSize: 4, r: 4, alpha: 8, dropout: 0, lr: 1e-2, evalSplit: 0.1,
      evalEvery: 3, checkpointEvery: 2, keepCheckpoints: 0, seed: 3, device: "cpu", progress: { quiet: true },
    });
    r1.model.dispose();
    twoRankOut = join(dir, "two");
    const run = launch(twoRankOut);
    expect(run.stderr).toBe("");
    expect(run.code).toBe(0);
    for (const rank of [0, 1]) {
      expect(JSON.parse(readFileSync(join(run.logDir, `env-${rank}.json`), "utf8"))).toMatchObject({ rank, worldSize: 2, ncclId: "test-id" });
    }
    expect(existsSync(join(run.logDir, "violations-1.txt"))).toBe(false);
    // the same loss curve (float32 summation order apart) and adapter
    const a = losses(one), b = losses(twoRankOut);
    expect(b).toHaveLength(STEPS);
    for (let i = 0; i < STEPS; i++) expect(Math.abs(b[i]! - a[i]!), `step ${i + 1}`).toBeLessThan(1e-5 * a[i]!);
    const wa = weights(one), wb = weights(twoRankOut);
    expect(Object.keys(wb)).toEqual(Object.keys(wa));
    for (const [name, w] of Object.entries(wa)) {
      const scale = Math.max(...w.map(Math.abs));
      expect(scale, name).toBeGreaterThan(0);
      for (let i = 0; i < w.length; i++) expect(Math.abs(wb[name]![i]! - w[i]!), name).toBeLessThan(1e-4 * scale);
    }
    expect(readdirSync(join(twoRankOut, "checkpoints")).sort()).toEqual(readdirSync(join(one, "checkpoints")).sort());
  }, 300_000);

  it("a rank killed mid-run stops the other, the launcher names it, and --resume with the same N finishes the same run", () => {
    const out = join(dir, "killed");
    const run = launch(out, { dieRank: 1, dieAfterStep: 3 });
    expect(run.code).toBe(1);
    expect(run.stderr).toContain("lowrank: rank 1 of 2 (pid");
    expect(run.stderr).toContain("was killed by SIGKILL; stopping the other ranks");
    expect(JSON.parse(run.stdout.trim().split("\n").at(-1)!)).toMatchObject({ code: 1, failedRank: 1 });
    // the checkpoint of step 2 is complete (step 3's update was never written), nothing else
    expect(readdirSync(join(out, "checkpoints")).filter((f) => f.startsWith("step-"))).toEqual(["step-2"]);
    const other = join(dir, "killed-resumed-on-one");
    cpSync(out, other, { recursive: true });
    const resumed = launch(out, { resume: true });
    expect(resumed.code).toBe(0);
    expect(losses(out)).toEqual(losses(twoRankOut));
    expect(adapter(out).equals(adapter(twoRankOut))).toBe(true);
    // another N that divides the global batch continues the same run (float32 summation order apart)
    const onOne = launch(other, { resume: true, world: 1 });
    expect(onOne.code).toBe(0);
    const want = losses(twoRankOut), got = losses(other);
    for (let i = 0; i < STEPS; i++) expect(Math.abs(got[i]! - want[i]!), `step ${i + 1}`).toBeLessThan(1e-5 * want[i]!);
  }, 300_000);

  it("a stop asked for on one rank stops every rank after the same step, checkpointed", () => {
    const out = join(dir, "stopped");
    const run = launch(out, { stopRank: 1, stopAfterStep: 3 });
    expect(run.code).toBe(130);
    // rank 1's request travels in step 4's all-reduce: both ranks stop after step 4
    for (const rank of [0, 1]) expect(JSON.parse(readFileSync(join(run.logDir, `result-${rank}.json`), "utf8"))).toEqual({ status: "stopped", step: 4 });
    expect(readdirSync(join(out, "checkpoints")).filter((f) => f.startsWith("step-")).sort()).toEqual(["step-2", "step-4"]);
    expect(losses(out)).toEqual(losses(twoRankOut).slice(0, 4));
  }, 300_000);
});

describe("launchRanks: ranks that start apart", () => {
  it("refuse to train when their adapters differ, on every rank, naming both", () => {
    const out = join(dir, "apart");
    const run = launch(out, { perturbRank: 1 });
    expect(run.code).toBe(1);
    expect(run.stderr).toContain("rank 0's trainable weights differ from rank 1's before training");
    expect(run.stderr).toContain("rank 1's trainable weights differ from rank 0's before training");
    expect(run.stderr).toContain("lowrank: rank ");
    expect(existsSync(join(out, "metrics.jsonl")) && readFileSync(join(out, "metrics.jsonl"), "utf8").trim()).toBeFalsy();
  }, 300_000);
});

describe("lowrank train --gpus", () => {
  it("fails with the reason on a build without NCCL, and names the flags when the batch does not divide", async () => {
    const out = join(dir, "cli");
    const base = ["train", "--model", model, "--data", data, "--out", out, "--steps", "2"];
    const noNccl = await runCli(cli!.main, [...base, "--gpus", "2", "--batch-size", "4"]);
    expect(noNccl.code).toBe(1);
    expect(noNccl.stderr).toContain("--gpus 2: this build of lowrank has no NCCL, which training on several GPUs needs");
    const odd = await runCli(cli!.main, [...base, "--gpus", "3", "--batch-size", "4"]);
    expect(odd.code).toBe(2);
    expect(odd.stderr).toContain("--batch-size 4 (the global batch) must divide by --gpus 3");
    expect(existsSync(out)).toBe(false);
  }, 120_000);
});
