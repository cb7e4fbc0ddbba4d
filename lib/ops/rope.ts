// Rotary position embeddings (RoPE) as transformers' Llama applies them, one native pass forward
// and one backward (the transposed rotation). Kernels: native/ops/rope.h (CPU and CUDA twins).
import { native } from "../native/index.js";
import type { DeviceLike } from "../tensor/device.js";
import { tensor } from "../tensor/creation.js";
import { formatShape, record, shapeSize, type Tensor } from "../tensor/tensor.js";
import { checkFloat, contiguousInput, newFloat } from "./util.js";

/**
 * x·cos + rotate_half(x)·sin, rotate_half(x) = cat(-x[..., D/2:], x[..., :D/2]): transformers'
 * apply_rotary_pos_emb for one of q or k. x is [..., T, D] (Llama: [B, H, T, D]); cos and sin are
 * [T, D], e.g. from rotaryCosSin. Differentiable in x (cos and sin are constants):
 * dx = g·cos + rotate_halfᵀ(g·sin), rotate_halfᵀ(u) = cat(u[..., D/2:], -u[..., :D/2]).
 */
export function applyRotary(x: Tensor, cos: Tensor, sin: Tensor): Tensor {
  const op = "applyRotary";
  checkFloat(op, x, cos, sin);
  if (x.ndim < 2) throw new Error(`${op}: x must be [..., T, D] (Llama's q or k: [B, H, T, D]), got ${formatShape(x.shape)}`);
  const T = x.shape[x.ndim - 2]!, D = x.shape[x.ndim - 1]!;
  if (D % 2 !== 0) throw new Error(`${op}: the head dimension D of x ${formatShape(x.shape)} must be even (rotate_half splits it in halves), got ${D}`);
  for (const [name, t] of [["cos", cos], ["sin", sin]] as const) {
    if (t.ndim !== 2 || t.shape[0] !== T || t.shape[1] !== D) {
      throw new Error(`${op}: ${name} has shape ${formatShape(t.shape)} but x ${formatShape(x.shape)} needs [${T}, ${D}] (one row per position); build it with rotaryCosSin(${T}, ${D})`);
    }
  }
  const rows = shapeSize(x.shape.slice(0, -2));
  const xc = contiguousInput(x), cc = contiguousInput(cos), sc = contiguousInput(sin);
  const out = newFloat(x.shape, x);
  native().rope({ x: xc.nativeView, cos: cc.nativeView, sin: sc.nativeView, y: out.nativeView, rows, T, D, transpose: false });
  if (xc !== x) xc.dispose();
  record(
    op, out, [x],
    (g, [cs, ss]) => {
      const gc = contiguousInput(g);
      const dx = newFloat(g.shape, g);
      native().rope({ x: gc.nativeView, cos: cs!.nativeView, sin: ss!.nativeView, y: dx.nativeView, rows, T, D, transpose: true });
      if (gc !== g) gc.dispose();
      return [dx];
    },
    [cc, sc],
  );
  if (cc !== cos) cc.dispose();
  if (sc !== sin) sc.dispose();
  return out;
}

/**
 * RoPE frequency scaling as transformers' rope_type (modeling_rope_utils.py): "linear" divides
 * every inverse frequency by factor (positions interpolated); "llama3" (Llama 3.1+) divides the
 * low frequencies (wavelength > originalMaxPositionEmbeddings / lowFreqFactor) by factor, keeps
 * the high ones (wavelength < originalMaxPositionEmbeddings / highFreqFactor) and blends between;
 * both leave cos and sin unscaled. "yarn" (YaRN, Qwen2.5 / Qwen3 long context) interpolates the
 * dimensions that turn fewer than betaSlow times over originalMaxPositionEmbeddings positions,
 * keeps those that turn more than betaFast times, ramps linearly between (over whole dimensions
 * when truncate), and multiplies cos and sin by its attention factor (rotaryAttentionFactor).
 * Fields left null take transformers' defaults (betaFast 32, betaSlow 1, truncate true).
 */
export type RopeScaling =
  | { ropeType: "linear"; factor: number }
  | { ropeType: "llama3"; factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositionEmbeddings: number }
  | {
      ropeType: "yarn"; factor: number; originalMaxPositionEmbeddings: number; attentionFactor: number | null;
      betaFast: number | null; betaSlow: number | null; mscale: number | null; mscaleAllDim: number | null; truncate: boolean | null;
    };

/** The rope types rotaryCosSin implements besides "default" (plain RoPE). */
export const ROPE_SCALING_TYPES = ["linear", "llama3", "yarn"] as const;

/**
 * What cos and sin are multiplied by (transformers' attention_scaling): yarn's attention_factor
 * when given, else 0.1·mscale·ln(factor) + 1 over the same with mscaleAllDim (when both are set),
 * else 0.1·ln(factor) + 1; 1 for the other types.
 */
export function rotaryAttentionFactor(scaling: RopeScaling | null): number {
  if (scaling?.ropeType !== "yarn") return 1;
  if (scaling.attentionFactor !== null) return scaling.attentionFactor;
  const mscale = (m: number) => (scaling.factor <= 1 ? 1 : 0.1 * m * Math.log(scaling.factor) + 1);
  return scaling.mscale && scaling.mscaleAllDim ? mscale(scaling.mscale) / mscale(scaling.mscaleAllDim) : mscale(1);
}

export interface RotaryOptions {
  /** The RoPE base (rope_theta): 10000 for Llama 2, 500000 for Llama 3. Default 10000. */
  theta?: number;
  /** Frequency scaling (config.json's rope_scaling / rope_parameters); null or absent: none. */
  scaling?: RopeScaling | null;
  /** The position of the first row: the number of tokens already in the KV cache. Default 0. */
  offset?: number;
  device?: DeviceLike;
}

/**
 * The D/2 inverse frequencies, as transformers computes them in float32: 1/theta^(2i/D), then
 * the scaling of its rope type. Each float32 step is done in float64 and rounded to float32.
 */
export function rotaryInvFreq(D: number, theta: number, scaling: RopeScaling | null = null): number[] {
  const f = Math.fround;
  const inv = Array.from({ length: D / 2 }, (_, i) => f(1 / f(theta ** f((2 * i) / D))));
  if (!scaling) return inv;
  const factor = f(scaling.factor);
  if (scaling.ropeType === "linear") return inv.map((x) => f(x / factor));
  if (scaling.ropeType === "yarn") return yarnInvFreq(D, theta, scaling);
  // _compute_llama3_parameters, operation by operation; PyTorch computes scalar / tensor as
  // tensor.reciprocal() * scalar, rounded twice.
  const { lowFreqFactor: low, highFreqFactor: high, originalMaxPositionEmbeddings: old } = scaling;
  const lowWavelen = f(old / low), highWavelen = f(old / high);
  return inv.map((x) => {
    const wavelen = f(f(1 / x) * f(2 * Math.PI));
    if (wavelen > lowWavelen) return f(x / factor);
    if (wavelen < highWavelen) return x;
    const smooth = f(f(f(f(1 / wavelen) * old) - f(low)) / f(high - low));
    return f(f(f(f(1 - smooth) * x) / factor) + f(smooth * x));
  });
}

/** yarn's beta_fast and beta_slow, transformers' defaults (32 and 1) where unset or 0. */
export function yarnBetas(s: Extract<RopeScaling, { ropeType: "yarn" }>): { betaFast: number; betaSlow: number } {
  return { betaFast: s.betaFast || 32, betaSlow: s.betaSlow || 1 };
}

/** _compute_yarn_parameters' inverse frequencies, operation by operation in float32. */
function yarnInvFreq(D: number, theta: number, s: Extract<RopeScaling, { ropeType: "yarn" }>): number[] {
  const f = Math.fround, half = D / 2;
  const { betaFast, betaSlow } = yarnBetas(s), truncate = s.truncate ?? true;
  // the dimension at which a frequency turns `rotations` times over the original context (float64, as Python)
  const dimOf = (rotations: number) => (D * Math.log(s.originalMaxPositionEmbeddings / (rotations * 2 * Math.PI))) / (2 * Math.log(theta));
  let low = dimOf(betaFast), high = dimOf(betaSlow);
  if (truncate) [low, high] = [Math.floor(low), Math.ceil(high)];
  low = Math.max(low, 0);
  high = Math.min(high, D - 1);
  if (low === high) high += 0.001; // as transformers: no division by zero
  return Array.from({ length: half }, (_, i) => {
    const pos = f(theta ** f((2 * i) / D));
    const extrapolation = f(1 / pos), interpolation = f(1 / f(f(s.factor) * pos));
    const ramp = Math.min(1, Math.max(0, f(f(i - f(low)) / f(high - low))));
    const keep = f(1 - ramp); // the share of the unscaled frequency
    return f(f(interpolation * f(1 - keep)) + f(extrapolation * keep));
  });
}

/**
 * cos and sin [T, D] for positions offset … offset+T−1, computed as transformers'
 * LlamaRotaryEmbedding does in float32: inv_freq from rotaryInvFreq (rope_theta and rope
 * scaling), freqs = positions ⊗ inv_freq, emb = cat(freqs, freqs). Each float32 step is done in
 * float64 and rounded to float32, which is what PyTorch's float32 kernels give to within an ulp.
 */
export function rotaryCosSin(T: number, D: number, opts: RotaryOptions = {}): { cos: Tensor; sin: Tensor } {
  const op = "rotaryCosSin";
  const theta = opts.theta ?? 10000, offset = opts.offset ?? 0, scaling = opts.scaling ?? null;
  if (!Number.isInteger(T) || T < 0) throw new Error(`${op}: T (the number of positions) must be an integer >= 0, got ${T}`);
  if (!Number.isInteger(D) || D <= 0 || D % 2 !== 0) throw new Error(`${op}: D (the head dimension) must be a positive even integer, got ${D}`);
  if (!(theta > 0)) throw new Error(`${op}: theta (rope_theta) must be > 0, got ${theta}`);
  if (scaling && !(ROPE_SCALING_TYPES as readonly string[]).includes(scaling.ropeType)) {
    throw new Error(`${op}: rope scaling type ${JSON.stringify(scaling.ropeType)} is not supported; supported: ${ROPE_SCALING_TYPES.join(", ")} (or none)`);
  }
  // Positions are float32 in transformers: beyond 2^24 they would no longer be exact.
  if (!Number.isInteger(offset) || offset < 0 || offset + T > 2 ** 24) {
    throw new Error(`${op}: offset must be an integer >= 0 with offset + T <= 2^24, got offset ${offset} and T ${T}`);
  }
  const f = Math.fround, half = D / 2;
  const invFreq = rotaryInvFreq(D, theta, scaling);
  const attention = f(rotaryAttentionFactor(scaling)); // cos and sin times it, in float32 (1: unchanged)
  const cos = new Float32Array(T * D), sin = new Float32Array(T * D);
  for (let t = 0; t < T; t++) {
    for (let i = 0; i < half; i++) {
      const a = f((offset + t) * invFreq[i]!);
      cos[t * D + i] = cos[t * D + i + half] = f(f(Math.cos(a)) * attention);
      sin[t * D + i] = sin[t * D + i + half] = f(f(Math.sin(a)) * attention);
    }
  }
  return { cos: tensor(cos, { shape: [T, D], device: opts.device }), sin: tensor(sin, { shape: [T, D], device: opts.device }) };
}
