// Crash safety of `lowrank train`: a run killed with SIGKILL (no chance to clean up) and resumed
// with --resume ends exactly where the uninterrupted run ends, and no checkpoint folder is ever
// left half-written, even when the kill lands while checkpoints are being written and pruned.
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
    const peft = PeftModel.fromPretrained(GPT2LMHeadModel.fromPretrained(ws.model), ckpt);
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
