import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { LOWRANK_PEFT_VERSION, LoraConfig, type LoraConfigInit } from "../../lib/peft/config.js";
import type { ModuleInfo } from "../../lib/nn/shapes.js";
import { planInjection } from "../../lib/peft/targets.js";

const FIXTURES = join(import.meta.dirname, "..", "fixtures");
const PEFT_TINY = join(FIXTURES, "peft-tiny");
const format = JSON.parse(readFileSync(join(FIXTURES, "peft-format.json"), "utf8")) as {
  configs: Record<string, { args: Record<string, unknown>; text: string }>;
};
const tinyModules = (
  JSON.parse(readFileSync(join(FIXTURES, "peft-targets.json"), "utf8")).models["gpt2-tiny"].modules as {
    name: string; kind: ModuleInfo["kind"]; is_output_head?: boolean;
  }[]
).map((m) => ({ name: m.name, kind: m.kind, isOutputHead: m.is_output_head === true }));

/** PEFT's snake_case keyword arguments as LoraConfig options. */
const camel = (args: Record<string, unknown>): LoraConfigInit =>
  Object.fromEntries(Object.entries(args).map(([k, v]) => [k.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase()), v]));

/** Every adapter_config.json PEFT wrote for the fixtures. */
const FIXTURE_CONFIGS = [
  "adapter-c_attn",
  "adapter-rslora",
  "adapter-all-linear",
  "adapter-patterns",
  "adapter-two",
  "adapter-two/second",
  "train-c_attn/adapter-after-5-steps",
];
const readConfigText = (dir: string) => readFileSync(join(PEFT_TINY, dir, "adapter_config.json"), "utf8");

/** Collects warnings instead of emitting them. */
function collect(): { warnings: string[]; onWarning: (m: string) => void } {
  const warnings: string[] = [];
  return { warnings, onWarning: (m) => warnings.push(m) };
}

describe("LoraConfig defaults and adapter_config.json", () => {
  it("has PEFT's defaults and writes PEFT's default file byte for byte (peft_version aside)", () => {
    const c = new LoraConfig();
    expect(c).toMatchObject({
      r: 8, loraAlpha: 8, loraDropout: 0, targetModules: null, excludeModules: null, fanInFanOut: false, bias: "none",
      useRslora: false, modulesToSave: null, initLoraWeights: true, layersToTransform: null, layersPattern: null,
      rankPattern: {}, alphaPattern: {}, useDora: false, loraBias: false, taskType: null, inferenceMode: false,
      baseModelNameOrPath: null, revision: null, autoMapping: null, peftType: "LORA",
    });
    expect(c.toJSON().peft_version).toBe(LOWRANK_PEFT_VERSION);
    expect(c.with({ peftVersion: "0.21.0" }).toJSONString()).toBe(format.configs.default!.text);
  });

  it("writes every config Python's LoraConfig saved byte for byte, and reads it back unchanged", () => {
    for (const [name, { args, text }] of Object.entries(format.configs)) {
      const made = new LoraConfig({ ...camel(args), peftVersion: "0.21.0" });
      expect(made.toJSONString(), name).toBe(text);
      const { warnings, onWarning } = collect();
      expect(LoraConfig.fromJSON(JSON.parse(text), { onWarning }).toJSONString(), name).toBe(text);
      expect(warnings, name).toEqual([]);
    }
  });

  it("reads every adapter_config.json PEFT saved for the fixtures and writes it back byte for byte", () => {
    for (const dir of FIXTURE_CONFIGS) {
      const text = readConfigText(dir);
      const { warnings, onWarning } = collect();
      const c = LoraConfig.fromJSON(JSON.parse(text), { onWarning });
      expect(c.toJSONString(), dir).toBe(text);
      expect(c.peftVersion).toBe("0.21.0");
      expect(c.fanInFanOut).toBe(true);
      expect(warnings).toEqual([]);
    }
    const allLinear = LoraConfig.fromJSON(JSON.parse(readConfigText("adapter-all-linear")));
    expect(allLinear).toMatchObject({ r: 2, loraAlpha: 4, taskType: "CAUSAL_LM", baseModelNameOrPath: "gpt2-tiny" });
    expect(allLinear.targetModules).toHaveLength(8);
  });

  it("builds the fixtures' configs from PEFT's arguments and, after target selection, saves PEFT's files", () => {
    for (const dir of ["adapter-c_attn", "adapter-rslora", "adapter-all-linear", "adapter-patterns"]) {
      const ref = JSON.parse(readFileSync(join(PEFT_TINY, dir, "reference.json"), "utf8"));
      const config = new LoraConfig({ ...camel(ref.lora_config_args), taskType: ref.task_type, baseModelNameOrPath: "gpt2-tiny" });
      const saved = planInjection(tinyModules, config, { onWarning: () => {} }).config.toJSON();
      const peft = JSON.parse(readConfigText(dir));
      expect(Object.keys(saved), dir).toEqual(Object.keys(peft));
      for (const key of Object.keys(peft)) {
        if (key === "peft_version") {
          // ours says lowrank wrote it (PEFT does not check it when loading LoRA configs)
          expect(saved[key]).toBe(LOWRANK_PEFT_VERSION);
        } else if (key === "target_modules") {
          // PEFT holds a set and writes it in Python's arbitrary set order
          expect(new Set(saved[key] as string[]), dir).toEqual(new Set(peft[key]));
        } else {
          expect(saved[key], `${dir}: ${key}`).toEqual(peft[key]);
        }
      }
    }
  });

  it("saves inference_mode true, like PeftModel.save_pretrained, whatever the config says", () => {
    const c = new LoraConfig({ inferenceMode: false });
    expect(c.inferenceMode).toBe(false);
    expect(c.toJSON().inference_mode).toBe(true);
  });

  it("is immutable; with() returns a validated copy", () => {
    const c = new LoraConfig({ r: 4, targetModules: ["c_attn"] });
    expect(() => {
      (c as { r: number }).r = 5;
    }).toThrow();
    expect(c.with({ r: 16 }).r).toBe(16);
    expect(c.with({ r: 16 }).targetModules).toEqual(["c_attn"]);
    expect(() => c.with({ r: 0 })).toThrow(/r must be a positive integer/);
  });
});

describe("LoraConfig.fromJSON", () => {
  it("fills keys missing from older configs with the defaults", () => {
    const { warnings, onWarning } = collect();
    const c = LoraConfig.fromJSON({ peft_type: "LORA", r: 16, lora_alpha: 32, target_modules: ["c_attn"] }, { onWarning });
    expect(c).toMatchObject({ r: 16, loraAlpha: 32, loraDropout: 0, bias: "none", useRslora: false, peftVersion: LOWRANK_PEFT_VERSION });
    expect(warnings).toEqual([]);
    expect(LoraConfig.fromJSON({ peft_type: "LORA", peft_version: null }).peftVersion).toBe(LOWRANK_PEFT_VERSION);
  });

  it("ignores unknown keys with one warning listing them, and explains enable_lora", () => {
    const { warnings, onWarning } = collect();
    const c = LoraConfig.fromJSON({ peft_type: "LORA", zeta: 1, alpha: 2, enable_lora: null, r: 4 }, { onWarning });
    expect(c.r).toBe(4);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain("alpha, enable_lora, zeta");
    const legacy = collect();
    LoraConfig.fromJSON({ peft_type: "LORA", enable_lora: [true, false, true] }, { onWarning: legacy.onWarning });
    expect(legacy.warnings).toHaveLength(1);
    expect(legacy.warnings[0]).toMatch(/enable_lora=\[true,false,true\] comes from PEFT <= 0\.2/);
  });

  it("requires peft_type LORA", () => {
    expect(() => LoraConfig.fromJSON({ r: 4 })).toThrow(/no "peft_type" key \(keys: r\)/);
    expect(() => LoraConfig.fromJSON({ peft_type: "IA3" })).toThrow(/PEFT method "IA3"; lowrank implements LoRA only/);
    expect(() => LoraConfig.fromJSON([])).toThrow(/expected the object parsed from adapter_config\.json/);
  });

  it("refuses variants lowrank does not implement, naming the key and the value it needs", () => {
    expect(() => LoraConfig.fromJSON({ peft_type: "LORA", use_qalora: true })).toThrow(/use_qalora=true.*QALoRA.*needs use_qalora=false/);
    expect(() => LoraConfig.fromJSON({ peft_type: "LORA", target_parameters: ["w"] })).toThrow(/target_parameters/);
    expect(() => LoraConfig.fromJSON({ peft_type: "LORA", layer_replication: [[0, 2]] })).toThrow(/layer replication/);
    // inert keys take any value, as they do in PEFT while their feature is off
    expect(LoraConfig.fromJSON({ peft_type: "LORA", qalora_group_size: 64, megatron_core: "x" }).r).toBe(8);
  });

  it("explains PEFT-only initialisations: harmless ones vs ones that modified the base model", () => {
    expect(() => LoraConfig.fromJSON({ peft_type: "LORA", init_lora_weights: "eva" })).toThrow(/set "init_lora_weights": true/);
    expect(() => LoraConfig.fromJSON({ peft_type: "LORA", init_lora_weights: "corda" })).toThrow(/modified the base model/);
    const { warnings, onWarning } = collect();
    LoraConfig.fromJSON({ peft_type: "LORA", eva_config: { rho: 2 }, loftq_config: {} }, { onWarning });
    expect(warnings).toEqual([expect.stringMatching(/sets eva_config, used only by initialisations/)]);
    const rt = collect();
    LoraConfig.fromJSON({ peft_type: "LORA", runtime_config: { ephemeral_gpu_offload: false } }, { onWarning: rt.onWarning });
    expect(rt.warnings).toEqual([expect.stringMatching(/runtime_config/)]);
  });

  it("validates values read from the file like constructor options, naming the camelCase field", () => {
    expect(() => LoraConfig.fromJSON({ peft_type: "LORA", r: -1 })).toThrow(/LoraConfig: r must be a positive integer.*got -1/);
  });
});

describe("LoraConfig validation", () => {
  const cases: [LoraConfigInit, RegExp][] = [
    [{ r: 0 }, /r must be a positive integer .*; got 0\./],
    [{ r: 2.5 }, /r must be a positive integer/],
    [{ r: "8" as unknown as number }, /r must be a positive integer .*got "8"/],
    [{ loraAlpha: NaN }, /loraAlpha must be a finite number.*got NaN/],
    [{ loraDropout: 1 }, /loraDropout must be a probability in \[0, 1\).*got 1/],
    [{ loraDropout: -0.1 }, /loraDropout/],
    [{ bias: "some" as "none" }, /bias must be "none", "all" or "lora_only"; got "some"/],
    [{ targetModules: [] }, /targetModules must name at least one module/],
    [{ targetModules: ["c_attn", ""] }, /targetModules must be a list of non-empty module names/],
    [{ targetModules: "(" }, /targetModules: "\(" is not a valid regular expression/],
    [{ targetModules: ".*(?>x)" }, /atomic group/],
    [{ modulesToSave: "lm_head" as unknown as string[] }, /modulesToSave must be a list of module names, not a single string/],
    [{ initLoraWeights: "kaiming" as "gaussian" }, /initLoraWeights must be true, false, "gaussian", "pissa", "pissa_niter_<iterations>".*got "kaiming"/],
    [{ initLoraWeights: "loftq" as "gaussian" }, /PEFT initialisation lowrank does not implement/],
    [{ initLoraWeights: "pissa_niter_" as "pissa" }, /initLoraWeights must be/],
    [{ layersPattern: "h" }, /layersPattern "h" was given without layersToTransform/],
    [{ targetModules: ".*c_attn", layersToTransform: [0] }, /layersToTransform cannot be used when targetModules is a string/],
    [{ targetModules: ".*c_attn", layersPattern: "h" }, /layersPattern cannot be used when targetModules is a string/],
    [{ layersToTransform: [0, -1] }, /layersToTransform must be a layer index or a list/],
    [{ rankPattern: { c_attn: 0 } }, /rankPattern\["c_attn"\] must be a positive integer rank; got 0/],
    [{ alphaPattern: { c_attn: Infinity } }, /alphaPattern\["c_attn"\] must be a finite number/],
    [{ rankPattern: { "(?i)c_attn": 4 } }, /global flags/],
    [{ loraBias: true, initLoraWeights: "gaussian" }, /loraBias=true is only supported with initLoraWeights true or false/],
    [{ loraBias: true, useDora: true }, /loraBias=true is not supported with DoRA/],
    [{ taskType: "CAUSAL" as "CAUSAL_LM" }, /taskType must be one of SEQ_CLS, .*CAUSAL_LM/],
    [{ useDora: 1 as unknown as boolean }, /useDora must be true or false/],
    [{ lora_alpha: 16 } as LoraConfigInit, /unknown option "lora_alpha"; did you mean "loraAlpha"\?.*fromJSON/],
    [{ rank: 16 } as LoraConfigInit, /unknown option "rank"; known options: r, loraAlpha/],
  ];
  for (const [init, message] of cases) {
    it(`refuses ${JSON.stringify(init)}`, () => {
      expect(() => new LoraConfig(init)).toThrow(message);
    });
  }

  it("accepts what PEFT accepts at the edges", () => {
    expect(new LoraConfig({ layersPattern: [], targetModules: ["c_attn"] }).layersPattern).toEqual([]);
    expect(new LoraConfig({ layersToTransform: [], targetModules: ["c_attn"] }).layersToTransform).toEqual([]);
    expect(new LoraConfig({ initLoraWeights: "pissa_niter_16" }).initLoraWeights).toBe("pissa_niter_16");
    expect(new LoraConfig({ excludeModules: [] }).excludeModules).toEqual([]);
    expect(new LoraConfig({ targetModules: ["c_attn", "c_attn", "c_proj"] }).targetModules).toEqual(["c_attn", "c_proj"]);
    expect(new LoraConfig({ targetModules: "ALL-LINEAR" }).targetModules).toBe("ALL-LINEAR");
  });
});

describe("scaling per module", () => {
  it("equals the scaling PEFT gave each module in the fixtures", () => {
    for (const dir of ["adapter-c_attn", "adapter-rslora", "adapter-all-linear", "adapter-patterns"]) {
      const ref = JSON.parse(readFileSync(join(PEFT_TINY, dir, "reference.json"), "utf8"));
      const config = LoraConfig.fromJSON(JSON.parse(readConfigText(dir)));
      for (const [key, s] of Object.entries(ref.scaling as Record<string, { default: number }>)) {
        expect(config.scalingFor(key.replace(/^base_model\.model\./, "")), `${dir} ${key}`).toBe(s.default);
      }
    }
  });

  it("uses alpha/r, alpha/sqrt(r) with rsLoRA, and the first matching pattern key", () => {
    const c = new LoraConfig({ r: 8, loraAlpha: 16, rankPattern: { "h.0.attn.c_attn": 4, c_attn: 2 }, alphaPattern: { "c_.*": 1 } });
    expect(c.rankFor("transformer.h.0.attn.c_attn")).toBe(4);
    expect(c.rankFor("transformer.h.10.attn.c_attn")).toBe(2); // "h.0.attn.c_attn" must match whole segments
    expect(c.rankFor("transformer.h.0.mlp.c_fc")).toBe(8);
    expect(c.alphaFor("transformer.h.0.mlp.c_fc")).toBe(1);
    expect(c.alphaFor("lm_head")).toBe(16);
    expect(c.scalingFor("lm_head")).toBe(2);
    expect(c.with({ useRslora: true }).scalingFor("lm_head")).toBe(16 / Math.sqrt(8));
  });
});
