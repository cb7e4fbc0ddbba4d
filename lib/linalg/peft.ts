// PEFT's SVD- and QR-based LoRA constructions (peft 0.21.0, tuners/lora/layer.py and model.py),
// in float64 on (out × in) weights: W as nn.Linear stores it, so a GPT-2 Conv1D weight (stored
// in × out) is passed transposed and its residual transposed back, as PEFT's pissa_init does.
// PEFT computes in float32; these agree with it to float32 rounding, and up to the sign of each
// singular pair (u, v), which no SVD fixes (LAPACK's choice is an artefact of its algorithm).
import { gemmNT } from "./kernels.js";
import { lowRankSvd } from "./lowrank.js";
import { submatrix, transpose, type Matrix } from "./matrix.js";
import { factorQ, householderQR } from "./qr.js";
import { svd } from "./svd.js";

/** LoRA factors (A r×in, B out×r) and the base weight that goes with them. */
export interface LoraFactors {
  readonly A: Matrix;
  readonly B: Matrix;
  /** W − scaling·B·A: the new base weight, so that the adapted layer starts out equal to W. */
  readonly residual: Matrix;
}

function checkInit(op: string, w: Matrix, r: number, scaling: number): void {
  const p = Math.min(w.rows, w.cols);
  if (!Number.isInteger(r) || r < 1 || r > p) throw new Error(`${op}: r must be an integer in [1, ${p}] for a ${w.rows}×${w.cols} weight, got ${r}`);
  if (!(scaling > 0 && Number.isFinite(scaling))) throw new Error(`${op}: scaling (lora_alpha / r) must be positive, got ${scaling}`);
}

/** W − scaling·B·A. */
function residual(w: Matrix, b: Matrix, a: Matrix, scaling: number): Matrix {
  const out = w.data.slice();
  gemmNT(w.rows, w.cols, b.cols, -scaling, b.data, 0, b.cols, transpose(a).data, 0, a.rows, out, 0, w.cols);
  return { rows: w.rows, cols: w.cols, data: out };
}

/**
 * init_lora_weights="pissa" (LoraLayer.pissa_init): with W = U·S·Vᵀ and the top r triplets,
 * A = diag(√(S_r/scaling))·V_rᵀ, B = U_r·diag(√(S_r/scaling)), residual W − scaling·B·A.
 * Also serves "pissa_niter_N": PEFT then takes the top r triplets from torch.svd_lowrank (N
 * randomized subspace iterations, an approximation of these); here they are computed exactly.
 */
export function pissaFactors(w: Matrix, r: number, scaling: number): LoraFactors {
  checkInit("pissaFactors", w, r, scaling);
  const { U, S, V } = svd(w, { k: r });
  const root = S.map((s) => Math.sqrt(s / scaling));
  const a = transpose(V), b = U;
  for (let i = 0; i < r; i++) {
    for (let j = 0; j < a.cols; j++) a.data[i * a.cols + j] *= root[i]!;
  }
  for (let o = 0; o < b.rows; o++) {
    for (let i = 0; i < r; i++) b.data[o * r + i] *= root[i]!;
  }
  return { A: a, B: b, residual: residual(w, b, a, scaling) };
}

/**
 * init_lora_weights="olora" (LoraLayer.olora_init): W = Q·R (thin QR, torch's signs),
 * B = Q[:, :r], A = R[:r], residual W − scaling·B·A. Note: PEFT runs this on the weight as
 * stored, without pissa_init's transpose, so for a Conv1D (stored in × out) its A and B come out
 * (r × out) and (in × r), mismatching the layer unless in = out; this function takes (out × in).
 */
export function oloraFactors(w: Matrix, r: number, scaling: number): LoraFactors {
  checkInit("oloraFactors", w, r, scaling);
  const f = householderQR(w);
  const b = factorQ(f, r), a = submatrix(f.R, 0, r, 0, w.cols);
  return { A: a, B: b, residual: residual(w, b, a, scaling) };
}

/** One adapter's share in add_weighted_adapter: its factors and weight·scaling. */
export interface WeightedAdapter {
  readonly A: Matrix;
  readonly B: Matrix;
  /** The user's weight times the adapter's scaling (lora_alpha / r): ΔW = scale·B·A. */
  readonly scale: number;
}

/**
 * add_weighted_adapter(..., combination_type="svd") for one layer
 * (_svd_generalized_task_arithmetic_weighted_adapter): the rank-`rank` truncated SVD of
 * ΔW = Σ scaleᵢ·Bᵢ·Aᵢ (out × in) gives B = U_r·diag(S_r) and A = V_rᵀ, i.e. S goes to B and the
 * new adapter has scaling 1 (lora_alpha = rank). ΔW is never formed: its SVD comes from
 * lowRankSvd of [scale₁B₁ | scale₂B₂ | …]·[A₁; A₂; …]. Where `rank` exceeds that product's
 * rank bound Σrᵢ, torch's SVD returns arbitrary orthonormal vectors for the zero singular values;
 * here A's extra rows likewise complete an orthonormal set and B's extra columns are zero.
 * With `clamp` (svd_clamp), both factors are then clamped as quantileClamp does.
 */
export function svdMergeFactors(adapters: readonly WeightedAdapter[], rank: number, clamp?: number): { A: Matrix; B: Matrix } {
  const first = adapters[0];
  if (!first) throw new Error("svdMergeFactors: needs at least one adapter");
  const out = first.B.rows, inp = first.A.cols;
  for (const [i, { A, B }] of adapters.entries()) {
    if (B.rows !== out || A.cols !== inp || B.cols !== A.rows) {
      throw new Error(`svdMergeFactors: adapter ${i} has B ${B.rows}×${B.cols} and A ${A.rows}×${A.cols}; expected B ${out}×r and A r×${inp}`);
    }
  }
  const p = Math.min(out, inp);
  if (!Number.isInteger(rank) || rank < 1 || rank > p) throw new Error(`svdMergeFactors: rank must be an integer in [1, ${p}] for ${out}×${inp} layers, got ${rank}`);
  // [scale₁B₁ | scale₂B₂ | …] (out × Σr) and [A₁; A₂; …] (Σr × in).
  const total = adapters.reduce((n, { A }) => n + A.rows, 0);
  const bCat = new Float64Array(out * total), aCat = new Float64Array(total * inp);
  let at = 0;
  for (const { A, B, scale } of adapters) {
    for (let o = 0; o < out; o++) {
      for (let j = 0; j < B.cols; j++) bCat[o * total + at + j] = scale * B.data[o * B.cols + j]!;
    }
    aCat.set(A.data, at * inp);
    at += A.rows;
  }
  const f = lowRankSvd({ rows: out, cols: total, data: bCat }, { rows: total, cols: inp, data: aCat }, { k: Math.min(rank, total) });
  const kept = f.S.length;
  const b = new Float64Array(out * rank);
  for (let o = 0; o < out; o++) {
    for (let i = 0; i < kept; i++) b[o * rank + i] = f.U.data[o * kept + i]! * f.S[i]!;
  }
  const v = kept < rank ? completeOrthonormal(f.V, rank) : f.V;
  const merged = { A: transpose(v), B: { rows: out, cols: rank, data: b } };
  return clamp === undefined ? merged : quantileClamp(merged.A, merged.B, clamp);
}

/** x (n × p, orthonormal columns) extended to n × cols with orthonormal columns: the trailing columns of the full Q of x's QR. */
function completeOrthonormal(x: Matrix, cols: number): Matrix {
  const full = factorQ(householderQR(x), cols);
  for (let i = 0; i < x.rows; i++) full.data.set(x.data.subarray(i * x.cols, (i + 1) * x.cols), i * cols);
  return full;
}

/**
 * svd_clamp in add_weighted_adapter: hi = torch.quantile(cat(B.flatten(), A.flatten()), q)
 * (linear interpolation between order statistics), then every entry of B and A is clamped to
 * [−hi, hi]. The quantile is of the signed values, so it depends on the singular vectors' signs.
 */
export function quantileClamp(a: Matrix, b: Matrix, q: number): { A: Matrix; B: Matrix } {
  if (!(q >= 0 && q <= 1)) throw new Error(`quantileClamp: q must be in [0, 1], got ${q}`);
  const all = new Float64Array(b.data.length + a.data.length);
  all.set(b.data);
  all.set(a.data, b.data.length);
  all.sort();
  const pos = q * (all.length - 1), i = Math.floor(pos);
  const hi = i + 1 < all.length ? all[i]! + (pos - i) * (all[i + 1]! - all[i]!) : all[i]!;
  // torch.clamp(x, −hi, hi) = min(max(x, −hi), hi), which is hi everywhere when hi < 0.
  const clampTo = (m: Matrix): Matrix => ({ ...m, data: m.data.map((x) => Math.min(Math.max(x, -hi), hi)) });
  return { A: clampTo(a), B: clampTo(b) };
}
