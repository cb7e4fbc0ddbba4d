// Parameter counts from shapes alone, checked against PEFT's own numbers (fixture made with PEFT
// 0.21) and against a real model with real adapters. The GPT-2 shapes themselves are checked in
// test/models/gpt2-shapes.test.ts.
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { parameterTable, parseTargetSpec, unknownTargets } from "../../lib/analysis/params.js";
import { gpt2ModuleShapes, gpt2ParameterCount, gpt2PresetConfig } from "../../lib/models/gpt2/shapes.js";
import { Generator, GPT2LMHeadModel, getPeftModel, LoraConfig } from "../../lib/index.js";

const FIXTURES = new URL("../fixtures/", import.meta.url);
const peft124m = JSON.parse(readFileSync(new URL("peft-tiny/params-124m.json", FIXTURES), "utf8")) as {
  cases: Record<string, { trainable: number; all: number; base_model_params: number; print_trainable_parameters: string; lora_config_args: { r: number; target_modules: string[] } }>;
};

describe("parameterTable", () => {
  const config = gpt2PresetConfig("124m");
  const modules = gpt2ModuleShapes(config);
  const baseParameters = gpt2ParameterCount(config);

  it("reproduces print_trainable_parameters for GPT-2 124M (PEFT 0.21)", () => {
    for (const c of Object.values(peft124m.cases)) {
      const [row] = parameterTable({ modules, baseParameters, ranks: [c.lora_config_args.r], targetSets: [c.lora_config_args.target_modules] });
      expect(row!.trainable).toBe(c.trainable);
      expect(row!.all).toBe(c.all);
      expect(row!.peftLine).toBe(c.print_trainable_parameters);
      expect(c.print_trainable_parameters).toContain(`trainable%: ${row!.trainablePercent}`);
    }
  });

  it("orders rows by target set, then rank, and derives the other columns from the counts", () => {
    const rows = parameterTable({ modules, baseParameters, ranks: [4, 64], targetSets: [["c_attn"], "all-linear"] });
    expect(rows.map((r) => [r.targets, r.r, r.modules])).toEqual([["c_attn", 4, 12], ["c_attn", 64, 12], ["all-linear", 4, 48], ["all-linear", 64, 48]]);
    for (const r of rows) {
      expect(r.adapterBytes).toBe(4 * r.trainable);
      expect(r.all).toBe(baseParameters + r.trainable);
    }
    // c_attn is 768 → 2304: an adapter of rank r holds r·(768 + 2304) of its 768·2304 entries
    expect(rows[0]!.fullDeltaPercent).toBe(((100 * 4 * (768 + 2304)) / (768 * 2304)).toFixed(2));
    expect(rows[1]!.trainable).toBe(16 * rows[0]!.trainable);
  });

  it("counts what a real PeftModel trains, for every kind of target set (tiny model)", () => {
    const tiny = gpt2PresetConfig("tiny");
    const sets = [["c_attn"], ["c_proj"], ["c_fc", "wte"], "all-linear"] as const;
    const rows = parameterTable({ modules: gpt2ModuleShapes(tiny), baseParameters: gpt2ParameterCount(tiny), ranks: [3], targetSets: sets });
    for (const [i, targetModules] of sets.entries()) {
      const peft = getPeftModel(new GPT2LMHeadModel(tiny, { generator: new Generator(1) }), new LoraConfig({ r: 3, targetModules, fanInFanOut: true }), "default", { onWarning: () => {} });
      const [trainable, all] = peft.getNbTrainableParameters();
      expect([rows[i]!.trainable, rows[i]!.all, rows[i]!.peftLine]).toEqual([trainable, all, peft.trainableParametersLine()]);
      peft.dispose();
    }
  });
});

describe("target specs", () => {
  const names = gpt2ModuleShapes(gpt2PresetConfig("tiny")).map((m) => m.name);
  it("parse lists and the all-linear keyword", () => {
    expect(parseTargetSpec(" c_attn, c_proj ,")).toEqual(["c_attn", "c_proj"]);
    expect(parseTargetSpec("all-linear")).toBe("all-linear");
  });
  it("report names that match no module, as suffixes after a dot", () => {
    expect(unknownTargets(["c_attn", "attn.c_proj", "c_atn", "proj"], names)).toEqual(["c_atn", "proj"]);
    expect(unknownTargets("all-linear", names)).toEqual([]);
  });
});
