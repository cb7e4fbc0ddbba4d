// The KV cache of incremental decoding and what a causal decoder offers generate() (lib/models/
// generate.ts): the one decoding loop serves GPT-2 and the Llama family through this interface.
import { concat } from "../ops/shape.js";
import type { Module } from "../nn/module.js";
import { keep } from "../tensor/scope.js";
import type { DeviceLike } from "../tensor/device.js";
import type { Tensor } from "../tensor/tensor.js";

/** Keys and values of the positions seen so far, per layer: each [B, H, T_past, D]. */
export interface LayerCache {
  key: Tensor;
  value: Tensor;
}

/**
 * A KV cache for incremental decoding: each layer's keys and values of all earlier positions.
 * Owns its tensors: dispose() it when generation ends.
 */
export class KVCache {
  readonly layers: (LayerCache | null)[];
  constructor(nLayer: number) {
    this.layers = new Array<LayerCache | null>(nLayer).fill(null);
  }
  /** Positions already cached. */
  get length(): number {
    return this.layers[0]?.key.shape[2] ?? 0;
  }
  /** Appends this step's k, v [B, H, T, D] to layer i and returns the full keys and values. */
  append(i: number, key: Tensor, value: Tensor): LayerCache {
    const prev = this.layers[i];
    // The cache outlives the tidy() scope of the step that extends it.
    const next = prev
      ? { key: keep(concat([prev.key, key], 2)), value: keep(concat([prev.value, value], 2)) }
      : { key: keep(key.contiguous()), value: keep(value.contiguous()) };
    prev?.key.dispose();
    prev?.value.dispose();
    this.layers[i] = next;
    return next;
  }
  dispose(): void {
    for (const l of this.layers) {
      l?.key.dispose();
      l?.value.dispose();
    }
    this.layers.fill(null);
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
  /** inputIds int32 [B, T] (only the positions after the cache's, when given) -> logits [B, T, vocab]. */
  forward(input: { inputIds: Tensor; cache?: KVCache | null }): { logits: Tensor };
}
