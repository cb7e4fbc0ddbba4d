// Scaled dot-product attention, forward and backward each one native call.
// Kernels: native/ops/attention.h (attention_forward_f32 / attention_backward_f32), CPU and CUDA twins;
// precision "bfloat16" runs CUDA's tensor-core kernels (native/cuda/attention_mma.cu).
import { native } from "../native/index.js";
import { DTYPE_CODE } from "../tensor/dtype.js";
import { defaultGenerator, type Generator } from "../tensor/random.js";
import { tidy } from "../tensor/scope.js";
import { emptyLike, formatShape, record, Tensor } from "../tensor/tensor.js";
import { expand } from "./shape.js";
import { checkFloat, checkSameDevice, contiguousInput, newFloat, stridedView, viewOrNull } from "./util.js";

export interface AttentionOptions {
  /**
   * Causal (decoder) masking, default true (GPT-2). Query i of Tq sits at absolute position
   * Tk - Tq + i and sees keys j <= Tk - Tq + i, so Tq < Tk works for generation with a KV cache.
   */
  causal?: boolean;
  /**
   * Key-padding mask [B, Tk], int32, 1 = attend, 0 = padded (a tokenizer's attention_mask).
   * Padded keys get weight 0. A query that sees no unpadded key (left padding) outputs zeros and
   * passes no gradient, never NaN: PyTorch's SDPA and transformers' default GPT-2 do the same.
   * A NaN score is not a mask: a query with one comes out NaN, as in softmax(QKᵀ)·V.
   */
  attnMask?: Tensor | null;
  /**
   * Sliding window (causal only), transformers' sliding_window: the query at absolute position p
   * sees keys p − window < j <= p, itself included. null or absent: no window. The kernels skip
   * the keys outside it (native/ops/attention.h), with padding masks and dropout as without one.
   */
  window?: number | null;
  /** Score scale, default 1/sqrt(D). */
  scale?: number;
  /**
   * Dropout on the attention weights, like F.scaled_dot_product_attention's dropout_p (GPT-2's
   * attn_pdrop in training; pass 0 in evaluation). Default 0. Weight (b, h, i, j) is element
   * ((b*H + h)*Tq + i)*Tk + j of B·H·Tq·Tk counters reserved from the generator, kept when
   * philox_keep (native/core/philox.h), as in dropout(); the backward recomputes the mask.
   */
  dropout?: number;
  /** The random stream of the dropout mask (default: the global generator). */
  generator?: Generator;
  /**
   * The arithmetic, default "float32". "bfloat16" computes attention as bf16 autocast does for a
   * model with bf16 weights (PyTorch's SDPA on bf16 q, k, v): q, k, v, and the upstream gradient
   * in the backward, are rounded to bf16 and multiplied with float32 sums; tensors stay float32.
   * The attention weights (and their gradient) are rounded to bf16 for their products too, as
   * flash attention's bf16 kernels do: on CUDA bf16 tensor-core flash attention (head size 64 or
   * 128; other sizes keep the float32 kernels, weights unrounded), on the CPU bf16 GEMMs (float32
   * ones on the rounded values for fewer than 16 queries). Results agree to bf16 accuracy (~1e-3).
   */
  precision?: AttentionPrecision;
  /**
   * With precision "bfloat16": k and v already hold bf16 values (a KVCache that rounds what it
   * stores, `append(..., { roundToBf16: true })`), so only q is rounded; the CPU then reads the cache
   * in place instead of rounding a copy of it for every decoded token. Default false. The caller
   * vouches for the values: a k or v that is not bf16-exact gives another result than without the flag.
   */
  kvRounded?: boolean;
}

export type AttentionPrecision = "float32" | "bfloat16";

/**
 * The attention precision of a model whose projection weight is `weight`: "bfloat16" for a
 * `dtype: "bfloat16"` model (its GEMMs already run autocast-style, lib/ops/matmul.ts), else "float32".
 * A projection that a user's own module replaced has no `weight` (undefined): float32.
 */
export function attentionPrecision(weight: Tensor | undefined): AttentionPrecision {
  return weight?.dtype === "bfloat16" ? "bfloat16" : "float32";
}

/** A view with last stride 1 (t itself when it has one; else a contiguous copy, which the caller disposes). */
function rowContiguous(t: Tensor): Tensor {
  return t.strides[3] === 1 || t.shape[3] === 1 ? t : t.contiguous();
}

/**
 * A new [B, H, T, D] tensor laid out as [B, T, H, D] in memory: attention writes heads side by
 * side, so GPT-2's merge of heads (transpose(1, 2) then reshape to [B, T, C]) is a free view.
 */
function headsInterleaved(like: Tensor, B: number, H: number, T: number, D: number): Tensor {
  const base = emptyLike([B, T, H, D], "float32", like.deviceInfo);
  const view = base.permute(0, 2, 1, 3);
  base.dispose();
  return view;
}

/** True when the dimensions of sizes `shape` at `strides` address each element of one dense block exactly once. */
function isDense(shape: readonly number[], strides: readonly number[]): boolean {
  const dims = shape.map((n, d) => [n, strides[d]!] as const).filter(([n]) => n > 1).sort((a, b) => a[1] - b[1]);
  let next = 1;
  for (const [n, stride] of dims) {
    if (stride !== next) return false;
    next *= n;
  }
  return true;
}

/**
 * Float32 buffers for dq, dk, dv. When q, k, v are the three equal parts of one packed tensor (GPT-2's
 * fused qkv projection viewed as heads), they are views laid out the same way in one buffer, so the
 * gradient of the packed tensor is that buffer, with no copies (lib/autograd/engine.ts piecesInPlace);
 * otherwise three [B, T, H, D] buffers (headsInterleaved).
 */
function gradBuffers(q: Tensor, k: Tensor, v: Tensor, kvShape: readonly number[]): [Tensor, Tensor, Tensor] {
  const [B, H, Tq, D] = q.shape as [number, number, number, number];
  const step = k.offset - q.offset;
  const packed =
    k.storage === q.storage && v.storage === q.storage && step > 0 && v.offset - k.offset === step &&
    [k, v].every((t) => t.shape.every((n, d) => n === q.shape[d]) && t.strides.every((s, d) => s === q.strides[d])) &&
    isDense([...q.shape, 3], [...q.strides, step]);
  if (!packed) return [headsInterleaved(q, B, H, Tq, D), headsInterleaved(q, B, kvShape[1]!, kvShape[2]!, D), headsInterleaved(q, B, kvShape[1]!, kvShape[2]!, D)];
  const buffer = emptyLike([3 * q.size], "float32", q.deviceInfo);
  const part = (i: number) => new Tensor(buffer.storage.retain(), q.shape, "float32", q.strides, i * step);
  const grads: [Tensor, Tensor, Tensor] = [part(0), part(1), part(2)];
  buffer.dispose();
  return grads;
}

/**
 * softmax(q kᵀ · scale + masks) v for q [B, H, Tq, D], k and v [B, Hkv, Tk, D] (F.scaled_dot_product_attention
 * with is_causal, dropout_p and enable_gqa, plus a key-padding mask). Hkv may be any divisor of H
 * (grouped-query attention): key/value head j serves query heads j·H/Hkv … (j+1)·H/Hkv − 1, as
 * transformers' repeat_kv; the CPU reads the shared heads in place, CUDA repeats them. The forward saves one logsumexp per query (and
 * keeps its output, for the backward's rowsum(dO ∘ O)), not the Tq × Tk probabilities; the backward
 * recomputes them (flash-attention style) and gives dq, dk, dv in one native call. q, k, v may be strided views (e.g. slices of a fused qkv projection) as long
 * as D is contiguous. The result is [B, H, Tq, D] stored as [B, Tq, H, D] (see headsInterleaved).
 */
export function scaledDotProductAttention(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions = {}): Tensor {
  const op = "scaledDotProductAttention";
  checkFloat(op, q, k, v);
  if (q.ndim !== 4 || k.ndim !== 4 || v.ndim !== 4) {
    throw new Error(`${op}: q, k, v must be [B, H, T, D], got ${formatShape(q.shape)}, ${formatShape(k.shape)}, ${formatShape(v.shape)}`);
  }
  const [B, H, Tq, D] = q.shape as [number, number, number, number];
  const [Hkv, Tk] = [k.shape[1]!, k.shape[2]!];
  const kvShape = [B, Hkv, Tk, D];
  if (k.shape.some((s, i) => s !== kvShape[i]) || v.shape.some((s, i) => s !== kvShape[i]) || Hkv < 1 || H % Hkv !== 0) {
    throw new Error(
      `${op}: k ${formatShape(k.shape)} and v ${formatShape(v.shape)} must both be [B, Hkv, Tk, D] = [${B}, Hkv, Tk, ${D}] for q ${formatShape(q.shape)}, ` +
        `with Hkv dividing the ${H} query heads (same batch and head size; Tk may differ from Tq)`,
    );
  }
  if (Hkv !== H && q.deviceInfo.type !== "cpu") {
    // Grouped-query attention on CUDA: the kernels take one key/value head per query head, so
    // repeat them (transformers' repeat_kv; the copy's backward sums each group's gradients).
    const g = H / Hkv;
    const repeat = (t: Tensor) => expand(t.unsqueeze(2), [B, Hkv, g, Tk, D]).reshape(B, H, Tk, D);
    return tidy(() => scaledDotProductAttention(q, repeat(k), repeat(v), opts));
  }
  if (Tk === 0 || D === 0) throw new Error(`${op}: needs at least one key and D >= 1, got k ${formatShape(k.shape)}`);
  const causal = opts.causal ?? true;
  if (causal && Tq > Tk) {
    throw new Error(`${op}: causal attention with ${Tq} queries over ${Tk} keys: queries are the last Tq positions, so Tq must be <= Tk`);
  }
  const scale = opts.scale ?? 1 / Math.sqrt(D);
  const mask = opts.attnMask ?? null;
  const window = opts.window ?? null;
  if (window !== null) {
    if (!Number.isInteger(window) || window < 1) throw new Error(`${op}: window must be a positive integer (the keys a query sees, itself included) or null, got ${window}`);
    if (!causal) throw new Error(`${op}: a sliding window needs causal attention (causal: true); got causal: false with window ${window}`);
  }
  if (mask) {
    if (mask.dtype !== "int32" || mask.ndim !== 2 || mask.shape[0] !== B || mask.shape[1] !== Tk) {
      throw new Error(
        `${op}: attnMask must be an int32 key-padding mask [B, Tk] = [${B}, ${Tk}] (1 = attend, 0 = padded), ` +
          `got ${mask.dtype} ${formatShape(mask.shape)}`,
      );
    }
    checkSameDevice(op, q, mask);
  }
  const dropout = opts.dropout ?? 0;
  if (!(dropout >= 0 && dropout < 1)) throw new Error(`${op}: dropout must be in [0, 1), got ${dropout}`);
  const precision = opts.precision ?? "float32";
  if (precision !== "float32" && precision !== "bfloat16") {
    throw new Error(`${op}: precision must be "float32" or "bfloat16", got ${JSON.stringify(precision)}`);
  }
  const { seed, offset } = dropout > 0 ? (opts.generator ?? defaultGenerator).next(B * H * Tq * Tk) : { seed: 0n, offset: 0n };
  const dims = [B, H, Tq, Tk, D] as const;
  const kvRounded = precision === "bfloat16" && opts.kvRounded === true;
  const stream = { dims, scale, causal, window: window ?? 0, dropout, seed, offset, precision: DTYPE_CODE[precision], kvGroup: H / Hkv, kvRounded };
  // q, k, v and their gradients as [batch, head, time] strided views (D is contiguous).
  const heads = (t: Tensor) => stridedView(t, [t.strides[0]!, t.strides[1]!, t.strides[2]!]);
  const qc = rowContiguous(q), kc = rowContiguous(k), vc = rowContiguous(v), mc = mask && contiguousInput(mask);
  const out = headsInterleaved(q, B, H, Tq, D);
  const lse = newFloat([B, H, Tq], q);
  native().attentionForward({ ...stream, q: heads(qc), k: heads(kc), v: heads(vc), keep: viewOrNull(mc), out: heads(out), lse: lse.nativeView });
  record(
    op, out, [q, k, v],
    (g, [qs, ks, vs, lses, os, ms]) => {
      const gc = rowContiguous(g);
      const [dq, dk, dv] = gradBuffers(qs!, ks!, vs!, kvShape);
      native().attentionBackward({
        ...stream, q: heads(qs!), k: heads(ks!), v: heads(vs!), keep: viewOrNull(ms ?? null), lse: lses!.nativeView,
        out: heads(os!), dout: heads(gc), dq: heads(dq), dk: heads(dk), dv: heads(dv),
      });
      if (gc !== g) gc.dispose();
      return [dq, dk, dv];
    },
    [qc, kc, vc, lse, out, ...(mc ? [mc] : [])],
  );
  for (const [c, t] of [[qc, q], [kc, k], [vc, v], [mc, mask]] as const) if (c && c !== t) c.dispose();
  lse.dispose();
  return out;
}
