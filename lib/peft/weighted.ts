// PEFT's add_weighted_adapter (peft 0.21, tuners/lora/model.py): a new adapter made from existing
// ones with weights wᵢ, for combination types
//   "linear"  equal ranks: A = Σ sign(wᵢsᵢ)·√|wᵢsᵢ|·Aᵢ, B = Σ √|wᵢsᵢ|·Bᵢ. Not the weighted sum of the
//             updates (B·A has cross terms): PEFT calls it "a very rough approximation".
//   "cat"     rank Σrᵢ: A = [w₁s₁A₁; w₂s₂A₂; …], B = [B₁ | B₂ | …], so B·A = Σ wᵢsᵢBᵢAᵢ exactly.
//   "svd"     rank svdRank (default: the largest rᵢ): the truncated SVD U·S·Vᵀ of ΔW = Σ wᵢsᵢBᵢAᵢ per
//             layer gives B = U·S and A = Vᵀ (lib/linalg, float64; PEFT uses float32). With svdClamp = q,
//             every entry of A and B is then clamped to ±(the q-quantile of all their entries).
// The new adapter's config is the first adapter's with r and loraAlpha set to the new rank (so the
// scaling is 1, the sᵢ being folded into the factors), target modules combined, rank/alpha patterns
// dropped. It is added inactive and frozen, like any added adapter. Only A and B are combined: with
// DoRA sources, as in PEFT, the new adapter's magnitudes start afresh (‖W‖, since its B is 0 when
// it is created), not from the sources' magnitudes.
//
// Singular vectors are unique only up to sign, and LAPACK's choice differs from ours: with "svd",
// B·A (and so the adapter's output) matches PEFT, A and B themselves up to the sign of each pair;
// with svdClamp, the quantile is of the signed entries, so the clamped result can differ from
// PEFT's where the signs differ.
import { matrix, svdMergeFactors, type Matrix } from "../linalg/index.js";
import { noGrad, type Tensor } from "../tensor/tensor.js";
import type { LoraConfig, WarningHandler } from "./config.js";
import { isBaseMutatingInit, writeMatrix } from "./init.js";
import type { LoraLayer } from "./layer.js";
import type { ModulesToSaveWrapper } from "./modules-to-save.js";

/** The parts of PeftModel used here, declared here because model.ts imports this file. */
export interface WeightedAdapterHost {
  readonly peftConfig: ReadonlyMap<string, LoraConfig>;
  readonly adapters: string[];
  readonly loraLayers: ReadonlyMap<string, LoraLayer>;
  readonly modulesToSave: ReadonlyMap<string, ModulesToSaveWrapper>;
  addAdapter(name: string, config: LoraConfig): void;
}

export type CombinationType = "linear" | "cat" | "svd";
const COMBINATIONS: readonly CombinationType[] = ["linear", "cat", "svd"];
/** PEFT's other combination types (TIES, DARE, magnitude pruning), which lowrank does not implement. */
const PEFT_ONLY_COMBINATIONS = ["ties", "ties_svd", "dare_ties", "dare_linear", "dare_ties_svd", "dare_linear_svd", "magnitude_prune", "magnitude_prune_svd"];

export interface WeightedAdapterOptions {
  /** How the adapters are combined ("svd", PEFT's default). With a single adapter PEFT always uses "linear". */
  combinationType?: CombinationType;
  /** "svd": the new rank (default: the largest rank among the adapters). */
  svdRank?: number;
  /** "svd": clamp A and B to ±(this quantile, in [0, 1], of their entries) (default: no clamping). */
  svdClamp?: number;
  /**
   * PEFT's svd_full_matrices (true). Only the top svdRank singular triplets are kept, so full and
   * reduced SVDs give the same factors; accepted for parity with PEFT's signature.
   */
  svdFullMatrices?: boolean;
}

/** The adapter's largest rank over its layers (PEFT: r, or the largest rank_pattern value). */
function maxRank(config: LoraConfig): number {
  return Math.max(config.r, ...Object.values(config.rankPattern));
}

/** The combined target_modules: PEFT joins regex strings as "(a)|(b)" and unites lists. */
function combinedTargets(names: readonly string[], configs: readonly LoraConfig[]): string | string[] {
  const kinds = new Set(configs.map((c) => typeof c.targetModules));
  if (kinds.size > 1) {
    throw new Error(
      `addWeightedAdapter: adapters ${names.join(", ")} mix targetModules given as a list and as a regex string; ` +
        "PEFT cannot combine those either. Re-create the adapters with the same kind of targetModules.",
    );
  }
  if (typeof configs[0]!.targetModules === "string") return configs.map((c) => `(${c.targetModules as string})`).join("|");
  return [...new Set(configs.flatMap((c) => c.targetModules as readonly string[]))];
}

function checkOptions(adapters: readonly string[], weights: readonly number[], adapterName: string, opts: WeightedAdapterOptions): void {
  if (!Array.isArray(adapters) || adapters.length === 0 || adapters.some((a) => typeof a !== "string")) {
    throw new Error(`addWeightedAdapter: adapters must be a non-empty list of adapter names; got ${JSON.stringify(adapters)}`);
  }
  if (!Array.isArray(weights) || weights.length !== adapters.length || weights.some((w) => typeof w !== "number" || !Number.isFinite(w))) {
    // PEFT zips the two lists and silently drops the extra entries; a mismatch is almost always a mistake.
    throw new Error(
      `addWeightedAdapter: weights must be ${adapters.length} finite numbers, one per adapter (${adapters.join(", ")}); got ${JSON.stringify(weights)}`,
    );
  }
  if (typeof adapterName !== "string" || adapterName.length === 0) throw new Error(`addWeightedAdapter: adapterName must be a non-empty string; got ${JSON.stringify(adapterName)}`);
  const type = opts.combinationType ?? "svd";
  if (!COMBINATIONS.includes(type)) {
    const peftOnly = PEFT_ONLY_COMBINATIONS.includes(type) ? ` (PEFT's "${type}" is not implemented in lowrank)` : "";
    throw new Error(`addWeightedAdapter: combinationType must be one of ${COMBINATIONS.join(", ")}; got ${JSON.stringify(type)}${peftOnly}`);
  }
  if (opts.svdRank !== undefined && !(Number.isInteger(opts.svdRank) && opts.svdRank > 0)) {
    throw new Error(`addWeightedAdapter: svdRank must be a positive integer; got ${opts.svdRank}`);
  }
  if (opts.svdClamp !== undefined && !(opts.svdClamp >= 0 && opts.svdClamp <= 1)) {
    throw new Error(`addWeightedAdapter: svdClamp is a quantile and must be in [0, 1]; got ${opts.svdClamp}`);
  }
  if (opts.svdFullMatrices !== undefined && typeof opts.svdFullMatrices !== "boolean") {
    throw new Error(`addWeightedAdapter: svdFullMatrices must be true or false; got ${JSON.stringify(opts.svdFullMatrices)}`);
  }
}

/** See the file comment. Called as peft.addWeightedAdapter(...). */
export function addWeightedAdapter(
  peft: WeightedAdapterHost, adapters: readonly string[], weights: readonly number[], adapterName: string, opts: WeightedAdapterOptions, warn: WarningHandler,
): void {
  checkOptions(adapters, weights, adapterName, opts);
  if (peft.peftConfig.has(adapterName)) {
    // PEFT returns without a word; the existing adapter is kept as it is.
    warn(`addWeightedAdapter: an adapter named "${adapterName}" already exists; nothing was added (as in PEFT). Pick a new name, or deleteAdapter("${adapterName}") first.`);
    return;
  }
  for (const a of adapters) {
    if (!peft.peftConfig.has(a)) throw new Error(`addWeightedAdapter: Adapter ${a} does not exist (adapters: ${peft.adapters.join(", ")})`);
  }
  const configs = adapters.map((a) => peft.peftConfig.get(a)!);
  const shared = [...peft.modulesToSave].filter(([, w]) => adapters.filter((a) => w.adapterNames.includes(a)).length > 1);
  if (shared.length > 0) {
    throw new Error(
      `Cannot add weighted adapters if they target the same module with modules_to_save, but found ${shared.length} such instance(s) ` +
        `(${shared.map(([p]) => p).join(", ")}).`,
    );
  }
  const first = configs[0]!;
  const biased = adapters.filter((_, i) => configs[i]!.loraBias);
  if (biased.length > 0) {
    // PEFT combines only the factors: the new adapter's lora_B bias stays at its zero init, silently.
    throw new Error(
      `addWeightedAdapter: ${biased.map((a) => `"${a}"`).join(", ")} ${biased.length > 1 ? "have" : "has"} a lora_B bias (loraBias), which a ` +
        "weighted combination of A and B factors cannot carry (PEFT drops it without a word). Combine adapters made with loraBias false.",
    );
  }
  if (isBaseMutatingInit(first.initLoraWeights)) {
    // PEFT would run that init again for the new adapter, replacing the (already residual) base weights once more.
    throw new Error(
      `addWeightedAdapter: adapter "${adapters[0]}" was made with initLoraWeights "${first.initLoraWeights}", which rewrites the base ` +
        "weights; PEFT would rewrite them again for the combined adapter. Put an adapter with a plain init first, or convert the " +
        "PiSSA/OLoRA adapter to a plain LoRA before combining.",
    );
  }
  // PEFT: one adapter is always combined linearly
  const type: CombinationType = adapters.length === 1 ? "linear" : opts.combinationType ?? "svd";
  const ranks = configs.map(maxRank);
  let rank: number;
  if (type === "linear") {
    if (new Set(ranks).size !== 1) {
      throw new Error(
        "All adapters must have the same r value when using combination_type linear, ties, dare_ties or dare_linear. " +
          `Got r = ${ranks.join(", ")} for ${adapters.join(", ")}; use "cat" or "svd" for adapters of different ranks.`,
      );
    }
    rank = ranks[0]!;
  } else {
    rank = type === "cat" ? ranks.reduce((a, b) => a + b, 0) : opts.svdRank ?? Math.max(...ranks);
  }
  if (first.useRslora) {
    warn(
      `addWeightedAdapter: "${adapters[0]}" uses rsLoRA, so the combined adapter does too (as in PEFT): its scaling is ` +
        `loraAlpha/√r = √${rank}, not 1, and its output is √${rank} times the weighted combination.`,
    );
  }
  const config = first.with({ r: rank, loraAlpha: rank, targetModules: combinedTargets(adapters, configs), rankPattern: {}, alphaPattern: {} });
  peft.addAdapter(adapterName, config);

  noGrad(() => {
    for (const [path, layer] of peft.loraLayers) {
      if (!layer.specs.has(adapterName)) continue;
      const sources = adapters.map((a, i) => ({ a, w: weights[i]! })).filter(({ a }) => layer.specs.has(a));
      if (sources.length === 0) throw new Error(`addWeightedAdapter: none of ${adapters.join(", ")} has LoRA on ${path}, which the combined adapter targets`);
      const parts = sources.map(({ a, w }) => ({ A: factor(layer.loraA(a)), B: factor(layer.loraB(a)), scale: w * layer.specs.get(a)!.scaling, name: a }));
      const combined = type === "linear" ? linearFactors(parts, path) : type === "cat" ? catFactors(parts, rank) : svdMergeFactors(parts, rank, opts.svdClamp);
      writeMatrix(layer.loraA(adapterName), combined.A);
      writeMatrix(layer.loraB(adapterName), combined.B);
    }
  });
}

interface Part {
  A: Matrix;
  B: Matrix;
  /** weight · the adapter's scaling on this layer */
  scale: number;
  name: string;
}

function factor(t: Tensor): Matrix {
  return matrix(t.shape[0]!, t.shape[1]!, t.dataSync());
}

function linearFactors(parts: readonly Part[], path: string): { A: Matrix; B: Matrix } {
  const { A: A0, B: B0 } = parts[0]!;
  for (const p of parts) {
    if (p.A.rows !== A0.rows) {
      throw new Error(`addWeightedAdapter "linear": on ${path}, ${p.name} has rank ${p.A.rows} and ${parts[0]!.name} rank ${A0.rows}; linear needs equal ranks`);
    }
  }
  const A = matrix(A0.rows, A0.cols), B = matrix(B0.rows, B0.cols);
  for (const { A: a, B: b, scale } of parts) {
    // the sign goes on one side only, or it would cancel in B·A
    const root = Math.sqrt(Math.abs(scale)), sign = scale >= 0 ? 1 : -1;
    for (let i = 0; i < a.data.length; i++) A.data[i]! += sign * root * a.data[i]!;
    for (let i = 0; i < b.data.length; i++) B.data[i]! += root * b.data[i]!;
  }
  return { A, B };
}

/** Rows wᵢsᵢAᵢ stacked into A, columns Bᵢ side by side in B, zero-padded to `rank`. */
function catFactors(parts: readonly Part[], rank: number): { A: Matrix; B: Matrix } {
  const inDim = parts[0]!.A.cols, outDim = parts[0]!.B.rows;
  const A = matrix(rank, inDim), B = matrix(outDim, rank);
  let at = 0;
  for (const { A: a, B: b, scale } of parts) {
    for (let i = 0; i < a.data.length; i++) A.data[at * inDim + i] = scale * a.data[i]!;
    for (let o = 0; o < outDim; o++) {
      for (let j = 0; j < b.cols; j++) B.data[o * rank + at + j] = b.data[o * b.cols + j]!;
    }
    at += a.rows;
  }
  return { A, B };
}

