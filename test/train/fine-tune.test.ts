// fineTune(), the library entry point behind `lowrank train`, `sweep` and the demo: from a model
// folder and a JSONL file to a saved adapter, metrics, chart and checkpoints; the template the
// model folder ships is the default; a value that does not fit the model is a FineTuneOptionError.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { fineTune, FineTuneOptionError, GPT2LMHeadModel, PeftModel, type FineTuneStart } from "../../lib/index.js";
import { tinyTrainingFolder } from "../cli/helpers.js";

const tiny = tinyTrainingFolder("lowrank-fine-tune-");
let dir: string, model: string, data: string;
beforeAll(() => ({ dir, model, data } = tiny));

describe("fineTune", () => {
  it("dtype bfloat16: bf16 frozen weights, float32 adapter, losses within 2e-2 of float32's", async () => {
    const run = async (dtype: "float32" | "bfloat16") => {
      const out = join(dir, `dtype-${dtype}`);
      const r = await fineTune({ model, data, out, steps: 3, r: 2, batchSize: 4, evalSplit: 0, seed: 5, device: "cpu", dtype, progress: { quiet: true } });
      const weights = r.model.namedParameters().filter(([n]) => n.endsWith("c_attn.base_layer.weight")).map(([, p]) => p.dtype);
      const adapters = r.model.trainableParameters().map((p) => p.dtype);
      r.model.dispose();
      const losses = readFileSync(join(out, "metrics.jsonl"), "utf8").trimEnd().split("\n").map((l) => (JSON.parse(l) as { loss: number }).loss);
      return { weights, adapters, losses };
    };
    const f32 = await run("float32"), bf = await run("bfloat16");
    expect(bf.weights.length).toBeGreaterThan(0);
    expect(new Set(bf.weights)).toEqual(new Set(["bfloat16"]));
    expect(new Set(bf.adapters)).toEqual(new Set(["float32"]));
    bf.losses.forEach((l, i) => expect(Math.abs(l - f32.losses[i]!) / f32.losses[i]!, `step ${i + 1}`).toBeLessThan(2e-2));
  });

  it("without a dtype: float32 weights on the CPU (bfloat16 on CUDA: test/gpu/fine-tune.test.ts)", async () => {
    const r = await fineTune({ model, data, out: join(dir, "dtype-default"), steps: 1, r: 2, batchSize: 4, evalSplit: 0, device: "cpu", progress: { quiet: true } });
    const weights = r.model.namedParameters().filter(([n]) => n.endsWith("c_attn.base_layer.weight")).map(([, p]) => p.dtype);
    r.model.dispose();
    expect(weights.length).toBeGreaterThan(0);
    expect(new Set(weights)).toEqual(new Set(["float32"]));
  });

  it("gradientCheckpointing: the same losses and adapter file as without it", async () => {
    const run = async (gradientCheckpointing: boolean) => {
      const out = join(dir, `recompute-${gradientCheckpointing}`);
      const r = await fineTune({ model, data, out, steps: 3, r: 2, batchSize: 4, evalSplit: 0, seed: 5, device: "cpu", gradientCheckpointing, progress: { quiet: true } });
      r.model.dispose();
      const losses = readFileSync(join(out, "metrics.jsonl"), "utf8").trimEnd().split("\n").map((l) => (JSON.parse(l) as { loss: number }).loss);
      return { losses, adapter: readFileSync(join(out, "adapter_model.safetensors")) };
    };
    const plain = await run(false), recomputed = await run(true);
    expect(recomputed.losses).toEqual(plain.losses);
    expect(recomputed.adapter.equals(plain.adapter)).toBe(true);
  });

  it("trains and saves the adapter, metrics, chart and checkpoints, using the model folder's template", async () => {
    const out = join(dir, "run");
    let start: FineTuneStart | undefined;
    const result = await fineTune({
      model, data, out, steps: 4, r: 2, alpha: 4, lr: 1e-2, evalSplit: 0, checkpointEvery: 2, device: "cpu", progress: { quiet: true },
      onStart: (run) => (start = run),
    });
    try {
      expect(start!.template).toEqual({ spec: join(model, "template.txt"), source: "model", path: join(model, "template.txt") });
      expect(start!.data.train).toHaveLength(24);
      expect(result.status).toBe("completed");
      expect(result.step).toBe(4);
      expect(result.adapterDir).toBe(out);
      expect(result.charts).toEqual([join(out, "loss.svg"), join(out, "loss.png")]);
      expect(readFileSync(join(out, "metrics.jsonl"), "utf8").trimEnd().split("\n")).toHaveLength(4);
      expect(existsSync(join(out, "checkpoints", "step-4", "trainer_state.json"))).toBe(true);
      expect(result.model.trainableParametersLine()).toMatch(/^trainable params: [\d,]+/);
      const loaded = PeftModel.fromPretrainedSync(GPT2LMHeadModel.fromPretrainedSync(model), out);
      expect(loaded.peftConfig.get("default")!.r).toBe(2);
      loaded.dispose();
    } finally {
      result.model.dispose();
    }
    // the folder now holds a run: only a resume continues it
    await expect(fineTune({ model, data, out, steps: 4 })).rejects.toThrow(`${out} already holds a training run; resume it (resume: true), or choose another output folder`);
  });

  it("reports values that do not fit the model as FineTuneOptionError, worded for any option name", async () => {
    const err = await fineTune({ model, data, out: join(dir, "bad"), steps: 1, target: ["q_proj"], device: "cpu" }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FineTuneOptionError);
    expect((err as FineTuneOptionError).option).toBe("target");
    expect((err as Error).message).toBe('target: no module named "q_proj" in the model; modules LoRA can wrap: wte, wpe, c_attn, c_proj, c_fc, lm_head (or "all-linear")');
    expect((err as FineTuneOptionError).describe("--target")).toMatch(/^--target: no module named "q_proj"/);
    expect(existsSync(join(dir, "bad"))).toBe(false); // nothing left behind
  });
});
