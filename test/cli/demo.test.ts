// `lowrank demo`, shortened (60 LoRA steps instead of 300, 10 eval examples instead of 100) on the
// bundled model, about 10 s: it prints PEFT's parameter line, the loss falls, the task goes from
// unsolved to solved, the merge check passes, and the adapter it saves loads with
// PeftModel.fromPretrained and reproduces the demo's own after-training answers.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { generate, GPT2LMHeadModel, GPT2Tokenizer, PeftModel, formatPrompt, resolveTemplate } from "../../lib/index.js";
import { DEMO_TEMPLATE, runDemo } from "../../lib/train/demo.js";
import { readJsonl, type AlpacaRecord } from "../../lib/train/data.js";

const MODEL = "data/demo/model";
const tmp = mkdtempSync(join(tmpdir(), "lowrank-demo-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** A stand-in for process.stdout that keeps what the progress display writes. */
function captureStream(): { stream: NodeJS.WriteStream; text: () => string } {
  let text = "";
  const stream = { isTTY: false, write: (s: string) => ((text += s), true) } as unknown as NodeJS.WriteStream;
  return { stream, text: () => text };
}

describe("lowrank demo", () => {
  it("bundles the model with its tokenizer and the template the demo uses", () => {
    for (const f of ["config.json", "model.safetensors", "vocab.json", "merges.txt", "README.md"]) expect(existsSync(join(MODEL, f))).toBe(true);
    expect(readFileSync(join(MODEL, "template.txt"), "utf8")).toBe(DEMO_TEMPLATE);
  });

  it("trains, prints the parameter line and a falling loss, passes the merge check, and saves an adapter that loads", async () => {
    const lines: string[] = [];
    const progress = captureStream();
    const out = join(tmp, "run");
    const result = await runDemo({
      device: "cpu", steps: 60, out, evalCount: 10, seed: 0, print: (l) => lines.push(l), progressMode: "plain", progressStream: progress.stream,
    });
    const printed = lines.join("\n");

    // PEFT's line; r=8 on c_attn, c_proj (attention and MLP) and c_fc of 4 layers, 128 wide: 4 x 16,384.
    expect(result.trainableLine).toMatch(/^trainable params: 65,536 \|\| all params: [\d,]+ \|\| trainable%: \d+\.\d{4}$/);
    expect(lines).toContain(result.trainableLine);

    // The loss falls, and the progress display printed it (plain lines, not a TTY).
    const losses = result.history.map((r) => r.loss!);
    expect(losses).toHaveLength(60);
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    expect(mean(losses.slice(-5))).toBeLessThan(0.1 * mean(losses.slice(0, 5)));
    expect(progress.text()).toMatch(/^step 1\/60 .*loss \d/m);
    expect(progress.text()).toMatch(/^step 60\/60 \(100%\)/m);
    expect(printed).toMatch(/loss [\d.]+ \(mean of the first \d+ steps\) -> [\d.]+/);

    // Before and after were measured on the same 10 eval examples and printed: the base model does
    // not know the task, the adapter has learned it (seed 0 gives 0/10 and 10/10 here).
    expect(result.before.total).toBe(10);
    expect(result.after.total).toBe(10);
    expect(result.before.right).toBe(0);
    expect(result.after.right).toBeGreaterThanOrEqual(8);
    expect(printed).toContain(`exact match on eval.jsonl before: ${result.before.right}/10`);
    expect(printed).toContain(`exact match on eval.jsonl after: ${result.after.right}/10`);

    // Merged weights give the adapter's logits, and the adapter changed them.
    expect(result.mergeOk).toBe(true);
    // float32 reordering only: about 1e-5 (1.1e-5 with seed 0), as the README says; a wrong merge moves them by ~adapterEffect
    expect(result.mergeMaxDiff).toBeLessThan(1e-4);
    expect(result.adapterEffect).toBeGreaterThan(0.1);
    expect(printed).toMatch(/^  merge check: max \|merged - unmerged\| = \S+.*: OK$/m);

    // The adapter folder, in PEFT's format, loads onto a fresh base model and answers as the demo's model did.
    expect(result.adapterDir).toBe(join(out, "adapter"));
    for (const f of ["adapter_config.json", "adapter_model.safetensors"]) expect(existsSync(join(result.adapterDir, f))).toBe(true);
    expect(existsSync(join(out, "loss.svg"))).toBe(true);
    const peft = PeftModel.fromPretrainedSync(GPT2LMHeadModel.fromPretrainedSync(MODEL), result.adapterDir);
    try {
      expect(peft.trainableParametersLine()).toMatch(/^trainable params: 0 \|\|/); // loaded for inference
      const tokenizer = GPT2Tokenizer.fromPretrained(MODEL);
      const template = resolveTemplate(DEMO_TEMPLATE);
      const records = (await readJsonl("data/demo/eval.jsonl")).examples.slice(0, 10) as AlpacaRecord[];
      let right = 0;
      for (const r of records) {
        const ids = generate(peft.model, tokenizer.encode(formatPrompt(template, r.instruction, r.input)), { maxNewTokens: 12, eosTokenId: tokenizer.eosTokenId });
        if (tokenizer.decode(ids.filter((t) => t !== tokenizer.eosTokenId)) === r.output) right++;
      }
      expect(right).toBe(result.after.right);
    } finally {
      peft.dispose();
    }
  });

  it("a run too short to move the logits passes the merge check and says the check proves little", async () => {
    const lines: string[] = [];
    const result = await runDemo({ device: "cpu", steps: 1, out: join(tmp, "one-step"), evalCount: 1, quiet: false, print: (l: string) => lines.push(l) });
    expect(result.mergeOk).toBe(true);
    expect(result.adapterEffect).toBeLessThan(1e-3);
    expect(lines.join("\n")).toMatch(/merge check: .*: OK\n.*after 1 step the adapter barely moves the logits/);
  });

  it("runs again into the same folder, replacing the earlier run, but never over a training run's folder", async () => {
    const out = join(tmp, "run"); // the folder the test above filled
    const result = await runDemo({ device: "cpu", steps: 30, out, evalCount: 2, seed: 1, quiet: true, print: () => {} });
    expect(result.mergeOk).toBe(true);
    expect(readFileSync(join(out, "metrics.jsonl"), "utf8").trimEnd().split("\n")).toHaveLength(30);
    expect(existsSync(join(out, "checkpoints"))).toBe(false);
    // a folder holding a `lowrank train` run (checkpoints) is left alone
    const trainRun = join(tmp, "train-run");
    mkdirSync(join(trainRun, "checkpoints", "step-5"), { recursive: true });
    await expect(runDemo({ device: "cpu", steps: 2, out: trainRun, evalCount: 1, quiet: true, print: () => {} })).rejects.toThrow(`${trainRun} already holds a training run`);
    expect(existsSync(join(trainRun, "checkpoints", "step-5"))).toBe(true);
  });
});
