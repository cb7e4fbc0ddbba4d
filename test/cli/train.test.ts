// `lowrank train` as a user runs it: the outputs of a run, --help, one-line errors with the right
// exit codes for bad input, Ctrl-C (SIGINT) and a diverging run.
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GPT2LMHeadModel, PeftModel, readSafetensors } from "../../lib/index.js";
import { listCheckpoints, readCheckpoint } from "../../lib/train/checkpoint.js";
import { LOCK_FILE } from "../../lib/train/lock.js";
import type { StepRecord } from "../../lib/train/metrics.js";
import { CLI_CWD, runCli, startCli, workspace } from "./helpers.js";

let ws: Awaited<ReturnType<typeof workspace>>;
beforeAll(async () => {
  ws = await workspace("lowrank-cli-train-");
});
afterAll(() => ws?.cleanup());

let outs = 0;
const newOut = () => join(ws.dir, `out-${outs++}`);
const file = (name: string, text: string) => {
  const path = join(ws.dir, name);
  writeFileSync(path, text);
  return path;
};
/** The usual arguments: tiny model, 40 examples, short template, few steps. */
const base = (out: string, ...more: string[]) => ["train", "--model", ws.model, "--data", ws.data, "--out", out, "--template", ws.template, "--steps", "6", "--lr", "1e-2", ...more];
const stderrLines = (s: string) => s.trimEnd().split("\n");

describe("lowrank train", () => {
  it("trains and writes the adapter (PEFT format), metrics.jsonl, the loss plot and checkpoints", async () => {
    const out = newOut();
    const r = await runCli(ws.main, base(out, "--eval-every", "3", "--checkpoint-every", "3", "--r", "4", "--alpha", "8"));
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const lines = r.stdout.split("\n");
    expect(lines[0]).toMatch(/^trainable params: [\d,]+ \|\| all params: [\d,]+ \|\| trainable%: \d+\.\d{4}$/);
    expect(lines[1]).toBe('data: Alpaca records ({"instruction", "input", "output"}), the loss on the output and EOS');
    expect(lines[2]).toBe("training on 38 examples (eval: 2) for 6 steps on cpu");
    expect(r.stdout).toMatch(/^step 1\/6 \(16%\) \| loss \d+\.\d{4} \| lr 1\.00e-2 \| grad norm \d+\.\d{3} \| [\d,]+ tok\/s \| elapsed \d:\d\d \| ETA \d:\d\d$/m);
    expect(r.stdout).toMatch(/^step 3: eval loss \d+\.\d{4}$/m);
    expect(r.stdout).toContain(`step 6: checkpoint saved to ${join(out, "checkpoints", "step-6")}`);
    expect(r.stdout).toMatch(/^done: 6 steps, loss \d+\.\d{4}, eval loss \d+\.\d{4}$/m);

    const config = JSON.parse(readFileSync(join(out, "adapter_config.json"), "utf8"));
    expect(config).toMatchObject({ r: 4, lora_alpha: 8, target_modules: expect.arrayContaining(["c_attn", "c_proj"]), task_type: "CAUSAL_LM", fan_in_fan_out: true });
    const peft = PeftModel.fromPretrainedSync(GPT2LMHeadModel.fromPretrainedSync(ws.model), out);
    expect(peft.loraLayers.size).toBe(6); // attn.c_attn, attn.c_proj, mlp.c_proj in 2 layers
    peft.dispose();

    const metrics = readFileSync(join(out, "metrics.jsonl"), "utf8").trimEnd().split("\n").map((l) => JSON.parse(l) as StepRecord);
    expect(metrics.map((m) => m.step)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(metrics.filter((m) => m.evalLoss !== undefined).map((m) => m.step)).toEqual([3, 6]);
    for (const m of metrics) expect(Object.keys(m)).toEqual(expect.arrayContaining(["step", "epoch", "loss", "lr", "gradNorm", "tokens", "tokensPerSec", "elapsed"]));
    expect(readFileSync(join(out, "loss.svg"), "utf8")).toMatch(/<svg [^>]*>.*Training loss/s);
    expect(readFileSync(join(out, "loss.png")).subarray(1, 4).toString()).toBe("PNG");
    expect(listCheckpoints(join(out, "checkpoints")).map((c) => c.step)).toEqual([3, 6]);
  });

  it("--target lm_head puts LoRA on GPT-2's tied head and saves its base weight, as PEFT does", async () => {
    const out = newOut();
    const r = await runCli(ws.main, base(out, "--target", "c_attn,lm_head", "--steps", "2"));
    expect(r.code).toBe(0);
    const peft = PeftModel.fromPretrainedSync(GPT2LMHeadModel.fromPretrainedSync(ws.model), out);
    expect([...peft.loraLayers.keys()]).toContain("lm_head");
    peft.dispose();
    // PEFT's save_embedding_layers: a config naming lm_head saves the wrapped head's base weight too
    expect(readSafetensors(join(out, "adapter_model.safetensors")).names).toEqual(
      expect.arrayContaining(["base_model.model.lm_head.base_layer.weight", "base_model.model.lm_head.lora_A.weight", "base_model.model.lm_head.lora_B.weight"]),
    );
  });

  it("--help explains every option and the exit codes", async () => {
    const r = await runCli(ws.main, ["train", "--help"]);
    expect(r.code).toBe(0);
    for (const flag of ["--model", "--data", "--out", "--r", "--alpha", "--dropout", "--target", "--rslora", "--steps", "--epochs", "--batch-size",
      "--grad-accum", "--lr", "--weight-decay", "--warmup", "--schedule", "--max-length", "--packing", "--eval-split", "--eval-every",
      "--checkpoint-every", "--keep-checkpoints", "--seed", "--device", "--dtype", "--gradient-checkpointing", "--resume", "--quiet", "--template"]) {
      expect(r.stdout).toContain(flag);
    }
    expect(r.stdout).toContain("Exit codes: 0 done, 1 error, 2 bad command line, 130 interrupted.");
  });

  it("bad command lines exit with 2 and say what is wrong", async () => {
    const cases: [string[], RegExp][] = [
      [["train", "--data", ws.data, "--out", newOut()], /error: required option '--model <dir\|name>' not specified/],
      [base(newOut(), "--epochs", "2"), /^lowrank train: give --steps or --epochs, not both$/m],
      [base(newOut(), "--lr", "fast"), /error: option '--lr <x>' argument 'fast' is invalid\. expected a number in \(0, Infinity\]\./],
      [base(newOut(), "--schedule", "cyclic"), /argument 'cyclic' is invalid\. expected one of constant, linear, cosine\./],
      [base(newOut(), "--dtype", "float16"), /argument 'float16' is invalid\. expected one of float32, bfloat16\./],
      [base(newOut(), "--bogus"), /error: unknown option '--bogus'/],
      [base(newOut(), "--target", "c_attn,q_proj"), /^lowrank train: --target: no module named "q_proj" in the model; modules LoRA can wrap: wte, wpe, c_attn, c_proj, c_fc, lm_head \(or "all-linear"\)$/m],
      [base(newOut(), "--max-length", "4096"), /^lowrank train: --max-length 4096 exceeds the model's n_positions \(128\)$/m],
      [base(newOut(), "--template", "nope.txt"), /^lowrank train: --template nope\.txt: not "alpaca" and no such file$/m],
    ];
    const results = await Promise.all(cases.map(([args]) => runCli(ws.main, args)));
    cases.forEach(([args, message], i) => {
      expect(results[i]!.stderr, args.join(" ")).toMatch(message);
      expect(results[i]!.code, args.join(" ")).toBe(2);
    });
  });

  it("missing or unusable inputs exit with 1 and one line naming the file", async () => {
    const noModel = join(ws.dir, "no-such-model");
    const empty = file("empty.jsonl", "\n\n");
    const allBad = file("bad.jsonl", '{"instruction": "x"\nnot json\n[1]\n');
    const cases: [string[], string][] = [
      [["train", "--model", noModel, "--data", ws.data, "--out", newOut()], `lowrank train: --model ${noModel}: no such directory`],
      [["train", "--model", "test/fixtures/gpt2-tiny", "--data", ws.data, "--out", newOut()],
        "lowrank train: --model test/fixtures/gpt2-tiny: no tokenizer (tokenizer.json, or vocab.json + merges.txt); copy the base model's tokenizer files into it"],
      [base(newOut()).map((a) => (a === ws.data ? empty : a)), `lowrank train: ${empty}: empty data file (no JSONL records)`],
      [base(newOut()).map((a) => (a === ws.data ? allBad : a)),
        `lowrank train: ${allBad}: no valid example in 3 records (first problem: line 1: invalid JSON: Expected ',' or '}' after property value in JSON at position 19)`],
      [base(newOut()).map((a) => (a === ws.data ? join(ws.dir, "missing.jsonl") : a)), `lowrank train: ${join(ws.dir, "missing.jsonl")}: data file not found`],
    ];
    const results = await Promise.all(cases.map(([args]) => runCli(ws.main, args)));
    cases.forEach(([args, message], i) => {
      expect(stderrLines(results[i]!.stderr), args.join(" ")).toEqual([message]);
      expect(results[i]!.code, args.join(" ")).toBe(1);
    });
  });

  it("when no example fits --max-length, says so and suggests the fix", async () => {
    const r = await runCli(ws.main, base(newOut(), "--max-length", "8"));
    expect(r.code).toBe(1);
    expect(stderrLines(r.stderr)).toEqual([
      expect.stringMatching(new RegExp(`^lowrank train: ${ws.data}: no example fits maxLength 8 \\(38 skipped, prompt too long; first: .*\\); use a shorter prompt template \\(e\\.g\\. the template\\.txt a model folder ships\\) or a larger maxLength$`)),
    ]);
  });

  it("skips corrupt lines, reporting each with its line number and a count", async () => {
    const good = readFileSync(ws.data, "utf8").split("\n").slice(0, 12);
    const mixed = file("mixed.jsonl", [good[0], "{oops", ...good.slice(1, 6), '{"instruction": "no output"}', ...good.slice(6), "[]", ""].join("\n"));
    const r = await runCli(ws.main, base(newOut(), "--steps", "1").map((a) => (a === ws.data ? mixed : a)));
    expect(r.code).toBe(0);
    expect(stderrLines(r.stderr)).toEqual([
      "warning: 3 bad lines skipped:",
      `  ${mixed}:2: invalid JSON: Expected property name or '}' in JSON at position 1`,
      `  ${mixed}:8: "output" is missing`,
      `  ${mixed}:15: expected a JSON object, got an array`,
    ]);
  });

  it("refuses to overwrite a run in --out unless told to --resume it", async () => {
    const out = newOut();
    expect((await runCli(ws.main, base(out, "--steps", "2"))).code).toBe(0);
    const again = await runCli(ws.main, base(out, "--steps", "2"));
    expect(again.code).toBe(2);
    expect(stderrLines(again.stderr)[0]).toBe(`lowrank train: --out ${out} already holds a training run; add --resume to continue it, or choose another --out`);
    // the finished run resumes to "done" at once; other settings are refused
    const resumed = await runCli(ws.main, base(out, "--steps", "2", "--resume"));
    expect(resumed.code).toBe(0);
    expect(resumed.stdout).toContain(`resuming at step 2 from ${join(out, "checkpoints", "step-2")}`);
    const changed = await runCli(ws.main, base(out, "--steps", "2", "--lr", "1e-3", "--resume"));
    expect(changed.code).toBe(1);
    expect(stderrLines(changed.stderr)).toEqual([
      `lowrank train: resume from ${join(out, "checkpoints", "step-2")}: the run's settings differ from the checkpoint's: trainer.lr was 0.01, now 0.001; resume with the same settings, or start a new run in another output folder`,
    ]);
  });

  it("Ctrl-C finishes the step, saves a checkpoint, says how to resume and exits with 130", async () => {
    const out = newOut();
    let sent = false;
    const { done } = startCli(ws.main, base(out, "--steps", "100000", "--checkpoint-every", "0", "--log-every", "1"), (text, child) => {
      if (!sent && /^step 3\//m.test(text)) {
        sent = true;
        child.kill("SIGINT");
      }
    });
    const r = await done;
    expect(r.code).toBe(130);
    expect(r.stderr).toContain("interrupt: finishing the current step, then saving a checkpoint (Ctrl-C again to quit at once)");
    const m = /^interrupted at step (\d+)\/100000 \(loss \d+\.\d{4}\)$/m.exec(r.stdout);
    expect(m, r.stdout).not.toBeNull();
    const step = Number(m![1]);
    const dir = join(out, "checkpoints", `step-${step}`);
    expect(r.stdout).toContain(`checkpoint: ${dir}\n`);
    // run as `node <script>` (no npm, not on PATH): the command names the script as run
    expect(r.stdout).toContain(`resume with: node ${relative(CLI_CWD, ws.main)} ${base(out, "--steps", "100000", "--checkpoint-every", "0", "--log-every", "1").join(" ")} --resume\n`);
    expect(readCheckpoint(dir).state.step).toBe(step);
    expect(readCheckpoint(dir).state.history).toHaveLength(step);
  });

  it("SIGTERM is handled like Ctrl-C: the step finishes, a checkpoint is saved, exit code 130", async () => {
    const out = newOut();
    const args = base(out, "--steps", "100000", "--checkpoint-every", "0", "--log-every", "1");
    let sent = false;
    const { done } = startCli(ws.main, args, (text, child) => {
      if (!sent && /^step 3\//m.test(text)) {
        sent = true;
        child.kill("SIGTERM");
      }
    });
    const r = await done;
    expect(r.signal).toBeNull();
    expect(r.code).toBe(130);
    expect(r.stderr).toContain("SIGTERM received: finishing the current step, then saving a checkpoint");
    const step = Number(/^interrupted at step (\d+)\/100000/m.exec(r.stdout)?.[1]);
    expect(step).toBeGreaterThanOrEqual(3);
    expect(r.stdout).toContain(`checkpoint: ${join(out, "checkpoints", `step-${step}`)}\n`);
    expect(r.stdout).toContain(`resume with: node ${relative(CLI_CWD, ws.main)} ${args.join(" ")} --resume\n`);
    expect(readCheckpoint(join(out, "checkpoints", `step-${step}`)).state.step).toBe(step);
    expect(existsSync(join(out, LOCK_FILE))).toBe(false); // released on the way out
  });

  it("one run per --out: a second train or --resume on a folder still training is refused with the first one's pid", async () => {
    const out = newOut();
    const firstArgs = base(out, "--steps", "100000", "--checkpoint-every", "2", "--log-every", "1");
    let ready!: () => void;
    const started = new Promise<void>((res) => (ready = res));
    const first = startCli(ws.main, firstArgs, (text) => {
      if (/checkpoint saved to/.test(text)) ready();
    });
    await started;
    const pid = first.child.pid!;
    expect(readFileSync(join(out, LOCK_FILE), "utf8")).toMatch(new RegExp(`^pid ${pid}$`, "m"));
    const [again, resumed] = await Promise.all([runCli(ws.main, base(out, "--steps", "100000")), runCli(ws.main, [...firstArgs, "--resume"])]);
    first.child.kill("SIGINT");
    const firstResult = await first.done;
    const refusal = `lowrank train: ${out} is in use by another training run (pid ${pid}, lock ${join(out, LOCK_FILE)}); wait for it to finish or stop it, or choose another output folder (if no such process trains there, delete the lock file)`;
    // without --resume, a folder with a checkpoint is refused before the lock is looked at
    expect(again.code).toBe(2);
    expect(stderrLines(again.stderr)[0]).toMatch(/already holds a training run/);
    expect(resumed.code).toBe(1);
    expect(stderrLines(resumed.stderr)).toEqual([refusal]);
    // the first run was not disturbed: one metrics line per step, in order
    expect(firstResult.code).toBe(130);
    const steps = readFileSync(join(out, "metrics.jsonl"), "utf8").trimEnd().split("\n").map((l) => (JSON.parse(l) as StepRecord).step);
    expect(steps).toEqual(Array.from({ length: steps.length }, (_, i) => i + 1));
  });

  it("a second run that starts before the first's first checkpoint is refused by the lock too", async () => {
    const out = newOut();
    let ready!: () => void;
    const started = new Promise<void>((res) => (ready = res));
    const first = startCli(ws.main, base(out, "--steps", "100000", "--checkpoint-every", "0", "--log-every", "1"), (text) => {
      if (/^step 2\//m.test(text)) ready();
    });
    await started;
    const second = await runCli(ws.main, base(out, "--steps", "3"));
    first.child.kill("SIGINT");
    await first.done;
    expect(second.code).toBe(1);
    expect(stderrLines(second.stderr)).toEqual([expect.stringContaining(`is in use by another training run (pid ${first.child.pid}, lock `)]);
  });

  it("takes over a stale lock left by a killed process", async () => {
    const out = newOut();
    // a pid that certainly ended: a child that has exited
    const dead = await new Promise<number>((res) => {
      const c = spawn(process.execPath, ["-e", ""]);
      c.on("exit", () => res(c.pid!));
    });
    mkdirSync(out, { recursive: true });
    writeFileSync(join(out, LOCK_FILE), `pid ${dead}\nhost x\nstarted 2026-01-01T00:00:00.000Z\n`);
    const r = await runCli(ws.main, base(out, "--steps", "2"));
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(existsSync(join(out, "adapter_model.safetensors"))).toBe(true);
    expect(existsSync(join(out, LOCK_FILE))).toBe(false);
  });

  it("a NaN/Inf loss stops the run with exit code 1, naming the step and keeping the last good checkpoint", async () => {
    const out = newOut();
    const r = await runCli(ws.main, base(out, "--steps", "20", "--lr", "1e30", "--schedule", "constant", "--checkpoint-every", "1", "--keep-checkpoints", "1"));
    expect(r.code).toBe(1);
    const m = /^lowrank train: (loss|gradient norm) is (NaN|-?Infinity) at step (\d+) \(lr 1\.00e\+30\); training stopped without applying this update\. Lower the learning rate \(or use warmup\) and start again\. The last good checkpoint is kept: (.*)$/.exec(r.stderr.trimEnd());
    expect(m, r.stderr).not.toBeNull();
    const step = Number(m![3]);
    expect(m![4]).toBe(join(out, "checkpoints", `step-${step - 1}`));
    expect(listCheckpoints(join(out, "checkpoints")).map((c) => c.step)).toEqual([step - 1]);
    expect(existsSync(join(out, "loss.png"))).toBe(true);
    expect(existsSync(join(out, "adapter_model.safetensors"))).toBe(false);
  });
});
