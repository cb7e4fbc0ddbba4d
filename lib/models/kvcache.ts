// The KV cache of incremental decoding and what a causal decoder offers generate() (lib/models/
// generate.ts): the one decoding loop serves GPT-2 and the Llama family through this interface.
import type { Module } from "../nn/module.js";
import type { AttentionPrecision } from "../ops/attention.js";
import { copyInto } from "../tensor/tensor.js";
import { empty } from "../tensor/creation.js";
import { keep, tidy } from "../tensor/scope.js";
import type { DeviceLike } from "../tensor/device.js";
import type { Tensor } from "../tensor/tensor.js";

/** Keys and values of the positions seen so far, per layer: each [B, H, T_past, D]. */
export interface LayerCache {
  key: Tensor;
  value: Tensor;
}

/**
 * A KV cache for incremental decoding: each layer's keys and values of all earlier positions.
 * Each layer's keys and values live in a buffer with room to spare along time ([B, H, capacity, D],
 * capacity doubling when full), and `layers` holds views of its first T positions: a new token
 * writes only its own position, where concatenating would copy the whole cache every token (12 MB
 * a token for GPT-2 124M at 160 positions). The attention reads the views in place. For inference:
 * appending records no autograd. Owns its tensors: dispose() it when generation ends.
 */
export class KVCache {
  readonly layers: (LayerCache | null)[];
  readonly #buffers: (LayerCache | null)[];
  constructor(nLayer: number) {
    this.layers = new Array<LayerCache | null>(nLayer).fill(null);
    this.#buffers = new Array<LayerCache | null>(nLayer).fill(null);
  }
  /** Positions already cached. */
  get length(): number {
    return this.layers[0]?.key.shape[2] ?? 0;
  }
  /**
   * Appends this step's k, v [B, H, T, D] to layer i and returns the full keys and values. With
   * roundToBf16 the stored values are rounded to bf16 (still float32 tensors): what a bf16 model's
   * attention rounds them to anyway, done once per position instead of over the whole cache at
   * every token (scaledDotProductAttention's kvRounded).
   */
  append(i: number, key: Tensor, value: Tensor, opts: { roundToBf16?: boolean } = {}): LayerCache {
    const past = this.layers[i]?.key.shape[2] ?? 0, total = past + key.shape[2]!;
    let buf = this.#buffers[i];
    const capacity = buf?.key.shape[2] ?? 0;
    if (total > capacity) {
      // Doubling keeps the copies of a long generation to O(T) in all.
      const grown = Math.max(total, 2 * capacity, 64);
      const make = (t: Tensor, old: Tensor | undefined) => {
        const b = keep(empty([t.shape[0]!, t.shape[1]!, grown, t.shape[3]!], { dtype: t.dtype, device: t.device }));
        if (old && past > 0) tidy(() => copyInto(b.slice(2, 0, past), old.slice(2, 0, past)));
        return b;
      };
      const next = { key: make(key, buf?.key), value: make(value, buf?.value) };
      buf?.key.dispose();
      buf?.value.dispose();
      buf = this.#buffers[i] = next;
    }
    const full = buf!;
    tidy(() => {
      const stored = (t: Tensor) => (opts.roundToBf16 ? t.to(t.deviceInfo, "bfloat16").to(t.deviceInfo, "float32") : t);
      copyInto(full.key.slice(2, past, total), stored(key));
      copyInto(full.value.slice(2, past, total), stored(value));
    });
    this.layers[i]?.key.dispose();
    this.layers[i]?.value.dispose();
    // The views outlive the tidy() scope of the step that extends the cache.
    const views = { key: keep(full.key.slice(2, 0, total)), value: keep(full.value.slice(2, 0, total)) };
    this.layers[i] = views;
    return views;
  }
  /**
   * append() for an attention of `precision`: a bf16 model's cache on the CPU stores its keys and
   * values rounded, and kvRounded tells the attention so (it then reads the cache in place instead
   * of rounding a copy of all of it every token; CUDA's kernels round as they load).
   */
  appendFor(i: number, key: Tensor, value: Tensor, precision: AttentionPrecision): LayerCache & { kvRounded: boolean } {
    const kvRounded = precision === "bfloat16" && key.device === "cpu";
    return { ...this.append(i, key, value, { roundToBf16: kvRounded }), kvRounded };
  }
  dispose(): void {
    for (const l of [...this.layers, ...this.#buffers]) {
      l?.key.dispose();
      l?.value.dispose();
    }
    this.layers.fill(null);
    this.#buffers.fill(null);
  }
}

/** The model-specific facts generate() decodes with. */
export interface GenerationSpec {
  /** Layers of the KV cache. */
  numLayers: number;
  /** Total length (prompt + new tokens) past which the model has no position: Infinity when none. */
  maxPositions: number;
  /** Generation stops after any of these (the config's eos_token_id, an int or a list). */
  eosTokenIds: readonly number[];
  /** Where the input ids go. */
  device: DeviceLike;
}

/** A causal language model generate() can decode with (GPT2LMHeadModel, LlamaForCausalLM). */
export interface CausalDecoder extends Module {
  generationSpec(): GenerationSpec;
  /**
   * inputIds int32 [B, T] (only the positions after the cache's, when given) -> logits [B, T, vocab],
   * or of the last `logitsToKeep` positions when the model honours it (generate() asks for 1).
   */
  forward(input: { inputIds: Tensor; cache?: KVCache | null; logitsToKeep?: number }): { logits: Tensor };
}
