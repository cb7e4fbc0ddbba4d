// Llama-family hyper-parameters (model_type llama, mistral, qwen2, qwen3), with config.json's snake_case
// names mapped to camelCase. What the decoder does not implement yet is refused by field name,
// so a config is never run with semantics silently dropped.
import { ROPE_SCALING_TYPES, yarnBetas, type RopeScaling } from "../../ops/rope.js";

export const LLAMA_MODEL_TYPES = ["llama", "mistral", "qwen2", "qwen3"] as const;
export type LlamaModelType = (typeof LLAMA_MODEL_TYPES)[number];

export interface LlamaConfigInit {
  modelType?: LlamaModelType;
  vocabSize?: number;
  hiddenSize?: number;
  intermediateSize?: number;
  numHiddenLayers?: number;
  numAttentionHeads?: number;
  /** Key/value heads (grouped-query attention); null means numAttentionHeads. */
  numKeyValueHeads?: number | null;
  /** Width of one attention head; null means hiddenSize / numAttentionHeads. */
  headDim?: number | null;
  hiddenAct?: string;
  rmsNormEps?: number;
  ropeTheta?: number;
  /** RoPE frequency scaling (rope_type "linear" or "llama3"); null: plain RoPE. */
  ropeScaling?: RopeScaling | null;
  tieWordEmbeddings?: boolean;
  /** Bias on q/k/v and o (llama, mistral, qwen3); Qwen2 always has it on q/k/v only. */
  attentionBias?: boolean;
  /** Bias on gate_proj, up_proj and down_proj (llama's mlp_bias; the other types have none). */
  mlpBias?: boolean;
  maxPositionEmbeddings?: number;
  /**
   * Keys a query sees, itself included (sliding_window): every layer of mistral; for qwen2 and
   * qwen3 only with useSlidingWindow, on the layers layerTypes (or maxWindowLayers) marks; never for
   * llama. null: full causal attention.
   */
  slidingWindow?: number | null;
  /** qwen2, qwen3: whether slidingWindow is used at all (use_sliding_window). */
  useSlidingWindow?: boolean;
  /** qwen2, qwen3 without layerTypes: layers from this index on use the window (max_window_layers). */
  maxWindowLayers?: number;
  /** qwen2, qwen3: "full_attention" or "sliding_attention" per layer (layer_types); null: from maxWindowLayers. */
  layerTypes?: string[] | null;
  initializerRange?: number;
  bosTokenId?: number | null;
  eosTokenId?: number | number[] | null;
  padTokenId?: number | null;
}

/** transformers' config.json key for each plain field (rope scaling is read and written apart). */
const HF_KEYS: Record<Exclude<keyof LlamaConfigInit, "ropeScaling">, string> = {
  modelType: "model_type",
  vocabSize: "vocab_size",
  hiddenSize: "hidden_size",
  intermediateSize: "intermediate_size",
  numHiddenLayers: "num_hidden_layers",
  numAttentionHeads: "num_attention_heads",
  numKeyValueHeads: "num_key_value_heads",
  headDim: "head_dim",
  hiddenAct: "hidden_act",
  rmsNormEps: "rms_norm_eps",
  ropeTheta: "rope_theta",
  tieWordEmbeddings: "tie_word_embeddings",
  attentionBias: "attention_bias",
  mlpBias: "mlp_bias",
  maxPositionEmbeddings: "max_position_embeddings",
  slidingWindow: "sliding_window",
  useSlidingWindow: "use_sliding_window",
  maxWindowLayers: "max_window_layers",
  layerTypes: "layer_types",
  initializerRange: "initializer_range",
  bosTokenId: "bos_token_id",
  eosTokenId: "eos_token_id",
  padTokenId: "pad_token_id",
};

/** A config value as JSON (strings quoted, so "2" and 2 differ), cut short for messages. */
function shown(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 80 ? `${text.slice(0, 80)}…` : text;
}

/**
 * The config.json fields whose semantics lowrank does not implement yet, when set: each message
 * names the field and what is supported. Checked on the raw JSON, before defaults apply.
 */
function unsupportedFields(json: Record<string, unknown>): string[] {
  const out: string[] = [];
  if (typeof json.attention_dropout === "number" && json.attention_dropout !== 0) {
    out.push(`attention_dropout ${shown(json.attention_dropout)} (only 0 is supported)`);
  }
  if (typeof json.pretraining_tp === "number" && json.pretraining_tp !== 1) out.push(`pretraining_tp ${shown(json.pretraining_tp)} (only 1 is supported)`);
  return out;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

/**
 * The rope scaling of config.json as transformers reads it: transformers 4's rope_scaling, else
 * transformers 5's rope_parameters, its type under "rope_type" or the older "type" ("default":
 * none). llama3's original_max_position_embeddings comes from the dict, else the top level,
 * else max_position_embeddings (standardize_rope_params, checked with transformers 5.18).
 */
function ropeScalingFromHF(json: Record<string, unknown>): RopeScaling | null {
  const field = isObject(json.rope_scaling) && Object.keys(json.rope_scaling).length ? "rope_scaling" : "rope_parameters";
  const rope = json[field];
  const partial = (isObject(rope) ? rope.partial_rotary_factor : undefined) ?? json.partial_rotary_factor;
  if (partial !== undefined && partial !== null && partial !== 1) {
    throw new Error(`LlamaConfig: config.json sets partial_rotary_factor ${shown(partial)}; only 1 (RoPE on the whole head) is supported`);
  }
  if (rope === undefined || rope === null) return null;
  if (!isObject(rope)) throw new Error(`LlamaConfig: config.json's ${field} must be an object or null, got ${shown(rope)}`);
  if (Object.values(rope).some(isObject)) {
    throw new Error(`LlamaConfig: config.json's ${field} ${shown(rope)} holds one rope setting per layer type; lowrank's Llama decoder takes one for all layers`);
  }
  const type = rope.rope_type ?? rope.type ?? "default";
  if (type === "default") return null;
  const num = (key: string, fallback?: unknown): number => {
    const v = rope[key] ?? fallback;
    if (typeof v !== "number") throw new Error(`LlamaConfig: config.json's ${field} of type ${shown(type)} needs a number ${key}, got ${shown(v)}`);
    return v;
  };
  if (type === "linear") return { ropeType: "linear", factor: num("factor") };
  // llama3's and yarn's pretraining context: the dict's, else the top level's, else max_position_embeddings
  const originalMax = () => num("original_max_position_embeddings", json.original_max_position_embeddings ?? json.max_position_embeddings ?? 2048);
  if (type === "llama3") {
    return {
      ropeType: "llama3", factor: num("factor"), lowFreqFactor: num("low_freq_factor"), highFreqFactor: num("high_freq_factor"),
      originalMaxPositionEmbeddings: originalMax(),
    };
  }
  if (type === "yarn") {
    const opt = (key: string): number | null => (rope[key] === undefined || rope[key] === null ? null : num(key));
    if (rope.truncate !== undefined && typeof rope.truncate !== "boolean") {
      throw new Error(`LlamaConfig: config.json's ${field} of type "yarn" needs truncate true or false, got ${shown(rope.truncate)}`);
    }
    return {
      ropeType: "yarn", factor: num("factor"), originalMaxPositionEmbeddings: originalMax(),
      attentionFactor: opt("attention_factor"), betaFast: opt("beta_fast"), betaSlow: opt("beta_slow"), mscale: opt("mscale"),
      mscaleAllDim: opt("mscale_all_dim"), truncate: (rope.truncate as boolean | undefined) ?? null,
    };
  }
  throw new Error(
    `LlamaConfig: config.json's ${field} has rope type ${shown(type)}, which lowrank does not implement; supported: "default" (plain RoPE), ${ROPE_SCALING_TYPES.map((t) => `"${t}"`).join(", ")}`,
  );
}

/** rope_scaling as transformers 4 writes it (snake_case, with rope_type). */
function ropeScalingToHF(s: RopeScaling | null): Record<string, unknown> | null {
  if (!s) return null;
  if (s.ropeType === "linear") return { factor: s.factor, rope_type: s.ropeType };
  if (s.ropeType === "yarn") {
    const given = {
      attention_factor: s.attentionFactor, beta_fast: s.betaFast, beta_slow: s.betaSlow, mscale: s.mscale, mscale_all_dim: s.mscaleAllDim, truncate: s.truncate,
    };
    const set = Object.entries(given).filter(([, v]) => v !== null);
    return Object.fromEntries([["factor", s.factor], ["original_max_position_embeddings", s.originalMaxPositionEmbeddings], ["rope_type", "yarn"], ...set].sort(([a], [b]) => (a! < b! ? -1 : 1)));
  }
  return {
    factor: s.factor, high_freq_factor: s.highFreqFactor, low_freq_factor: s.lowFreqFactor,
    original_max_position_embeddings: s.originalMaxPositionEmbeddings, rope_type: s.ropeType,
  };
}

/** The window fields each model type's transformers config has (toHF writes only those). */
const QWEN_WINDOW_FIELDS: readonly string[] = ["slidingWindow", "useSlidingWindow", "maxWindowLayers", "layerTypes"];
const WINDOW_FIELDS: Record<LlamaModelType, readonly string[]> = { llama: [], mistral: ["slidingWindow"], qwen2: QWEN_WINDOW_FIELDS, qwen3: QWEN_WINDOW_FIELDS };

export class LlamaConfig {
  modelType: LlamaModelType = "llama";
  vocabSize = 32000;
  hiddenSize = 4096;
  intermediateSize = 11008;
  numHiddenLayers = 32;
  numAttentionHeads = 32;
  numKeyValueHeads: number | null = null;
  headDim: number | null = null;
  hiddenAct = "silu";
  rmsNormEps = 1e-6;
  ropeTheta = 10000;
  ropeScaling: RopeScaling | null = null;
  tieWordEmbeddings = false;
  attentionBias = false;
  mlpBias = false;
  maxPositionEmbeddings = 2048;
  slidingWindow: number | null = null;
  useSlidingWindow = false;
  maxWindowLayers = 28;
  layerTypes: string[] | null = null;
  initializerRange = 0.02;
  bosTokenId: number | null = 1;
  eosTokenId: number | number[] | null = 2;
  padTokenId: number | null = null;

  constructor(init: LlamaConfigInit = {}) {
    Object.assign(this, Object.fromEntries(Object.entries(init).filter(([, v]) => v !== undefined)));
    this.validate();
  }

  get kvHeads(): number {
    return this.numKeyValueHeads ?? this.numAttentionHeads;
  }
  /** head_dim, else hidden_size // num_attention_heads (floor division, as transformers: q_proj then has fewer outputs than hidden_size). */
  get attentionHeadDim(): number {
    return this.headDim ?? Math.floor(this.hiddenSize / this.numAttentionHeads);
  }
  /** Bias on q_proj, k_proj, v_proj: Qwen2 always, the others with attention_bias. */
  get qkvBias(): boolean {
    return this.modelType === "qwen2" || this.attentionBias;
  }
  /** Bias on o_proj: only with attention_bias (Qwen2's o_proj has none). */
  get oBias(): boolean {
    return this.modelType !== "qwen2" && this.attentionBias;
  }
  /** Bias on the MLP's three projections: llama with mlp_bias (transformers' other types ignore the key). */
  get mlpBiasOn(): boolean {
    return this.modelType === "llama" && this.mlpBias;
  }
  /** Qwen3's RMSNorm over each head of q and k (q_norm, k_norm, weights of size head_dim), before RoPE. */
  get qkNorm(): boolean {
    return this.modelType === "qwen3";
  }

  /**
   * The sliding window of decoder layer `layer` (a query sees itself and the window − 1 keys
   * before it), or null for full causal attention, as transformers reads the config: mistral
   * windows every layer; qwen2 and qwen3 only with use_sliding_window, the layers layer_types
   * marks "sliding_attention" (by default those from max_window_layers on); llama never.
   */
  layerSlidingWindow(layer: number): number | null {
    if (this.slidingWindow === null || this.modelType === "llama") return null;
    if (this.modelType === "mistral") return this.slidingWindow;
    if (!this.useSlidingWindow) return null;
    const sliding = this.layerTypes ? this.layerTypes[layer] === "sliding_attention" : layer >= this.maxWindowLayers;
    return sliding ? this.slidingWindow : null;
  }

  /** The parameter count, a tied lm_head counted once (as PyTorch's model.parameters() does). */
  get parameterCount(): number {
    const C = this.hiddenSize, I = this.intermediateSize, D = this.attentionHeadDim;
    const q = this.numAttentionHeads * D, kv = this.kvHeads * D;
    const attn = C * q + 2 * C * kv + q * C + (this.qkvBias ? q + 2 * kv : 0) + (this.oBias ? C : 0) + (this.qkNorm ? 2 * D : 0);
    const layer = attn + 3 * C * I + (this.mlpBiasOn ? 2 * I + C : 0) + 2 * C;
    return this.vocabSize * C * (this.tieWordEmbeddings ? 1 : 2) + this.numHiddenLayers * layer + C;
  }

  describeSize(): string {
    const fields = ["hiddenSize", "intermediateSize", "numHiddenLayers", "numAttentionHeads", "vocabSize"] as const;
    return fields.map((f) => `${HF_KEYS[f]} ${this[f]}`).join(", ");
  }

  private validate(): void {
    const where = `LlamaConfig (${this.modelType})`;
    if (!LLAMA_MODEL_TYPES.includes(this.modelType)) {
      throw new Error(`LlamaConfig: model_type ${shown(this.modelType)} is not supported; lowrank's Llama decoder implements ${LLAMA_MODEL_TYPES.join(", ")}`);
    }
    for (const key of ["vocabSize", "hiddenSize", "intermediateSize", "numHiddenLayers", "numAttentionHeads", "maxPositionEmbeddings"] as const) {
      if (!Number.isInteger(this[key]) || this[key] <= 0) throw new Error(`${where}: ${HF_KEYS[key]} must be a positive integer, got ${shown(this[key])}`);
    }
    for (const key of ["numKeyValueHeads", "headDim"] as const) {
      const v = this[key];
      if (v !== null && (!Number.isInteger(v) || v <= 0)) throw new Error(`${where}: ${HF_KEYS[key]} must be a positive integer or null, got ${shown(v)}`);
    }
    if (this.attentionHeadDim % 2 !== 0) throw new Error(`${where}: the head dimension (${this.attentionHeadDim}) must be even for rotary embeddings`);
    if (this.numAttentionHeads % this.kvHeads !== 0) {
      throw new Error(`${where}: num_attention_heads (${this.numAttentionHeads}) must be a multiple of num_key_value_heads (${this.kvHeads})`);
    }
    if (this.slidingWindow !== null && (!Number.isInteger(this.slidingWindow) || this.slidingWindow <= 0)) {
      throw new Error(`${where}: sliding_window must be a positive integer or null, got ${shown(this.slidingWindow)}`);
    }
    if (this.layerTypes !== null) {
      const kinds = ["full_attention", "sliding_attention"];
      if (!Array.isArray(this.layerTypes) || this.layerTypes.length !== this.numHiddenLayers || this.layerTypes.some((t) => !kinds.includes(t))) {
        throw new Error(`${where}: layer_types must list "full_attention" or "sliding_attention" for each of the ${this.numHiddenLayers} layers, got ${shown(this.layerTypes)}`);
      }
    }
    if (this.hiddenAct !== "silu") throw new Error(`${where}: hidden_act ${shown(this.hiddenAct)} is not supported; the SwiGLU MLP implements "silu"`);
    if (!(this.rmsNormEps > 0)) throw new Error(`${where}: rms_norm_eps must be > 0, got ${shown(this.rmsNormEps)}`);
    if (!(this.ropeTheta > 0)) throw new Error(`${where}: rope_theta must be > 0, got ${shown(this.ropeTheta)}`);
    this.validateRopeScaling(where);
    if (!Number.isSafeInteger(this.parameterCount)) {
      throw new Error(`${where}: ${this.describeSize()} make ${this.parameterCount.toPrecision(3)} parameters, more than any memory holds; check these fields of config.json`);
    }
  }

  private validateRopeScaling(where: string): void {
    const s = this.ropeScaling;
    if (!s) return;
    if (!(ROPE_SCALING_TYPES as readonly string[]).includes(s.ropeType)) {
      throw new Error(`${where}: rope scaling type ${shown(s.ropeType)} is not supported; supported: ${ROPE_SCALING_TYPES.join(", ")} (or null for plain RoPE)`);
    }
    if (!(s.factor > 0 && Number.isFinite(s.factor))) throw new Error(`${where}: rope_scaling.factor must be a finite number > 0, got ${shown(s.factor)}`);
    if (s.ropeType === "llama3") {
      if (!(s.lowFreqFactor > 0)) throw new Error(`${where}: rope_scaling.low_freq_factor must be > 0, got ${shown(s.lowFreqFactor)}`);
      if (!(s.highFreqFactor > s.lowFreqFactor)) {
        throw new Error(`${where}: rope_scaling.high_freq_factor (${shown(s.highFreqFactor)}) must be greater than low_freq_factor (${shown(s.lowFreqFactor)})`);
      }
    }
    if (s.ropeType !== "linear" && !(s.originalMaxPositionEmbeddings > 0)) {
      throw new Error(`${where}: rope_scaling.original_max_position_embeddings must be > 0, got ${shown(s.originalMaxPositionEmbeddings)}`);
    }
    if (s.ropeType === "yarn") {
      if (s.attentionFactor !== null && !(s.attentionFactor > 0)) throw new Error(`${where}: rope_scaling.attention_factor must be > 0, got ${shown(s.attentionFactor)}`);
      const { betaFast, betaSlow } = yarnBetas(s);
      if (betaFast < betaSlow) throw new Error(`${where}: rope_scaling.beta_fast (${shown(betaFast)}) must be at least beta_slow (${shown(betaSlow)})`);
    }
  }

  /**
   * Reads transformers' config.json. rope_theta is top-level (transformers 4) or in rope_parameters
   * (transformers 5), rope scaling in rope_scaling or rope_parameters (ropeScalingFromHF). Fields
   * this decoder does not implement yet (attention_dropout, pretraining_tp, …) are refused by name;
   * unknown keys are ignored (other heads or tasks).
   */
  static fromHF(json: Record<string, unknown>): LlamaConfig {
    if (!LLAMA_MODEL_TYPES.includes(json.model_type as LlamaModelType)) {
      throw new Error(`LlamaConfig: config.json has model_type ${shown(json.model_type)}; supported: ${LLAMA_MODEL_TYPES.join(", ")}`);
    }
    const unsupported = unsupportedFields(json);
    if (unsupported.length) throw new Error(`LlamaConfig: config.json sets what lowrank does not support yet: ${unsupported.join("; ")}`);
    const init: Record<string, unknown> = {};
    for (const [field, key] of Object.entries(HF_KEYS)) if (key in json) init[field] = json[key];
    const rope = json.rope_parameters as Record<string, unknown> | undefined | null;
    if (init.ropeTheta === undefined && rope && typeof rope === "object" && rope.rope_theta !== undefined) init.ropeTheta = rope.rope_theta;
    init.ropeScaling = ropeScalingFromHF(json);
    // transformers' MistralConfig, Qwen2Config and Qwen3Config default sliding_window to 4096 (used
    // by Qwen only with use_sliding_window); LlamaConfig has no window at all.
    if (json.model_type === "llama") init.slidingWindow = null;
    else if (!("sliding_window" in json)) init.slidingWindow = 4096;
    return new LlamaConfig(init as LlamaConfigInit);
  }

  /**
   * config.json as transformers 4 writes it (the fields lowrank knows, plus architectures), with
   * only the window fields the model type has: transformers reads a mistral config with
   * layer_types as Ministral, and llama has no window. Checked by loading every llama-tiny
   * fixture saved by savePretrained in transformers 5.18: the same logits.
   */
  toHF(): Record<string, unknown> {
    const arch = { llama: "LlamaForCausalLM", mistral: "MistralForCausalLM", qwen2: "Qwen2ForCausalLM", qwen3: "Qwen3ForCausalLM" }[this.modelType];
    const out: Record<string, unknown> = { architectures: [arch], rope_scaling: ropeScalingToHF(this.ropeScaling) };
    for (const [field, key] of Object.entries(HF_KEYS)) {
      if (QWEN_WINDOW_FIELDS.includes(field) && !WINDOW_FIELDS[this.modelType].includes(field)) continue;
      if (field === "mlpBias" && this.modelType !== "llama") continue; // only LlamaConfig has it
      // absent, transformers derives them (Qwen2's attention reads head_dim as given, null included)
      if ((field === "layerTypes" || field === "headDim") && this[field] === null) continue;
      out[key] = this[field as keyof LlamaConfigInit];
    }
    return Object.fromEntries(Object.entries(out).sort(([a], [b]) => (a < b ? -1 : 1)));
  }
}
