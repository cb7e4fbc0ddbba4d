// `lowrank params`: what LoRA trains at each rank and target set, before training anything: the
// trainable parameters, the total PEFT reports, the share, and the adapter's size on disk.
// Counts come from module shapes (countLoraParameters), so no weight is read or allocated.
import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { Command, InvalidArgumentError, Option } from "commander";
import { parameterTable, parseTargetSpec, unknownTargets, type TargetSpec } from "../analysis/params.js";
import { formatTable } from "../analysis/table.js";
import { GPT2Config } from "../models/gpt2/config.js";
import { GPT2_PRESET_NAMES, gpt2ModuleShapes, gpt2ParameterCount, gpt2PresetConfig, type GPT2Preset } from "../models/gpt2/shapes.js";
import { LLAMA_MODEL_TYPES, LlamaConfig } from "../models/llama/config.js";
import { LLAMA_PRESET_NAMES, LLAMA_PRESETS, llamaModuleShapes, llamaPresetConfig, type LlamaPreset } from "../models/llama/shapes.js";
import { defaultTargets } from "../train/fine-tune.js";
import { formatThousands } from "../io/pyformat.js";
import type { ModuleShape } from "../nn/shapes.js";
import { EXIT, newCommand, resolveModelFlag, runAction, UsageError } from "./common.js";

/** The ranks the chapter compares. */
export const DEFAULT_RANKS = "4,8,16,64";

/**
 * A parser for a comma-separated list of positive integers (--ranks, --top-k). Duplicates are
 * refused: they would repeat a row, a column or a training run.
 */
export function positiveIntList(noun: string, example: string): (value: string) => number[] {
  return (value) => {
    const parts = value.split(",").map((s) => s.trim());
    const bad = parts.find((p) => !/^\d+$/.test(p) || Number(p) < 1 || !Number.isSafeInteger(Number(p)));
    if (bad !== undefined) throw new InvalidArgumentError(`"${bad}" is not a ${noun}; expected integers >= 1 separated by commas, e.g. ${example}.`);
    const values = parts.map(Number);
    const twice = values.find((v, i) => values.indexOf(v) !== i);
    if (twice !== undefined) throw new InvalidArgumentError(`${noun} ${twice} is listed twice.`);
    return values;
  };
}

/** --ranks, e.g. "4,8,16,64". */
export const parseRanks = positiveIntList("rank", DEFAULT_RANKS);

/** --target-sets: target sets separated by ";", each a --target value. */
function parseTargetSets(value: string): TargetSpec[] {
  const sets = value.split(";").map((s) => s.trim());
  if (sets.some((s) => parseTargetSpec(s).length === 0)) {
    throw new InvalidArgumentError('expected target sets separated by ";", each module names separated by ",", e.g. "c_attn;c_attn,c_proj;all-linear".');
  }
  return sets.map(parseTargetSpec);
}

/** The model whose shapes are counted: from a preset or from a checkpoint's config.json. */
export interface ModelShapes {
  /** How the user named it: "preset 124m" or the folder. */
  source: string;
  /** config.json's model_type. */
  modelType: string;
  config: GPT2Config | LlamaConfig;
  modules: ModuleShape[];
  parameters: number;
}

/** The architectures by model type, as the first line of the table names them. */
const FAMILY: Record<string, string> = { gpt2: "GPT-2", llama: "Llama", mistral: "Mistral", qwen2: "Qwen2", qwen3: "Qwen3" };

function shapesOf(source: string, config: GPT2Config | LlamaConfig): ModelShapes {
  if (config instanceof GPT2Config) return { source, modelType: "gpt2", config, modules: gpt2ModuleShapes(config), parameters: gpt2ParameterCount(config) };
  return { source, modelType: config.modelType, config, modules: llamaModuleShapes(config), parameters: config.parameterCount };
}

/**
 * Reads DIR/config.json (and nothing else) into the module shapes of its model type (gpt2, llama,
 * mistral, qwen2, qwen3), with errors that name --model. DIR may be a Hugging Face name in the
 * local cache.
 */
export function readModelShapes(spec: string): ModelShapes {
  const dir = resolveModelFlag(spec);
  const path = join(dir, "config.json");
  if (!existsSync(path)) throw new Error(`--model ${spec}: no config.json in it; a Hugging Face model folder has config.json and model.safetensors`);
  try {
    const json = JSON.parse(readFileSync(path, "utf8")) as Record<string, unknown>;
    const type = json.model_type ?? "gpt2"; // as GPT2Config.fromHF, which reads a config without model_type as GPT-2
    if (type === "gpt2") return shapesOf(spec, GPT2Config.fromHF(json));
    if ((LLAMA_MODEL_TYPES as readonly unknown[]).includes(type)) return shapesOf(spec, LlamaConfig.fromHF(json));
    throw new Error(`model_type ${JSON.stringify(type)} is not one lowrank implements (${Object.keys(FAMILY).join(", ")})`);
  } catch (err) {
    throw new Error(`--model ${spec}: ${path}: ${(err as Error).message}`, { cause: err });
  }
}

export function presetShapes(name: Preset): ModelShapes {
  const config = (LLAMA_PRESET_NAMES as string[]).includes(name) ? llamaPresetConfig(name as LlamaPreset) : gpt2PresetConfig(name as GPT2Preset);
  return shapesOf(`preset ${name}`, config);
}

/** Refuses target names that match no module (PEFT would silently skip them when another name matches). */
export function checkTargets(flag: string, spec: TargetSpec, modules: readonly ModuleShape[]): void {
  const names = modules.map((m) => m.name);
  const unknown = unknownTargets(spec, names);
  if (unknown.length === 0) return;
  const wrappable = [...new Set(modules.filter((m) => m.kind !== "other").map((m) => m.name.split(".").pop()!))];
  throw new UsageError(`${flag}: no module named ${unknown.map((u) => `"${u}"`).join(", ")} in the model; modules LoRA can wrap: ${wrappable.join(", ")} (or "all-linear")`);
}

/** --config: a GPT-2 size or a published Llama-family model. */
type Preset = GPT2Preset | LlamaPreset;
const PRESET_NAMES: Preset[] = [...GPT2_PRESET_NAMES, ...LLAMA_PRESET_NAMES];

interface ParamsFlags {
  model?: string;
  config: Preset;
  ranks: number[];
  target?: string;
  targetSets?: TargetSpec[];
  json?: boolean;
}

export function paramsCommand(): Command {
  return newCommand("params")
    .description("count the parameters LoRA trains at each rank and target set (PEFT's numbers), from the model's shapes alone")
    .addOption(new Option("--model <dir|name>", "a model folder in Hugging Face layout (GPT-2, Llama, Mistral, Qwen2, Qwen3), or a name in the local Hugging Face cache; only its config.json is read").conflicts("config"))
    .addOption(new Option("--config <preset>", `a published model instead of a folder: GPT-2 124m, 355m, 774m, 1558m (gpt2 … gpt2-xl) or tiny (the test model); ${LLAMA_PRESET_NAMES.join(", ")} (their config.json)`).choices(PRESET_NAMES).default("124m"))
    .addOption(new Option("--ranks <list>", "comma-separated LoRA ranks, e.g. 4,8,16,64").argParser(parseRanks).default(parseRanks(DEFAULT_RANKS), DEFAULT_RANKS))
    .addOption(new Option("--target <names>", 'modules to adapt, comma-separated, e.g. c_attn,c_proj or q_proj,v_proj, or "all-linear" (default: what lowrank train adapts: c_attn,c_proj for GPT-2, q_proj,v_proj for the Llama family)').conflicts("targetSets"))
    .option("--target-sets <sets>", 'several target sets to compare, separated by ";", e.g. "c_attn;c_attn,c_proj;all-linear"', parseTargetSets)
    .option("--json", "print JSON (model and one object per row) instead of the table")
    .addHelpText(
      "after",
      `
Columns: trainable = the adapter's parameters (A: r×in and B: out×r per adapted matrix);
all = base model + adapter, and trainable% = 100·trainable/all, exactly as PEFT's
print_trainable_parameters prints them; of full ΔW = trainable as a share of the adapted
matrices themselves (what full fine-tuning of those matrices would train: r·(in+out) vs in·out);
adapter MB = float32 tensor data of adapter_model.safetensors, in 10^6 bytes (plus a header of a
few KB). GPT-2 124M at r=8 on c_attn: 294,912 / 124,734,720 / 0.2364. The Llama-family presets
count ${Object.keys(LLAMA_PRESETS).map((n) => `${n} ${formatThousands(llamaPresetConfig(n as LlamaPreset).parameterCount)}`).join(", ")} parameters
(tied embeddings counted once, as PyTorch and PEFT count them).

Examples:
  lowrank params --config 124m --ranks 4,8,16,64 --target c_attn
  lowrank params --config llama-3.2-1b --ranks 8,16 --target-sets "q_proj,v_proj;all-linear"
  lowrank params --model ./gpt2 --ranks 8,16 --target-sets "c_attn;c_attn,c_proj;all-linear"
  lowrank params --config 1558m --ranks 16 --json`,
    )
    .action(runAction("params", async (flags: ParamsFlags) => params(flags)));
}

function params(flags: ParamsFlags): number {
  const model = flags.model !== undefined ? readModelShapes(flags.model) : presetShapes(flags.config);
  const targetSets = flags.targetSets ?? [flags.target === undefined ? [...defaultTargets(model.modelType)] : parseTargetSpec(flags.target)];
  const flag = flags.targetSets ? "--target-sets" : "--target";
  for (const set of targetSets) {
    if (set.length === 0) throw new UsageError(`${flag}: give at least one module name, e.g. c_attn,c_proj`);
    checkTargets(flag, set, model.modules);
  }
  const rows = parameterTable({ modules: model.modules, baseParameters: model.parameters, ranks: flags.ranks, targetSets, modelType: model.modelType });
  const c = model.config;
  if (flags.json) {
    const sizes = c instanceof GPT2Config
      ? { nLayer: c.nLayer, nEmbd: c.nEmbd, nInner: c.innerDim, vocabSize: c.vocabSize, nPositions: c.nPositions }
      : { numHiddenLayers: c.numHiddenLayers, hiddenSize: c.hiddenSize, intermediateSize: c.intermediateSize, numAttentionHeads: c.numAttentionHeads, numKeyValueHeads: c.kvHeads, vocabSize: c.vocabSize, tieWordEmbeddings: c.tieWordEmbeddings };
    console.log(JSON.stringify({ model: { source: model.source, modelType: model.modelType, parameters: model.parameters, ...sizes }, rows }, null, 2));
    return EXIT.ok;
  }
  const sizes = c instanceof GPT2Config
    ? `${c.nLayer} layers, n_embd ${c.nEmbd}`
    : `${c.numHiddenLayers} layers, hidden ${c.hiddenSize}, ${c.numAttentionHeads} heads (${c.kvHeads} key/value)`;
  console.log(`${FAMILY[model.modelType]} (${model.source}): ${formatThousands(model.parameters)} parameters, ${sizes}, vocab ${formatThousands(c.vocabSize)}`);
  console.log("");
  const columns = [
    { header: "targets" }, { header: "r", align: "right" }, { header: "modules", align: "right" }, { header: "trainable", align: "right" },
    { header: "all params", align: "right" }, { header: "trainable%", align: "right" }, { header: "of full ΔW", align: "right" }, { header: "adapter MB", align: "right" },
  ] as const;
  const cells = rows.map((r) => [
    r.targets, String(r.r), String(r.modules), formatThousands(r.trainable), formatThousands(r.all), r.trainablePercent, `${r.fullDeltaPercent}%`, (r.adapterBytes / 1e6).toFixed(2),
  ]);
  console.log(formatTable(columns, cells));
  return EXIT.ok;
}
