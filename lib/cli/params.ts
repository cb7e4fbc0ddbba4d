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
import { formatThousands } from "../io/pyformat.js";
import type { ModuleShape } from "../nn/shapes.js";
import { EXIT, newCommand, runAction, UsageError } from "./common.js";

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
  config: GPT2Config;
  modules: ModuleShape[];
  parameters: number;
}

/** Reads DIR/config.json (and nothing else) into GPT-2's module shapes, with errors that name --model. */
export function readModelShapes(dir: string): ModelShapes {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new Error(`--model ${dir}: no such directory`);
  const path = join(dir, "config.json");
  if (!existsSync(path)) throw new Error(`--model ${dir}: no config.json in it; a Hugging Face GPT-2 folder has config.json and model.safetensors`);
  let config: GPT2Config;
  try {
    config = GPT2Config.fromHF(JSON.parse(readFileSync(path, "utf8")) as Record<string, unknown>);
  } catch (err) {
    throw new Error(`--model ${dir}: ${path}: ${(err as Error).message}`, { cause: err });
  }
  return { source: dir, config, modules: gpt2ModuleShapes(config), parameters: gpt2ParameterCount(config) };
}

export function presetShapes(name: GPT2Preset): ModelShapes {
  const config = gpt2PresetConfig(name);
  return { source: `preset ${name}`, config, modules: gpt2ModuleShapes(config), parameters: gpt2ParameterCount(config) };
}

/** Refuses target names that match no module (PEFT would silently skip them when another name matches). */
export function checkTargets(flag: string, spec: TargetSpec, modules: readonly ModuleShape[]): void {
  const names = modules.map((m) => m.name);
  const unknown = unknownTargets(spec, names);
  if (unknown.length === 0) return;
  const wrappable = [...new Set(modules.filter((m) => m.kind !== "other").map((m) => m.name.split(".").pop()!))];
  throw new UsageError(`${flag}: no module named ${unknown.map((u) => `"${u}"`).join(", ")} in the model; modules LoRA can wrap: ${wrappable.join(", ")} (or "all-linear")`);
}

interface ParamsFlags {
  model?: string;
  config: GPT2Preset;
  ranks: number[];
  target: string;
  targetSets?: TargetSpec[];
  json?: boolean;
}

export function paramsCommand(): Command {
  return newCommand("params")
    .description("count the parameters LoRA trains at each rank and target set (PEFT's numbers), from the model's shapes alone")
    .addOption(new Option("--model <dir>", "a GPT-2 folder in Hugging Face layout; only its config.json is read").conflicts("config"))
    .addOption(new Option("--config <preset>", "a GPT-2 size instead of a folder: 124m, 355m, 774m, 1558m (gpt2 … gpt2-xl) or tiny (the test model)").choices(GPT2_PRESET_NAMES).default("124m"))
    .addOption(new Option("--ranks <list>", "comma-separated LoRA ranks, e.g. 4,8,16,64").argParser(parseRanks).default(parseRanks(DEFAULT_RANKS), DEFAULT_RANKS))
    .addOption(new Option("--target <names>", 'modules to adapt, comma-separated, e.g. c_attn,c_proj, or "all-linear"').default("c_attn,c_proj").conflicts("targetSets"))
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
few KB). GPT-2 124M at r=8 on c_attn: 294,912 / 124,734,720 / 0.2364.

Examples:
  lowrank params --config 124m --ranks 4,8,16,64 --target c_attn
  lowrank params --model ./gpt2 --ranks 8,16 --target-sets "c_attn;c_attn,c_proj;all-linear"
  lowrank params --config 1558m --ranks 16 --json`,
    )
    .action(runAction("params", async (flags: ParamsFlags) => params(flags)));
}

function params(flags: ParamsFlags): number {
  const model = flags.model !== undefined ? readModelShapes(flags.model) : presetShapes(flags.config);
  const targetSets = flags.targetSets ?? [parseTargetSpec(flags.target)];
  const flag = flags.targetSets ? "--target-sets" : "--target";
  for (const set of targetSets) {
    if (set.length === 0) throw new UsageError(`${flag}: give at least one module name, e.g. c_attn,c_proj`);
    checkTargets(flag, set, model.modules);
  }
  const rows = parameterTable({ modules: model.modules, baseParameters: model.parameters, ranks: flags.ranks, targetSets, modelType: "gpt2" });
  const c = model.config;
  if (flags.json) {
    const info = { source: model.source, parameters: model.parameters, nLayer: c.nLayer, nEmbd: c.nEmbd, nInner: c.innerDim, vocabSize: c.vocabSize, nPositions: c.nPositions };
    console.log(JSON.stringify({ model: info, rows }, null, 2));
    return EXIT.ok;
  }
  console.log(`GPT-2 (${model.source}): ${formatThousands(model.parameters)} parameters, ${c.nLayer} layers, n_embd ${c.nEmbd}, vocab ${formatThousands(c.vocabSize)}`);
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
