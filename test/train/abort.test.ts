// AbortSignal in training: fineTune (and the Trainer under it) stop at the next step boundary when
// the signal is aborted, write the checkpoint a Ctrl-C writes, resolve with status "stopped", and
// the run resumes to the curve of an uninterrupted one.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import {
  DataLoader, GPT2LMHeadModel, GPT2Tokenizer, LoraConfig, Trainer, fineTune, getPeftModel, loadInstructionData, memory, readCheckpoint, type FineTuneOptions, type StepRecord,
} from "../../lib/index.js";
import { SHORT_TEMPLATE, tinyTrainingFolder } from "../cli/helpers.js";

const tiny = tinyTrainingFolder("lowrank-abort-");
let dir: string, model: string, data: string;
beforeAll(() => ({ dir, model, data } = tiny));

const STEPS = 6;
const options = (out: string, extra: Partial<FineTuneOptions> = {}): FineTuneOptions => ({
  model, data, out, steps: STEPS, r: 2, alpha: 4, lr: 1e-2, batchSize: 4, evalSplit: 0, checkpointEvery: 0, seed: 3, device: "cpu", progress: { quiet: true }, ...extra,
});
const metrics = (out: string) => readFileSync(join(out, "metrics.jsonl"), "utf8").trimEnd().split("\n").map((l) => JSON.parse(l) as StepRecord);

describe("fineTune and the Trainer with an AbortSignal", () => {
  it("an abort mid-run finishes the step under way, writes its checkpoint, resolves \"stopped\", and the run resumes to the uninterrupted curve", async () => {
    const whole = await fineTune(options(join(dir, "whole")));
    whole.model.dispose();
    const before = memory().cpu.tensors;

    const out = join(dir, "aborted");
    const controller = new AbortController();
    const stopped = await fineTune(options(out, {
      signal: controller.signal,
      // aborted from another event-loop turn while step 3 is done, as a signal handler or a timer would
      onStart: ({ trainer }) => trainer.on("step", (r) => r.step === 3 && setImmediate(() => controller.abort())),
    }));
    expect(stopped.status).toBe("stopped");
    expect(stopped.step).toBe(3);
    expect(stopped.adapterDir).toBeNull();
    expect(stopped.checkpoint).toBe(join(out, "checkpoints", "step-3"));
    expect(readCheckpoint(stopped.checkpoint!).state.step).toBe(3);
    expect(existsSync(join(out, "adapter_model.safetensors"))).toBe(false);
    expect(existsSync(join(out, ".lowrank.lock"))).toBe(false); // the folder is free for the resume
    stopped.model.dispose();
    expect(memory().cpu.tensors).toBe(before);

    const resumed = await fineTune(options(out, { resume: true }));
    expect(resumed.status).toBe("completed");
    resumed.model.dispose();
    // bit-identical losses: the abort lost nothing
    expect(metrics(out).map((r) => r.loss)).toEqual(metrics(join(dir, "whole")).map((r) => r.loss));
    expect(readFileSync(join(out, "adapter_model.safetensors"))).toEqual(readFileSync(join(dir, "whole", "adapter_model.safetensors")));
  });

  it("an abort from a timer stops the run at a step boundary with that step's checkpoint", async () => {
    const out = join(dir, "timer");
    const controller = new AbortController();
    let steps = 0;
    const run = fineTune(options(out, { steps: 100_000, signal: controller.signal, onStart: ({ trainer }) => trainer.on("step", () => steps++ === 1 && setTimeout(() => controller.abort(), 20)) }));
    const result = await run;
    expect(result.status).toBe("stopped");
    expect(result.step).toBeGreaterThanOrEqual(2);
    expect(result.step).toBeLessThan(100_000);
    expect(result.checkpoint).toBe(join(out, "checkpoints", `step-${result.step}`));
    expect(metrics(out)).toHaveLength(result.step);
    result.model.dispose();
  });

  it("a signal aborted before training starts runs no step and writes nothing to resume", async () => {
    const out = join(dir, "pre-aborted");
    const result = await fineTune(options(out, { signal: AbortSignal.abort() }));
    expect(result).toMatchObject({ status: "stopped", step: 0, checkpoint: null, adapterDir: null });
    expect(existsSync(join(out, "checkpoints", "step-1"))).toBe(false);
    result.model.dispose();
  });

  it("the Trainer takes the signal itself: it stops at the next step boundary with a checkpoint", async () => {
    const tokenizer = GPT2Tokenizer.fromPretrained(model);
    const peft = getPeftModel(await GPT2LMHeadModel.fromPretrained(model), new LoraConfig({ r: 2, loraAlpha: 4, targetModules: ["c_attn"], fanInFanOut: true }));
    const examples = await loadInstructionData(data, tokenizer, { template: SHORT_TEMPLATE, maxLength: 64 });
    const controller = new AbortController();
    const out = join(dir, "trainer");
    const trainer = new Trainer({
      model: peft, trainData: new DataLoader(examples.train, { batchSize: 4, tokenizer, seed: 1 }), maxSteps: 5, lr: 1e-2, outDir: out,
      progress: { quiet: true }, signal: controller.signal,
    });
    trainer.on("step", (r) => r.step === 2 && controller.abort());
    const result = await trainer.train();
    expect(result).toMatchObject({ status: "stopped", step: 2, checkpoint: join(out, "checkpoints", "step-2") });
    expect(readCheckpoint(result.checkpoint!).state.step).toBe(2);
    trainer.dispose();
    peft.dispose();
  });
});
