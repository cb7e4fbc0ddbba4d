// The Llama family's module tree written down from a config, with the names, kinds and order of
// LlamaForCausalLM's namedModules() (test/analysis/llama-shapes.test.ts checks them against real
// instances), for parameter tables that build no model; and the published sizes `lowrank params`
// offers as presets.
import type { ModuleShape } from "../../nn/shapes.js";
import { LlamaConfig } from "./config.js";

/**
 * config.json of published models, the fields that set their shapes, copied from the Hugging Face
 * Hub (each model's config.json at the URL given); LlamaConfig.fromHF reads them as it reads the
 * file. Their parameter counts are the model cards' totals: SmolLM2-135M 134,515,008,
 * Qwen2.5-0.5B 494,032,768 (card: 0.49B), Llama-3.2-1B 1,235,814,400 (card: 1.23B).
 */
export const LLAMA_PRESETS = {
  // https://huggingface.co/HuggingFaceTB/SmolLM2-135M/blob/main/config.json
  "smollm2-135m": {
    model_type: "llama", vocab_size: 49152, hidden_size: 576, intermediate_size: 1536, num_hidden_layers: 30,
    num_attention_heads: 9, num_key_value_heads: 3, max_position_embeddings: 8192, rope_theta: 100000, rms_norm_eps: 1e-5,
    tie_word_embeddings: true, bos_token_id: 0, eos_token_id: 0,
  },
  // https://huggingface.co/Qwen/Qwen2.5-0.5B/blob/main/config.json
  "qwen2.5-0.5b": {
    model_type: "qwen2", vocab_size: 151936, hidden_size: 896, intermediate_size: 4864, num_hidden_layers: 24,
    num_attention_heads: 14, num_key_value_heads: 2, max_position_embeddings: 32768, rope_theta: 1000000, rms_norm_eps: 1e-6,
    tie_word_embeddings: true, sliding_window: 32768, use_sliding_window: false, max_window_layers: 24, bos_token_id: 151643, eos_token_id: 151643,
  },
  // https://huggingface.co/meta-llama/Llama-3.2-1B/blob/main/config.json
  "llama-3.2-1b": {
    model_type: "llama", vocab_size: 128256, hidden_size: 2048, intermediate_size: 8192, num_hidden_layers: 16,
    num_attention_heads: 32, num_key_value_heads: 8, head_dim: 64, max_position_embeddings: 131072, rope_theta: 500000, rms_norm_eps: 1e-5,
    rope_scaling: { factor: 32, high_freq_factor: 4, low_freq_factor: 1, original_max_position_embeddings: 8192, rope_type: "llama3" },
    tie_word_embeddings: true, bos_token_id: 128000, eos_token_id: 128001,
  },
} as const;
export type LlamaPreset = keyof typeof LLAMA_PRESETS;
export const LLAMA_PRESET_NAMES = Object.keys(LLAMA_PRESETS) as LlamaPreset[];

export function llamaPresetConfig(name: LlamaPreset): LlamaConfig {
  return LlamaConfig.fromHF(structuredClone(LLAMA_PRESETS[name]) as unknown as Record<string, unknown>);
}

/**
 * LlamaForCausalLM's named modules (root excluded) with the shapes LoRA needs. They end with
 * lm_head, the output head that "all-linear" leaves out; a tied one holds embed_tokens' weight.
 */
export function llamaModuleShapes(config: LlamaConfig): ModuleShape[] {
  const C = config.hiddenSize, I = config.intermediateSize, D = config.attentionHeadDim;
  const q = config.numAttentionHeads * D, kv = config.kvHeads * D;
  const linear = (name: string, inFeatures: number, outFeatures: number): ModuleShape => ({ name, kind: "linear", inFeatures, outFeatures });
  const other = (name: string): ModuleShape => ({ name, kind: "other" });
  const tied = config.tieWordEmbeddings;
  const embed: ModuleShape = { name: "model.embed_tokens", kind: "embedding", numEmbeddings: config.vocabSize, embeddingDim: C, ...(tied ? { tiedWith: "lm_head" } : {}) };
  const out: ModuleShape[] = [other("model"), embed, other("model.layers")];
  for (let i = 0; i < config.numHiddenLayers; i++) {
    const l = `model.layers.${i}`;
    out.push(
      other(l), other(`${l}.self_attn`),
      linear(`${l}.self_attn.q_proj`, C, q), linear(`${l}.self_attn.k_proj`, C, kv), linear(`${l}.self_attn.v_proj`, C, kv), linear(`${l}.self_attn.o_proj`, q, C),
      ...(config.qkNorm ? [other(`${l}.self_attn.q_norm`), other(`${l}.self_attn.k_norm`)] : []),
      other(`${l}.mlp`), linear(`${l}.mlp.gate_proj`, C, I), linear(`${l}.mlp.up_proj`, C, I), linear(`${l}.mlp.down_proj`, I, C),
      other(`${l}.input_layernorm`), other(`${l}.post_attention_layernorm`),
    );
  }
  out.push(other("model.norm"));
  out.push({ ...linear("lm_head", C, config.vocabSize), isOutputHead: true, ...(tied ? { tiedWith: "model.embed_tokens" } : {}) });
  return out;
}
