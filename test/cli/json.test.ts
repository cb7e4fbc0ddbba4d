// --json for scripts: train, merge and generate print one JSON document on stdout and nothing else
// (progress and messages go to stderr); the numbers are those of the files the run wrote and of
// the library calls the commands make. (params --json: test/cli/params.test.ts.)
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generate, Generator, GPT2LMHeadModel, GPT2Tokenizer, PeftModel } from "../../lib/index.js";
import type { StepRecord } from "../../lib/train/metrics.js";
import { runCli, workspace } from "./helpers.js";

let ws: Awaited<ReturnType<typeof workspace>>;
let adapter: string;
let trained: Awaited<ReturnType<typeof runCli>>;
beforeAll(async () => {
  ws = await workspace("lowrank-cli-json-");
  adapter = join(ws.dir, "adapter");
  trained = await runCli(ws.main, ["train", "--model", ws.model, "--data", ws.data, "--out", adapter, "--template", ws.template, "--steps", "4", "--lr", "2e-2", "--eval-every", "2", "--log-every", "1", "--json"]);
});
afterAll(() => ws?.cleanup());

describe("lowrank train --json", () => {
  it("prints one summary whose numbers are metrics.jsonl's, with the output paths; progress goes to stderr", () => {
    expect(trained.code, trained.stderr).toBe(0);
    const out = JSON.parse(trained.stdout) as Record<string, any>;
    const metrics = readFileSync(join(adapter, "metrics.jsonl"), "utf8").trimEnd().split("\n").map((l) => JSON.parse(l) as StepRecord);
    const last = metrics.at(-1)!;
    expect(out).toMatchObject({
      status: "completed", steps: 4, totalSteps: 4, lastLoss: last.loss, evalLoss: last.evalLoss, tokens: last.tokens, trainSeconds: last.elapsed,
      evals: [{ step: 2, evalLoss: metrics[1]!.evalLoss }, { step: 4, evalLoss: last.evalLoss }],
      out: adapter, metrics: join(adapter, "metrics.jsonl"), checkpoint: join(adapter, "checkpoints", "step-4"), resume: null,
    });
    expect(out.tokensPerSec).toBeCloseTo(last.tokens / last.elapsed, 6);
    expect(out.finalLoss).toBe(last.loss); // the last 10% of 4 steps is the last step
    for (const path of [out.adapter.config, out.adapter.weights, out.lossChart.svg, out.lossChart.png]) expect(existsSync(path), path).toBe(true);
    // the human lines are all on stderr
    expect(trained.stderr).toMatch(/^trainable params: /m);
    expect(trained.stderr).toMatch(/^step 1\/4 \(25%\) \| loss /m);
    expect(trained.stderr).toMatch(/^step 2: eval loss \d+\.\d{4}$/m);
  });
});

describe("lowrank merge --json", () => {
  it("prints the written files and the check's numbers", async () => {
    const merged = join(ws.dir, "merged");
    const r = await runCli(ws.main, ["merge", "--model", ws.model, "--adapter", adapter, "--out", merged, "--json"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toBe("");
    const out = JSON.parse(r.stdout) as { files: { config: string; weights: string; copied: string[] }; check: Record<string, number | boolean> };
    expect(out).toMatchObject({ model: ws.model, adapter, out: merged, files: { config: join(merged, "config.json"), weights: join(merged, "model.safetensors") } });
    expect(out.files.copied).toEqual(["tokenizer.json", "vocab.json", "merges.txt"].map((f) => join(merged, f)));
    for (const path of [out.files.config, out.files.weights, ...out.files.copied]) expect(existsSync(path), path).toBe(true);
    expect(out.check).toMatchObject({ sequences: 4, tokens: 32, passed: true });
    expect(out.check.maxDiff).toBeLessThanOrEqual(out.check.tolerance as number);
    expect(out.check.adapterEffect).toBeGreaterThan(100 * (out.check.maxDiff as number));
  });
});

describe("lowrank generate --json", () => {
  it("prints the prompt, the text, the token ids and why it stopped, as generate() gives them", async () => {
    const tok = GPT2Tokenizer.fromPretrained(ws.model);
    const peft = PeftModel.fromPretrainedSync(GPT2LMHeadModel.fromPretrainedSync(ws.model), adapter);
    const promptText = "Q: Move the first word to the end. net,button,moon\nA: ";
    const expected = (max: number) => generate(peft, tok.encode(promptText), { maxNewTokens: max, eosTokenId: tok.eosTokenId, generator: new Generator(0) });
    const args = ["generate", "--model", ws.model, "--adapter", adapter, "--template", ws.template, "--prompt", "Move the first word to the end.", "--input", "net,button,moon", "--json"];
    const [short, long] = await Promise.all([runCli(ws.main, [...args, "--max-new-tokens", "3"]), runCli(ws.main, [...args, "--max-new-tokens", "1000"])]);
    for (const r of [short, long]) {
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toBe("");
    }
    const a = JSON.parse(short.stdout) as Record<string, any>;
    const ids = expected(3);
    expect(ids).not.toContain(tok.eosTokenId);
    expect(a).toEqual({
      prompt: "Move the first word to the end.", input: "net,button,moon", chatTemplate: null, promptText, promptTokenIds: tok.encode(promptText),
      text: tok.decode(ids, { skipSpecialTokens: true }), tokenIds: ids, stopReason: "max-new-tokens",
    });
    // 1000 new tokens do not fit 128 positions: it ends at the end-of-text token or when the positions are used up
    const b = JSON.parse(long.stdout) as { tokenIds: number[]; promptTokenIds: number[]; stopReason: string };
    expect(b.tokenIds).toEqual(expected(1000));
    if (b.stopReason === "eos") expect(b.tokenIds.at(-1)).toBe(tok.eosTokenId);
    else expect([b.stopReason, b.promptTokenIds.length + b.tokenIds.length]).toEqual(["context-full", 128]);
    peft.dispose();
  });
});
