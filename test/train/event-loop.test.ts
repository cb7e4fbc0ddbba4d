// The event loop stays responsive while lowrank trains and generates: the longest stall measured
// by perf_hooks.monitorEventLoopDelay during a training run (fineTune on the bundled demo model)
// and during a streamed generation stays within about two steps (two tokens) of work, while the
// whole run lasts many times that. A blocking generate() is measured the same way, to show the
// measurement sees a blocked loop.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { monitorEventLoopDelay, performance } from "node:perf_hooks";
import { afterAll, describe, expect, it } from "vitest";
import { GPT2LMHeadModel, GPT2Tokenizer, fineTune, generate, streamText } from "../../lib/index.js";

const DEMO = "data/demo/model";
const dir = mkdtempSync(join(tmpdir(), "lowrank-event-loop-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
// Slack for a garbage collection or the OS scheduling another process on a shared host.
const SLACK_MS = 50;

/** Measures the longest event-loop stall (ms) from start() to stop(). */
function stallMeter() {
  const h = monitorEventLoopDelay({ resolution: 1 });
  let started = 0;
  return {
    start() {
      started = performance.now();
      h.enable();
    },
    stop() {
      h.disable();
      return { stallMs: h.max / 1e6, totalMs: performance.now() - started };
    },
  };
}

/** The longest gap between successive moments (ms). */
const longestGap = (times: number[]) => Math.max(...times.slice(1).map((t, i) => t - times[i]!));

describe("the event loop during training and generation", () => {
  it("training (fineTune, 20 steps): no stall longer than two steps", { timeout: 300_000 }, async () => {
    const meter = stallMeter();
    const stepDone: number[] = [];
    let measured: { stallMs: number; totalMs: number } | undefined;
    const result = await fineTune({
      model: DEMO, data: "data/demo/train.jsonl", out: join(dir, "train"), steps: 20, r: 8, alpha: 16, target: ["c_attn", "c_proj", "c_fc"],
      batchSize: 16, lr: 2e-3, evalSplit: 0, checkpointEvery: 0, device: "cpu", progress: { quiet: true },
      onStart: ({ trainer }) => {
        // from just before the first step to the end of the last one
        meter.start();
        stepDone.push(performance.now());
        trainer.on("step", (r) => {
          stepDone.push(performance.now());
          if (r.step === 20) measured = meter.stop();
        });
      },
    });
    result.model.dispose();
    const step = longestGap(stepDone);
    const bound = 2 * step + SLACK_MS;
    const { stallMs, totalMs } = measured!;
    const report = `longest stall ${stallMs.toFixed(1)} ms, longest step ${step.toFixed(1)} ms, run ${totalMs.toFixed(0)} ms`;
    expect(stallMs, report).toBeLessThan(bound);
    expect(stallMs, report).toBeLessThan(totalMs / 4); // far from "blocked for the whole run"
  });

  it("generation: streamText stalls the loop for about a token at most; a blocking generate() for all of it", { timeout: 300_000 }, async () => {
    const model = GPT2LMHeadModel.fromPretrainedSync(DEMO);
    const tokenizer = GPT2Tokenizer.fromPretrained(DEMO);
    const prompt = "Repeat the list twice.\nrocket,pan,head,moon,net,button";
    const opts = { maxNewTokens: 100, eosTokenId: null }; // the prompt's ~20 tokens + 100 fit the model's 128 positions
    try {
      const tokenDone: number[] = [];
      const meter = stallMeter();
      meter.start();
      tokenDone.push(performance.now());
      for await (const _ of streamText(model, tokenizer, prompt, { ...opts, onToken: () => tokenDone.push(performance.now()) })) void _;
      const streamed = meter.stop();
      const token = longestGap(tokenDone);
      const bound = 2 * token + SLACK_MS;
      const report = `longest stall ${streamed.stallMs.toFixed(1)} ms, longest token ${token.toFixed(1)} ms, generation ${streamed.totalMs.toFixed(0)} ms`;
      expect(streamed.stallMs, report).toBeLessThan(bound);
      expect(streamed.stallMs, report).toBeLessThan(streamed.totalMs / 4);

      // the same generation, blocking: the meter sees the loop stalled for (nearly) all of it
      const blocking = stallMeter();
      blocking.start();
      await new Promise((r) => setTimeout(r, 10)); // let the meter's timer start
      generate(model, tokenizer.encode(prompt), opts);
      await new Promise((r) => setTimeout(r, 10));
      const blocked = blocking.stop();
      expect(blocked.stallMs, `blocking generate: stall ${blocked.stallMs.toFixed(1)} ms of ${blocked.totalMs.toFixed(0)} ms`).toBeGreaterThan(0.5 * (blocked.totalMs - 20));
    } finally {
      model.dispose();
    }
  });
});
