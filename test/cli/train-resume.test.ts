// Crash safety of `lowrank train`: a run killed with SIGKILL (no chance to clean up) and resumed
// with --resume ends exactly where the uninterrupted run ends, and no checkpoint folder is ever
// left half-written, even when the kill lands while checkpoints are being written and pruned:
// at timing-based moments, and forced inside each write (LOWRANK_CRASH_AT, lib/io/crash-point.ts)
// between a temporary being complete and its rename, where the leftovers must be recognized and
// removed by the next run.
//
// Tolerance: none. The resumed process restores every bit the trajectory depends on (float32
// adapter weights and AdamW moments, the step counts, the lr schedule, the Philox stream offsets
// of dropout, the data loader position) and then performs the same float32 operations in the same
// order on the same CPU kernels (one kernel thread in both runs), so the losses, learning rates,
// gradient norms and the final adapter file are identical bit for bit.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GPT2LMHeadModel, PeftModel } from "../../lib/index.js";
import { latestCheckpoint, listCheckpoints, readCheckpoint } from "../../lib/train/checkpoint.js";
import type { StepRecord } from "../../lib/train/metrics.js";
import { runCli, startCli, workspace, type CliResult } from "./helpers.js";

let ws: Awaited<ReturnType<typeof workspace>>;
let reference: { out: string; curve: Omit<StepRecord, "elapsed" | "tokensPerSec">[] };
const STEPS = 40;

const args = (out: string, checkpointEvery: number) => [
  "train", "--model", ws.model, "--data", ws.data, "--out", out, "--template", ws.template, "--steps", String(STEPS), "--lr", "5e-3",
  "--warmup", "5", "--schedule", "cosine", "--eval-every", "15", "--checkpoint-every", String(checkpointEvery), "--keep-checkpoints", "2",
  "--seed", "3", "--log-every", "1",
];
/** metrics.jsonl without the wall-clock fields. */
const curve = (out: string) =>
  readFileSync(join(out, "metrics.jsonl"), "utf8").trimEnd().split("\n").map((l) => {
    const { elapsed: _e, tokensPerSec: _t, ...rest } = JSON.parse(l) as StepRecord;
    return rest;
  });

/** Every checkpoint folder that exists is complete: its files parse and its adapter loads. */
function expectAllCheckpointsLoad(out: string): number[] {
  const dir = join(out, "checkpoints");
  const found = listCheckpoints(dir);
  for (const { step, dir: ckpt } of found) {
    const loaded = readCheckpoint(ckpt);
    expect(loaded.state.step).toBe(step);
    expect(loaded.state.history).toHaveLength(step);
    const peft = PeftModel.fromPretrainedSync(GPT2LMHeadModel.fromPretrainedSync(ws.model), ckpt);
    peft.dispose();
  }
  // hidden temporaries of an interrupted write (a checkpoint folder, or the `latest` pointer's
  // atomic write) are never mistaken for checkpoints; the next run removes them
  for (const name of readdirSync(dir)) expect(name, name).toMatch(/^(step-\d+|latest|\.tmp-\d+-[0-9a-f]+-.+|\.latest\.\d+\.[0-9a-f]+\.tmp)$/);
  if (found.length > 0) expect(found.map((c) => c.dir)).toContain(latestCheckpoint(dir));
  return found.map((c) => c.step);
}

/** Starts a run and SIGKILLs it `delayMs` after it reports `trigger`. */
async function killDuring(out: string, checkpointEvery: number, trigger: RegExp, delayMs: number, resume: boolean): Promise<CliResult> {
  let armed = false;
  const { done } = startCli(ws.main, [...args(out, checkpointEvery), ...(resume ? ["--resume"] : [])], (text, child) => {
    if (!armed && trigger.test(text)) {
      armed = true;
      setTimeout(() => child.kill("SIGKILL"), delayMs);
    }
  });
  return done;
}

beforeAll(async () => {
  ws = await workspace("lowrank-cli-resume-");
  const out = join(ws.dir, "uninterrupted");
  const r = await runCli(ws.main, args(out, 10));
  expect(r.code, r.stderr).toBe(0);
  reference = { out, curve: curve(out) };
  expect(reference.curve).toHaveLength(STEPS);
});
afterAll(() => ws?.cleanup());

describe("lowrank train --resume after kill -9", () => {
  it("continues the exact loss curve and ends with the same adapter, bit for bit", async () => {
    const out = join(ws.dir, "killed");
    const killed = await killDuring(out, 10, /checkpoint saved to .*step-10$/m, 0, false);
    expect(killed.signal).toBe("SIGKILL");
    const saved = expectAllCheckpointsLoad(out);
    expect(saved.length).toBeGreaterThan(0);
    expect(Math.max(...saved)).toBeLessThan(STEPS); // killed mid-run, not after it finished

    const resumed = await runCli(ws.main, [...args(out, 10), "--resume"]);
    expect(resumed.code, resumed.stderr).toBe(0);
    const at = Math.max(...saved);
    expect(resumed.stdout).toContain(`resuming at step ${at} from ${join(out, "checkpoints", `step-${at}`)}`);
    // the whole curve: steps before the kill come from the checkpoint, the rest were recomputed
    expect(curve(out)).toEqual(reference.curve);
    expect(readFileSync(join(out, "adapter_model.safetensors")).equals(readFileSync(join(reference.out, "adapter_model.safetensors")))).toBe(true);
  });

  it("never leaves a half-written checkpoint, whenever the kill lands (checkpoint and prune every step)", async () => {
    const out = join(ws.dir, "hammered");
    // Kill at different moments after the Nth step line; each run resumes the previous one.
    const kills: [RegExp, number][] = [[/^step 5\//m, 0], [/^step \d+\//m, 37], [/^step \d+\//m, 13]];
    let last = 0;
    for (const [trigger, delay] of kills) {
      const r = await killDuring(out, 1, trigger, delay, last > 0);
      expect(r.signal, r.stderr).toBe("SIGKILL");
      const saved = expectAllCheckpointsLoad(out);
      expect(saved.length).toBeGreaterThan(0);
      expect(Math.max(...saved)).toBeGreaterThanOrEqual(last); // progress is never lost
      last = Math.max(...saved);
    }
    expect(last).toBeLessThan(STEPS);
    const resumed = await runCli(ws.main, [...args(out, 1), "--resume"]);
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(curve(out)).toEqual(reference.curve);
    expect(readFileSync(join(out, "adapter_model.safetensors")).equals(readFileSync(join(reference.out, "adapter_model.safetensors")))).toBe(true);
    // the resumed run removed the temporaries the killed writers left behind
    expect(readdirSync(join(out, "checkpoints")).filter((n) => n.startsWith(".tmp-"))).toEqual([]);
  });
});

describe("lowrank train --resume after a crash forced inside each checkpoint write", () => {
  /** Runs until LOWRANK_CRASH_AT kills the process; returns what it left in checkpoints/. */
  async function crashAt(out: string, crash: string, extra: string[] = []): Promise<string[]> {
    const r = await startCli(ws.main, [...args(out, 1), ...extra], undefined, { LOWRANK_CRASH_AT: crash }).done;
    expect(r.signal, `${crash}: ${r.stderr}`).toBe("SIGKILL");
    expectAllCheckpointsLoad(out);
    return readdirSync(join(out, "checkpoints"));
  }

  /** Resumes without crashing: the curve and the adapter are the uninterrupted run's, and no temporary is left. */
  async function resumeExactly(out: string): Promise<void> {
    const resumed = await runCli(ws.main, [...args(out, 1), "--resume"]);
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(curve(out)).toEqual(reference.curve);
    expect(readFileSync(join(out, "adapter_model.safetensors")).equals(readFileSync(join(reference.out, "adapter_model.safetensors")))).toBe(true);
    expect(readdirSync(join(out, "checkpoints")).filter((n) => n.startsWith("."))).toEqual([]);
  }

  it.each([
    // a complete checkpoint folder, not yet renamed to step-5: a hidden .tmp-<pid>-<hex>-step-5 folder is left
    ["checkpoint-rename@5", /^\.tmp-\d+-[0-9a-f]+-step-5$/],
    // trainer_state.json (written last) complete in its temporary file, inside the temporary folder
    ["atomic-rename:trainer_state.json@5", /^\.tmp-\d+-[0-9a-f]+-step-5$/],
    // step-5 in place, the `latest` pointer's temporary file not yet renamed over it
    ["atomic-rename:latest@5", /^\.latest\.\d+\.[0-9a-f]{12}\.tmp$/],
    // step-1 renamed aside for deletion (keeping 2) and not yet deleted
    ["prune-delete@1", /^\.tmp-\d+-[0-9a-f]+-deleted$/],
  ])("%s", async (crash, leftover) => {
    const out = join(ws.dir, `crash-${crash.replace(/\W/g, "_")}`);
    const left = await crashAt(out, crash);
    expect(left.filter((n) => leftover.test(n)), left.join(", ")).toHaveLength(1);
    await resumeExactly(out);
  });

  it("checkpoint-replace: the same step written again, crashing between moving the old one aside and renaming the new one in", async () => {
    const out = join(ws.dir, "crash-replace");
    await crashAt(out, "checkpoint-rename@7"); // leaves step-5 and step-6
    expect(listCheckpoints(join(out, "checkpoints")).map((c) => c.step)).toEqual([5, 6]);
    // resuming from step-5 writes step-6 again, over the existing one
    const left = await crashAt(out, "checkpoint-replace", ["--resume", join(out, "checkpoints", "step-5")]);
    expect(left.filter((n) => /^\.tmp-\d+-[0-9a-f]+-old-step-6$/.test(n)), left.join(", ")).toHaveLength(1);
    expect(left.filter((n) => /^\.tmp-\d+-[0-9a-f]+-step-6$/.test(n)), left.join(", ")).toHaveLength(1);
    await resumeExactly(out);
  });
});
