import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { LoraConfig } from "../../lib/peft/config.js";
import { adapterStateKey, parseAdapterStateKey } from "../../lib/peft/format.js";
import {
  countLoraParameters,
  findMinimalTargetModules,
  planInjection,
  selectTargets,
} from "../../lib/peft/targets.js";
import type { ModuleInfo, ModuleShape } from "../../lib/nn/shapes.js";

interface FixtureModule {
  name: string;
  kind: ModuleInfo["kind"];
  is_output_head?: boolean;
  tied_with?: string;
  in_features?: number;
  out_features?: number;
  num_embeddings?: number;
  embedding_dim?: number;
}
interface FixtureCase {
  config_args: Record<string, unknown>;
  error?: { type: string; message: string };
  targets?: string[];
  per_module?: Record<string, { r: number; lora_alpha: number; scaling: number }>;
  lora_params?: number;
  saved_keys?: Record<string, number[]>;
  config_after?: { target_modules: string[] | string; fan_in_fan_out: boolean };
  warnings?: string[];
}
const fixture = JSON.parse(readFileSync(join(import.meta.dirname, "..", "fixtures", "peft-targets.json"), "utf8")) as {
  models: Record<string, { modules: FixtureModule[]; cases: Record<string, FixtureCase> }>;
};

const shapesOf = (mods: FixtureModule[]): ModuleShape[] =>
  mods.map((m) => ({
    name: m.name,
    kind: m.kind,
    isOutputHead: m.is_output_head === true,
    ...(m.tied_with === undefined ? {} : { tiedWith: m.tied_with }),
    inFeatures: m.in_features,
    outFeatures: m.out_features,
    numEmbeddings: m.num_embeddings,
    embeddingDim: m.embedding_dim,
  }));
const tiny = shapesOf(fixture.models["gpt2-tiny"]!.modules);
const gpt2 = shapesOf(fixture.models["gpt2-124m"]!.modules);

/** The config the fixture script gave PEFT: LoraConfig(task_type="CAUSAL_LM", lora_dropout=0.0, **args). */
const configFor = (c: FixtureCase) =>
  LoraConfig.fromJSON({ peft_type: "LORA", task_type: "CAUSAL_LM", lora_dropout: 0, ...c.config_args }, { onWarning: () => {} });

/** What a warning is about, so PEFT's and lowrank's wordings can be compared. */
function warningKind(message: string): string {
  if (message.includes("target module is `Conv1D`")) return "fan_in_fan_out→true";
  if (message.includes("target module is `torch.nn.Linear`")) return "fan_in_fan_out→false";
  if (message.includes("no modules were excluded")) return "unused exclude_modules";
  if (message.includes("tie_word_embeddings")) return "tied weights";
  const m = /following (rank_pattern|alpha_pattern) keys/.exec(message);
  if (m) return `unused ${m[1]}`;
  return `other: ${message}`;
}

/** PEFT's error, as the lowrank error it corresponds to. */
function expectedError(e: { type: string; message: string }): RegExp {
  if (e.message.startsWith("Target modules ")) return /^Target modules .* not found in the base model\. Please check the target modules and try again\./;
  if (e.message.startsWith("All modules were excluded")) return /^All modules were excluded/;
  if (e.message.startsWith("No modules were targeted")) return /^No modules were targeted for adaptation/;
  // "Target module GPT2Block(...) is not supported" (the fixture keeps its first line)
  if (e.message.startsWith("Target module ")) return /LoRA cannot wrap/;
  throw new Error(`unmapped PEFT error: ${e.type}: ${e.message}`);
}

for (const [modelName, model] of Object.entries(fixture.models)) {
  const modules = shapesOf(model.modules);
  describe(`target selection on ${modelName} matches PEFT 0.21`, () => {
    for (const [caseName, c] of Object.entries(model.cases)) {
      it(caseName, () => {
        const config = configFor(c);
        const warnings: string[] = [];
        const run = () => planInjection(modules, config, { modelType: "gpt2", onWarning: (m) => warnings.push(m) });
        if (c.error) {
          expect(run).toThrow(expectedError(c.error));
          return;
        }
        const plan = run();
        expect(plan.targets).toEqual(c.targets);
        expect(selectTargets(modules, config, { modelType: "gpt2", onWarning: () => {} })).toEqual(c.targets);

        // the config as PEFT holds it afterwards (and saves it)
        const after = c.config_after!;
        if (typeof after.target_modules === "string") expect(plan.config.targetModules).toBe(after.target_modules);
        else expect(new Set(plan.config.targetModules)).toEqual(new Set(after.target_modules));
        expect(plan.config.fanInFanOut).toBe(after.fan_in_fan_out);
        // the same warnings, except that PEFT spots tied weights by name (lm_head, embed_tokens) and
        // so misses GPT-2's wte, which lowrank reports from the tie itself
        const ours = new Set(warnings.map(warningKind));
        const peft = new Set(c.warnings!.map(warningKind));
        if (plan.targets.includes("transformer.wte")) peft.add("tied weights");
        expect(ours).toEqual(peft);

        // per-module rank, alpha and scaling
        for (const [name, p] of Object.entries(c.per_module!)) {
          expect(plan.config.rankFor(name), name).toBe(p.r);
          expect(plan.config.alphaFor(name), name).toBe(p.lora_alpha);
          expect(plan.config.scalingFor(name), name).toBe(p.scaling);
        }

        // parameter count and the LoRA keys save_pretrained writes
        expect(countLoraParameters(modules, config, { modelType: "gpt2", onWarning: () => {} }).total).toBe(c.lora_params);
        const kinds = new Map(modules.map((m) => [m.name, m.kind]));
        const keys = plan.targets.flatMap((name) => {
          const tensors =
            kinds.get(name) === "embedding"
              ? (["lora_embedding_A", "lora_embedding_B"] as const)
              : plan.config.loraBias
                ? (["lora_A", "lora_B", "lora_B.bias"] as const)
                : (["lora_A", "lora_B"] as const);
          return [...tensors, ...(plan.config.useDora ? (["lora_magnitude_vector"] as const) : [])].map((t) => adapterStateKey(name, t));
        });
        const peftLoraKeys = Object.keys(c.saved_keys!).filter((k) => parseAdapterStateKey(k).kind === "lora");
        expect(new Set(keys)).toEqual(new Set(peftLoraKeys));
      });
    }
  });
}

describe("parameter counts", () => {
  const quiet = { onWarning: () => {} };
  it("GPT-2 124M: 294,912 for r=8 on c_attn and 1,622,016 for r=16 on c_attn + c_proj", () => {
    const r8 = countLoraParameters(gpt2, new LoraConfig({ r: 8, loraAlpha: 16, targetModules: ["c_attn"] }), quiet);
    expect(r8.total).toBe(294_912);
    expect(r8.perModule).toHaveLength(12);
    expect(r8.perModule[0]).toEqual({ name: "transformer.h.0.attn.c_attn", r: 8, params: 8 * (768 + 2304) });
    const r16 = countLoraParameters(gpt2, new LoraConfig({ r: 16, loraAlpha: 32, targetModules: ["c_attn", "c_proj"] }), quiet);
    expect(r16.total).toBe(1_622_016);
  });

  it("needs the shapes of the targeted modules", () => {
    const noShape: ModuleShape[] = [{ name: "a.lin", kind: "linear", inFeatures: 4 }];
    expect(() => countLoraParameters(noShape, new LoraConfig({ targetModules: ["lin"] }))).toThrow(
      /module "a\.lin" \(linear\) needs a positive integer outFeatures; got undefined/,
    );
  });
});

describe("target selection errors and edge cases", () => {
  const quiet = { onWarning: () => {} };

  it("lists the modules that could be targeted when nothing matches", () => {
    expect(() => selectTargets(tiny, new LoraConfig({ targetModules: ["q_proj", "v_proj"] }), quiet)).toThrow(
      /Target modules \["q_proj","v_proj"\] not found in the base model\..*by last name: wte, wpe, c_attn, c_proj, c_fc, lm_head; e\.g\. "transformer\.wte"/,
    );
    expect(() =>
      selectTargets(tiny, new LoraConfig({ targetModules: ["c_attn"], layersToTransform: [5], layersPattern: "h" }), quiet),
    ).toThrow(/Note: You specified 'layers_to_transform': \[5\]\. You also specified 'layers_pattern': "h"\./);
  });

  it("names every selected module LoRA cannot wrap, with its kind", () => {
    expect(() => selectTargets(tiny, new LoraConfig({ targetModules: "transformer\\.h\\.1\\.mlp\\..*" }), quiet)).toThrow(
      /selects 2 modules LoRA cannot wrap: "transformer\.h\.1\.mlp\.act" \(other\), "transformer\.h\.1\.mlp\.dropout" \(other\)/,
    );
  });

  it("needs a model type for the default targets", () => {
    expect(() => selectTargets(tiny, new LoraConfig(), quiet)).toThrow(/targetModules is null and no model type was given.*gpt2/);
    expect(() => selectTargets(tiny, new LoraConfig(), { ...quiet, modelType: "no-such-model" })).toThrow(/model type "no-such-model" has no default.*gpt2, llama, mistral, qwen2/);
    expect(selectTargets(tiny, new LoraConfig(), { ...quiet, modelType: "gpt2" })).toEqual([
      "transformer.h.0.attn.c_attn",
      "transformer.h.1.attn.c_attn",
    ]);
  });

  it("skips a classification head for all-linear when the model has no output embedding (SEQ_CLS)", () => {
    const mods: ModuleInfo[] = [
      { name: "body.lin", kind: "linear" },
      { name: "score", kind: "linear" },
    ];
    const seq = new LoraConfig({ targetModules: "all-linear", taskType: "SEQ_CLS" });
    expect(selectTargets(mods, seq, quiet)).toEqual(["body.lin"]);
    expect(selectTargets(mods, seq.with({ taskType: "CAUSAL_LM" }), quiet)).toEqual(["body.lin", "score"]);
  });

  it("warns when the adapter includes a module whose weight is tied to another", () => {
    const warnings: string[] = [];
    selectTargets(tiny, new LoraConfig({ targetModules: ["lm_head"] }), { onWarning: (m) => warnings.push(m) });
    expect(warnings).toEqual([expect.stringMatching(/"lm_head" \(tied with "transformer\.wte"\).*Merging the adapter changes the shared weight/)]);
  });

  it("refuses loraBias on embeddings, and malformed module lists", () => {
    expect(() => selectTargets(tiny, new LoraConfig({ targetModules: ["wte"], loraBias: true }), quiet)).toThrow(
      /loraBias=true is not supported for embedding layers.*"transformer\.wte"/,
    );
    const dup: ModuleInfo[] = [
      { name: "a", kind: "linear" },
      { name: "a", kind: "linear" },
    ];
    expect(() => selectTargets(dup, new LoraConfig({ targetModules: ["a"] }))).toThrow(/module "a" is listed twice/);
    expect(() => selectTargets([{ name: "", kind: "linear" }], new LoraConfig({ targetModules: ["a"] }))).toThrow(/leave the root module out/);
    expect(() => selectTargets([{ name: "a", kind: "conv2d" as "linear" }], new LoraConfig({ targetModules: ["a"] }))).toThrow(
      /kind "conv2d"; expected linear, conv1d, embedding or other/,
    );
  });

  it("condenses long target lists to suffixes as PEFT does", () => {
    // the example from PEFT's _find_minimal_target_modules docstring
    const targets = [...Array(100).keys()].flatMap((i) => [`model.decoder.layers.${i}.self_attn.q_proj`, `model.decoder.layers.${i}.self_attn.v_proj`]);
    const others = [...Array(100).keys()].map((i) => `model.encoder.layers.${i}.self_attn.k_proj`);
    expect(new Set(findMinimalTargetModules(targets, others))).toEqual(new Set(["q_proj", "v_proj"]));
  });
});
