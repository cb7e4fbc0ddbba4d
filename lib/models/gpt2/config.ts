// GPT-2's hyper-parameters, with config.json's snake_case names mapped to camelCase.

export interface GPT2ConfigInit {
  vocabSize?: number;
  nPositions?: number;
  nEmbd?: number;
  nLayer?: number;
  nHead?: number;
  /** Width of the MLP's hidden layer; null means 4 * nEmbd. */
  nInner?: number | null;
  activationFunction?: string;
  residPdrop?: number;
  embdPdrop?: number;
  attnPdrop?: number;
  layerNormEpsilon?: number;
  initializerRange?: number;
  scaleAttnWeights?: boolean;
  scaleAttnByInverseLayerIdx?: boolean;
  reorderAndUpcastAttn?: boolean;
  tieWordEmbeddings?: boolean;
  bosTokenId?: number | null;
  eosTokenId?: number | null;
  padTokenId?: number | null;
}

/** transformers' config.json key for each field. */
const HF_KEYS: Record<keyof GPT2ConfigInit, string> = {
  vocabSize: "vocab_size",
  nPositions: "n_positions",
  nEmbd: "n_embd",
  nLayer: "n_layer",
  nHead: "n_head",
  nInner: "n_inner",
  activationFunction: "activation_function",
  residPdrop: "resid_pdrop",
  embdPdrop: "embd_pdrop",
  attnPdrop: "attn_pdrop",
  layerNormEpsilon: "layer_norm_epsilon",
  initializerRange: "initializer_range",
  scaleAttnWeights: "scale_attn_weights",
  scaleAttnByInverseLayerIdx: "scale_attn_by_inverse_layer_idx",
  reorderAndUpcastAttn: "reorder_and_upcast_attn",
  tieWordEmbeddings: "tie_word_embeddings",
  bosTokenId: "bos_token_id",
  eosTokenId: "eos_token_id",
  padTokenId: "pad_token_id",
};

/**
 * The activations of GPT-2 checkpoints lowrank implements, as transformers' ACT2FN names them:
 * the tanh GELU ("gelu_new", "gelu_pytorch_tanh"), the exact GELU ("gelu": Cerebras-GPT), ReLU,
 * SiLU ("silu", "swish").
 */
const SUPPORTED_ACTIVATIONS = ["gelu_new", "gelu_pytorch_tanh", "gelu", "relu", "silu", "swish"];

/** A config value as JSON (strings quoted, so "2" and 2 differ), cut short for messages. */
function shown(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 80 ? `${text.slice(0, 80)}…` : text;
}

export class GPT2Config {
  vocabSize = 50257;
  nPositions = 1024;
  nEmbd = 768;
  nLayer = 12;
  nHead = 12;
  nInner: number | null = null;
  activationFunction = "gelu_new";
  residPdrop = 0.1;
  embdPdrop = 0.1;
  attnPdrop = 0.1;
  layerNormEpsilon = 1e-5;
  initializerRange = 0.02;
  scaleAttnWeights = true;
  scaleAttnByInverseLayerIdx = false;
  /** Only changes float16 numerics in transformers; lowrank's attention accumulates in float32 anyway. */
  reorderAndUpcastAttn = false;
  tieWordEmbeddings = true;
  bosTokenId: number | null = 50256;
  eosTokenId: number | null = 50256;
  padTokenId: number | null = null;

  constructor(init: GPT2ConfigInit = {}) {
    Object.assign(this, Object.fromEntries(Object.entries(init).filter(([, v]) => v !== undefined)));
    this.validate();
  }

  /** GPT-2 124M (transformers' GPT2Config() defaults). */
  static gpt2Small(): GPT2Config {
    return new GPT2Config();
  }

  get innerDim(): number {
    return this.nInner ?? 4 * this.nEmbd;
  }
  get headDim(): number {
    return this.nEmbd / this.nHead;
  }

  /** The model's parameter count, a tied lm_head counted once (as PyTorch's model.parameters() does). */
  get parameterCount(): number {
    const C = this.nEmbd, I = this.innerDim;
    const layerNorm = 2 * C;
    const conv = (inF: number, outF: number) => inF * outF + outF;
    const block = 2 * layerNorm + conv(C, 3 * C) + conv(C, C) + conv(C, I) + conv(I, C);
    return (this.vocabSize * (this.tieWordEmbeddings ? 1 : 2) + this.nPositions) * C + this.nLayer * block + layerNorm;
  }

  /** "n_embd 768, n_layer 12, …": the fields that size the model, as config.json names them. */
  describeSize(): string {
    const fields = ["nEmbd", "nLayer", "vocabSize", "nPositions", ...(this.nInner !== null ? ["nInner" as const] : [])] as const;
    return fields.map((f) => `${HF_KEYS[f]} ${this[f]}`).join(", ");
  }

  private validate(): void {
    for (const key of ["vocabSize", "nPositions", "nEmbd", "nLayer", "nHead"] as const) {
      if (!Number.isInteger(this[key]) || this[key] <= 0) throw new Error(`GPT2Config: ${key} (${HF_KEYS[key]}) must be a positive integer, got ${shown(this[key])}`);
    }
    for (const key of ["residPdrop", "embdPdrop", "attnPdrop"] as const) {
      const p = this[key];
      if (typeof p !== "number" || !(p >= 0 && p <= 1)) throw new Error(`GPT2Config: ${key} (${HF_KEYS[key]}) must be a probability in [0, 1], got ${shown(p)}`);
    }
    if (this.nInner !== null && (!Number.isInteger(this.nInner) || this.nInner <= 0)) {
      throw new Error(`GPT2Config: nInner (n_inner) must be a positive integer or null, got ${this.nInner}`);
    }
    // Sizes no memory holds (a typo, or a config that is not GPT-2's) are refused here, before a
    // weight is allocated or counted: counts beyond 2^53 are not even exact in JavaScript.
    if (!Number.isSafeInteger(this.parameterCount)) {
      throw new Error(`GPT2Config: ${this.describeSize()} make ${this.parameterCount.toPrecision(3)} parameters, more than any memory holds; check these fields of config.json`);
    }
    if (this.nEmbd % this.nHead !== 0) {
      throw new Error(`GPT2Config: n_embd (${this.nEmbd}) must be divisible by n_head (${this.nHead})`);
    }
    if (!SUPPORTED_ACTIVATIONS.includes(this.activationFunction)) {
      throw new Error(
        `GPT2Config: activation_function ${shown(this.activationFunction)} is not supported; lowrank implements ${SUPPORTED_ACTIVATIONS.join(", ")}`,
      );
    }
  }

  /** Reads transformers' config.json (unknown keys are ignored: they describe other heads or tasks). */
  static fromHF(json: Record<string, unknown>): GPT2Config {
    if (json.model_type !== undefined && json.model_type !== "gpt2") {
      throw new Error(`GPT2Config: config.json has model_type ${shown(json.model_type)}, expected "gpt2"`);
    }
    const init: Record<string, unknown> = {};
    for (const [field, key] of Object.entries(HF_KEYS)) if (key in json) init[field] = json[key];
    return new GPT2Config(init as GPT2ConfigInit);
  }

  /** config.json as transformers writes it (the fields lowrank knows, plus model_type and architectures). */
  toHF(): Record<string, unknown> {
    const out: Record<string, unknown> = { architectures: ["GPT2LMHeadModel"], model_type: "gpt2" };
    for (const [field, key] of Object.entries(HF_KEYS)) out[key] = this[field as keyof GPT2ConfigInit];
    return Object.fromEntries(Object.entries(out).sort(([a], [b]) => (a < b ? -1 : 1)));
  }
}
