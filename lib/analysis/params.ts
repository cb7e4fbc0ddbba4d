// What a LoRA adapter costs, from shapes alone: the trainable parameters PEFT would report for
// each (target set, rank), without building the model or allocating a weight. GPT-2's module tree
// is written down here from its config (the same names, kinds and order as GPT2LMHeadModel's
// namedModules(), which the tests check against a real instance), so the 1.5B model's table
// costs nothing but arithmetic.
import { GPT2Config } from "../models/gpt2/config.js";
import { LoraConfig } from "../peft/config.js";
import { formatFixed, formatTrainableParameters } from "../peft/format.js";
import { countLoraParameters, type ModuleShape } from "../peft/targets.js";
import { formatBytes } from "../runtime.js";

/** The GPT-2 family released by OpenAI (transformers' gpt2, gpt2-medium, -large, -xl), and the tiny test model. */
export const GPT2_PRESETS = {
  "124m": { nEmbd: 768, nLayer: 12, nHead: 12 },
  "355m": { nEmbd: 1024, nLayer: 24, nHead: 16 },
  "774m": { nEmbd: 1280, nLayer: 36, nHead: 20 },
  "1558m": { nEmbd: 1600, nLayer: 48, nHead: 25 },
  // test/fixtures/gpt2-tiny: the model the PEFT fixtures were made on
  tiny: { vocabSize: 101, nPositions: 64, nEmbd: 64, nLayer: 2, nHead: 4 },
} as const;
export type GPT2Preset = keyof typeof GPT2_PRESETS;
export const GPT2_PRESET_NAMES = Object.keys(GPT2_PRESETS) as GPT2Preset[];

export function gpt2PresetConfig(name: GPT2Preset): GPT2Config {
  return new GPT2Config(GPT2_PRESETS[name]);
}

/**
 * GPT2LMHeadModel's named modules (root excluded) with the shapes LoRA needs. Conv1D(nf, nx)
 * maps nx inputs to nf outputs. lm_head is not a module: it reuses wte's weight.
 */
export function gpt2ModuleShapes(config: GPT2Config): ModuleShape[] {
  const C = config.nEmbd, I = config.innerDim;
  const conv = (name: string, inFeatures: number, outFeatures: number): ModuleShape => ({ name, kind: "conv1d", inFeatures, outFeatures });
  const other = (name: string): ModuleShape => ({ name, kind: "other" });
  const t = "transformer";
  const out: ModuleShape[] = [
    other(t),
    { name: `${t}.wte`, kind: "embedding", numEmbeddings: config.vocabSize, embeddingDim: C },
    { name: `${t}.wpe`, kind: "embedding", numEmbeddings: config.nPositions, embeddingDim: C },
    other(`${t}.drop`),
    other(`${t}.h`),
  ];
  for (let i = 0; i < config.nLayer; i++) {
    const h = `${t}.h.${i}`;
    out.push(
      other(h), other(`${h}.ln_1`), other(`${h}.attn`), conv(`${h}.attn.c_attn`, C, 3 * C), conv(`${h}.attn.c_proj`, C, C),
      other(`${h}.attn.resid_dropout`), other(`${h}.ln_2`), other(`${h}.mlp`), conv(`${h}.mlp.c_fc`, C, I), conv(`${h}.mlp.c_proj`, I, C),
      other(`${h}.mlp.dropout`),
    );
  }
  out.push(other(`${t}.ln_f`));
  return out;
}

/** GPT-2's parameter count, the tied lm_head counted once (as PyTorch's model.parameters() does). */
export function gpt2ParameterCount(config: GPT2Config): number {
  return config.parameterCount;
}

/** A target set as the user wrote it: module names, or "all-linear". */
export type TargetSpec = readonly string[] | "all-linear";

/** "c_attn,c_proj" → ["c_attn", "c_proj"]; "all-linear" stays a string (PEFT's keyword). */
export function parseTargetSpec(spec: string): TargetSpec {
  const names = spec.split(",").map((s) => s.trim()).filter(Boolean);
  return names.length === 1 && names[0] === "all-linear" ? "all-linear" : names;
}

export function formatTargetSpec(spec: TargetSpec): string {
  return typeof spec === "string" ? spec : spec.join(",");
}

/**
 * Entries of `spec` that name no module: PEFT only fails when no entry matches, so a typo next to a
 * good name would silently count fewer parameters. An entry matches a module named exactly so or
 * ending in "." + entry (PEFT's rule for lists).
 */
export function unknownTargets(spec: TargetSpec, moduleNames: readonly string[]): string[] {
  if (spec === "all-linear") return [];
  return spec.filter((t) => !moduleNames.some((n) => matchesTarget(n, [t])));
}

/** Whether module `path` is one of the named targets. */
export function matchesTarget(path: string, names: readonly string[]): boolean {
  return names.some((t) => path === t || path.endsWith(`.${t}`));
}

/** One row of the table: a target set at one rank. */
export interface ParamsRow {
  targets: string;
  r: number;
  /** Modules that get an adapter. */
  modules: number;
  /** LoRA parameters (A and B of every targeted module). */
  trainable: number;
  /** Base parameters plus the adapter's, as PEFT's print_trainable_parameters counts them. */
  all: number;
  /** 100·trainable/all with PEFT's ".4f" formatting (a string, so "0.2364" stays exactly that). */
  trainablePercent: string;
  /** trainable as a share of the targeted matrices' own parameters (d·k each): what full fine-tuning of them would train. */
  fullDeltaPercent: string;
  /** float32 bytes of the adapter's tensors (adapter_model.safetensors adds a header of a few KB). */
  adapterBytes: number;
  /** PEFT's print_trainable_parameters line. */
  peftLine: string;
}

export interface ParamsTableOptions {
  modules: readonly ModuleShape[];
  /** Parameters of the base model (tied weights once). */
  baseParameters: number;
  ranks: readonly number[];
  targetSets: readonly TargetSpec[];
  /** config.json's model_type, for PEFT's default targets (only used when a set is empty). */
  modelType?: string;
}

/** The parameter counts for every (target set, rank), target sets outermost, in the order given. */
export function parameterTable(opts: ParamsTableOptions): ParamsRow[] {
  const rows: ParamsRow[] = [];
  const byName = new Map(opts.modules.map((m) => [m.name, m]));
  for (const targetModules of opts.targetSets) {
    for (const r of opts.ranks) {
      // fanInFanOut matches GPT-2's Conv1D; it changes no count, only silences PEFT's warning.
      const config = new LoraConfig({ taskType: "CAUSAL_LM", r, targetModules, fanInFanOut: true });
      const count = countLoraParameters(opts.modules, config, { modelType: opts.modelType, onWarning: () => {} });
      const full = count.perModule.reduce((s, p) => s + denseSize(byName.get(p.name)!), 0);
      const all = opts.baseParameters + count.total;
      // PEFT's percentage is exact only while 100·all < 2^53 (about 360 TB of float32): far beyond any memory.
      if (!Number.isSafeInteger(100 * all)) {
        throw new Error(
          `r=${r} on ${formatTargetSpec(targetModules)} (${count.perModule.length} modules): ${count.total.toPrecision(3)} trainable parameters ` +
            `(${formatBytes(4 * count.total)} of float32), more than any memory holds; use a smaller rank`,
        );
      }
      rows.push({
        targets: formatTargetSpec(targetModules),
        r,
        modules: count.perModule.length,
        trainable: count.total,
        all,
        trainablePercent: formatFixed((100 * count.total) / all, 4),
        fullDeltaPercent: formatFixed((100 * count.total) / full, 2),
        adapterBytes: 4 * count.total,
        peftLine: formatTrainableParameters(count.total, all),
      });
    }
  }
  return rows;
}

/** Entries of the weight matrix a module's adapter updates. */
function denseSize(m: ModuleShape): number {
  return m.kind === "embedding" ? m.numEmbeddings! * m.embeddingDim! : m.inFeatures! * m.outFeatures!;
}
