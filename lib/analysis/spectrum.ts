// The spectra of weight updates ΔW, for checking LoRA's premise that fine-tuning changes weights
// along a few directions: an adapter's ΔW = s·B·A has rank ≤ r by construction (its singular
// values come from the r×r core, never from the d×k product); a full fine-tune's ΔW =
// W_tuned − W_base is dense, and its spectrum shows how low-rank it is in practice.
import { setImmediate as yieldToEventLoop } from "node:timers/promises";
import type { SafetensorsEntry } from "../io/safetensors.js";
import { effectiveRank, energyCaptured, lowRankSingularValues, matrix, rankForEnergy, singularValues } from "../linalg/index.js";
import { byModuleOrder, entryValues, type AdapterFactors } from "./weights.js";

/** Machine epsilon of float32: weights are stored in float32 (or coarser), so ΔW carries rounding of this relative size. */
const FLOAT32_EPS = 2 ** -23;

/** GPT-2's Conv1D weights, stored in×out: the spectrum is the same either way, but shapes are reported out×in like nn.Linear's. */
const GPT2_CONV1D_WEIGHT = /\.(c_attn|c_proj|c_fc)\.weight$/;

/** One updated weight matrix and its singular values. */
export interface LayerSpectrum {
  /** The module path, e.g. "transformer.h.0.attn.c_attn". */
  name: string;
  /** ΔW as the module applies it: out × in (an embedding's: rows × dim). */
  rows: number;
  cols: number;
  /** The adapter's rank (adapter mode). */
  r?: number;
  /** σ₁ ≥ σ₂ ≥ …: all min(rows, cols) of them for a dense ΔW, min(rows, r, cols) for s·B·A (the rest are exactly 0). */
  singularValues: Float64Array;
  /** ‖ΔW‖_F / ‖W_base‖_F, when the base weights were given. */
  relativeNorm?: number;
}

/** What the spectrum says about the update's rank. */
export interface SpectrumStats {
  /** ‖ΔW‖_F = sqrt(Σσᵢ²). */
  frobenius: number;
  /** Singular values above σ₁·max(rows, cols)·eps(float32): the rest are indistinguishable from the weights' rounding. */
  numericalRank: number;
  /** exp(entropy of σᵢ/Σσ) (Roy & Vetterli): 1 for a rank-1 update, r for r equal directions. */
  effectiveRank: number;
  /** The fewest directions holding 90% / 99% of Σσᵢ² (the best rank-k approximation's share, Eckart–Young). */
  rankFor90: number;
  rankFor99: number;
  /** energyCaptured for each k of topK, in order. */
  energy: number[];
}

export function spectrumStats(layer: LayerSpectrum, topK: readonly number[]): SpectrumStats {
  const s = layer.singularValues;
  const tol = (s[0] ?? 0) * Math.max(layer.rows, layer.cols) * FLOAT32_EPS;
  return {
    frobenius: Math.sqrt(s.reduce((sum, x) => sum + x * x, 0)),
    numericalRank: s.filter((x) => x > tol).length,
    effectiveRank: effectiveRank(s),
    rankFor90: rankForEnergy(s, 0.9),
    rankFor99: rankForEnergy(s, 0.99),
    energy: topK.map((k) => energyCaptured(s, k)),
  };
}

/** ‖W‖_F of a base weight that must fit a rows × cols update (stored either way round: GPT-2's Conv1D keeps in×out). */
function baseNorm(name: string, entry: SafetensorsEntry | undefined, rows: number, cols: number): number {
  if (!entry) throw new Error(`the base model has no weight ${name}.weight; was the adapter trained on another model?`);
  const [a, b] = entry.shape;
  if (entry.shape.length !== 2 || !((a === rows && b === cols) || (a === cols && b === rows))) {
    throw new Error(`the base model's ${entry.name} is [${entry.shape.join(", ")}] but the adapter's update of ${name} is ${rows}×${cols}; was the adapter trained on another model?`);
  }
  return Math.sqrt(entryValues(entry).reduce((sum, x) => sum + x * x, 0));
}

/**
 * The spectrum of each adapter update ΔW = s·B·A, exactly and without forming ΔW (s > 0 scales
 * every singular value). With the base weights, also ‖ΔW‖_F / ‖W‖_F.
 */
export function adapterSpectra(factors: readonly AdapterFactors[], base?: ReadonlyMap<string, SafetensorsEntry>): LayerSpectrum[] {
  return factors.map((f) => {
    const s = lowRankSingularValues(f.b, f.a).map((x) => x * Math.abs(f.scaling));
    // B·A is out × in; an embedding's update is its transpose, rows × dim
    const [rows, cols] = f.kind === "embedding" ? [f.a.cols, f.b.rows] : [f.b.rows, f.a.cols];
    const layer: LayerSpectrum = { name: f.name, rows, cols, r: f.a.rows, singularValues: s };
    if (base) {
      const frob = Math.sqrt(s.reduce((sum, x) => sum + x * x, 0));
      layer.relativeNorm = frob / baseNorm(f.name, base.get(`${f.name}.weight`), rows, cols);
    }
    return layer;
  });
}

export interface DeltaProgress {
  /** Work done and in all, in units proportional to the SVDs' cost (rows·cols·min(rows, cols)). */
  done: number;
  total: number;
  /** The matrix about to be decomposed (undefined once all are done). */
  name?: string;
  index: number;
  count: number;
}

export interface CheckpointDeltaOptions {
  /** Which weights to decompose, by module path (default: every changed matrix). */
  include?: (modulePath: string) => boolean;
  /** Called before each SVD and after the last. */
  onProgress?: (p: DeltaProgress) => void;
}

export interface CheckpointDeltas {
  layers: LayerSpectrum[];
  /** Matrices with ΔW = 0 exactly (frozen in fine-tuning), skipped. */
  unchanged: string[];
  /** Changed tensors that are not matrices (biases, layer norms): they have no spectrum to speak of. */
  changedVectors: string[];
}

/**
 * The dense ΔW = W_tuned − W_base of every weight matrix that differs between two checkpoints of
 * the same architecture (maps from readCheckpointWeights), and its full spectrum. The SVDs are
 * the long part (seconds each at GPT-2 124M's shapes); the event loop runs between them so a
 * progress display can draw.
 */
export async function checkpointDeltaSpectra(
  base: ReadonlyMap<string, SafetensorsEntry>, tuned: ReadonlyMap<string, SafetensorsEntry>, opts: CheckpointDeltaOptions = {},
): Promise<CheckpointDeltas> {
  const onlyOne = [...[...base.keys()].filter((k) => !tuned.has(k)).map((k) => `${k} (base only)`), ...[...tuned.keys()].filter((k) => !base.has(k)).map((k) => `${k} (tuned only)`)];
  if (onlyOne.length > 0) throw new Error(`the checkpoints hold different tensors: ${onlyOne.slice(0, 4).join(", ")}${onlyOne.length > 4 ? `, … (${onlyOne.length} in all)` : ""}; compare two checkpoints of one model`);
  const unchanged: string[] = [], changedVectors: string[] = [];
  // a first pass finds what changed, so the progress total is known before the first SVD
  const changed: [string, SafetensorsEntry, SafetensorsEntry][] = [];
  for (const [name, t] of tuned) {
    const b = base.get(name)!;
    if (b.shape.length !== t.shape.length || b.shape.some((d, i) => d !== t.shape[i])) {
      throw new Error(`${name} is [${b.shape.join(", ")}] in the base and [${t.shape.join(", ")}] in the tuned checkpoint; compare two checkpoints of one model`);
    }
    const modulePath = name.replace(/\.(weight|bias)$/, "");
    if (opts.include && !opts.include(modulePath)) continue;
    if (b.dtype === t.dtype && Buffer.compare(b.bytes, t.bytes) === 0) {
      if (t.shape.length === 2) unchanged.push(name);
      continue;
    }
    changed.push([name, b, t]);
  }
  const cost = (rows: number, cols: number) => rows * cols * Math.min(rows, cols);
  const matrices = changed.filter(([, , t]) => t.shape.length === 2).sort(([a], [b]) => byModuleOrder(a, b));
  const total = matrices.reduce((sum, [, , t]) => sum + cost(t.shape[0]!, t.shape[1]!), 0);
  for (const [name, , t] of changed) if (t.shape.length !== 2) changedVectors.push(name);
  const layers: LayerSpectrum[] = [];
  let done = 0;
  for (const [index, [name, b, t]] of matrices.entries()) {
    const [rows, cols] = t.shape as [number, number];
    opts.onProgress?.({ done, total, name, index, count: matrices.length });
    await yieldToEventLoop();
    const w = entryValues(b), delta = entryValues(t);
    let dw = 0, ww = 0;
    for (let i = 0; i < delta.length; i++) {
      delta[i] = delta[i]! - w[i]!;
      dw += delta[i]! * delta[i]!;
      ww += w[i]! * w[i]!;
    }
    if (dw === 0) {
      unchanged.push(name); // equal values in another dtype
    } else {
      const conv = GPT2_CONV1D_WEIGHT.test(name);
      layers.push({
        name: name.replace(/\.weight$/, ""), rows: conv ? cols : rows, cols: conv ? rows : cols,
        singularValues: singularValues(matrix(rows, cols, delta)), relativeNorm: Math.sqrt(dw / ww),
      });
    }
    done += cost(rows, cols);
  }
  opts.onProgress?.({ done, total, index: matrices.length, count: matrices.length });
  return { layers, unchanged, changedVectors };
}
