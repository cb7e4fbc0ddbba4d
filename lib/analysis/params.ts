// What a LoRA adapter costs, from shapes alone: the trainable parameters PEFT would report for
// each (target set, rank), without building the model or allocating a weight. The module tree
// comes from shapes written down from a config (gpt2ModuleShapes in lib/models/gpt2/shapes.ts), so
// the 1.5B model's table costs nothing but arithmetic.
import { formatFixed } from "../io/pyformat.js";
import type { ModuleShape } from "../nn/shapes.js";
import { LoraConfig } from "../peft/config.js";
import { formatTrainableParameters } from "../peft/format.js";
import { countLoraParameters } from "../peft/targets.js";
import { formatBytes } from "../runtime.js";

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
