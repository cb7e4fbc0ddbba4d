// Llama-family decoders (transformers' LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM,
// Qwen3ForCausalLM) with their parameter names, so Hugging Face checkpoints and PEFT adapters
// address the same modules: model.embed_tokens / layers.{i}.{input_layernorm,
// self_attn.{q,k,v,o}_proj (+ q_norm, k_norm for Qwen3), post_attention_layernorm,
// mlp.{gate,up,down}_proj} / norm, and lm_head (absent when tied).
import { checkpoint } from "../../autograd/checkpoint.js";
import { attentionPrecision, scaledDotProductAttention } from "../../ops/attention.js";
import { add, mul, silu } from "../../ops/elementwise.js";
import { applyRotary, rotaryCosSin } from "../../ops/rope.js";
import { Embedding, Linear, RMSNorm } from "../../nn/layers.js";
import { Module, ModuleList } from "../../nn/module.js";
import { formatShape, type Tensor } from "../../tensor/tensor.js";
import { loadCheckpoint, loadCheckpointAsync, saveCheckpoint, saveCheckpointAsync, type CheckpointFamily, type LoadOptions } from "../checkpoint.js";
import { causalLMLoss, headLoss, lastPositions, type CausalLMOutput, type ModelOptions, type OutputHead } from "../gpt2/model.js";
import type { GenerationSpec, KVCache } from "../kvcache.js";
import { LlamaConfig } from "./config.js";
import { checkWeightsFit } from "../size.js";

export interface LlamaInput {
  /** int32 [B, T]. */
  inputIds: Tensor;
  /** int32 [B, T]: targets, shifted inside (position t predicts labels[t + 1]); -100 is ignored. */
  labels?: Tensor | null;
  /** Incremental decoding: keys and values of earlier positions, extended in place. */
  cache?: KVCache | null;
  /**
   * Logits of the last N positions only (transformers' logits_to_keep; 0 or absent: every
   * position): generation needs the last one, and a prompt's lm_head is then one row, not T.
   */
  logitsToKeep?: number;
}

/**
 * Causal self-attention with grouped-query heads: q has numAttentionHeads heads, k and v
 * numKeyValueHeads, each shared by numAttentionHeads / numKeyValueHeads query heads; rotary
 * position embeddings on q and k (Qwen3: after an RMSNorm over each head of q and of k).
 */
export class LlamaAttention extends Module {
  declare q_proj: Linear;
  declare k_proj: Linear;
  declare v_proj: Linear;
  declare o_proj: Linear;
  declare q_norm: RMSNorm | null;
  declare k_norm: RMSNorm | null;
  readonly nHead: number;
  readonly nKvHead: number;
  readonly headDim: number;
  /** This layer's sliding window (config.layerSlidingWindow), null for full causal attention. */
  readonly slidingWindow: number | null;

  constructor(config: LlamaConfig, opts: ModelOptions = {}, layerIdx = 0) {
    super();
    this.slidingWindow = config.layerSlidingWindow(layerIdx);
    this.nHead = config.numAttentionHeads;
    this.nKvHead = config.kvHeads;
    this.headDim = config.attentionHeadDim;
    const C = config.hiddenSize, q = this.nHead * this.headDim, kv = this.nKvHead * this.headDim;
    const init = { ...opts, std: config.initializerRange };
    this.registerModule("q_proj", new Linear(C, q, { ...init, bias: config.qkvBias }));
    this.registerModule("k_proj", new Linear(C, kv, { ...init, bias: config.qkvBias }));
    this.registerModule("v_proj", new Linear(C, kv, { ...init, bias: config.qkvBias }));
    this.registerModule("o_proj", new Linear(q, C, { ...init, bias: config.oBias }));
    const headNorm = () => (config.qkNorm ? new RMSNorm(this.headDim, config.rmsNormEps, opts) : null);
    this.registerModule("q_norm", headNorm());
    this.registerModule("k_norm", headNorm());
  }

  /**
   * x [B, T, C] -> [B, T, C]; cos and sin [T, headDim] for the positions of x. With a cache, x
   * holds only the new positions and layer `layerIdx` of the cache is extended by their k and v.
   */
  forward(x: Tensor, cos: Tensor, sin: Tensor, cache: KVCache | null = null, layerIdx = 0): Tensor {
    const [B, T] = x.shape as [number, number, number];
    const H = this.nHead, Hkv = this.nKvHead, D = this.headDim;
    // [B, T, n·D] -> [B, n, T, D], through the per-head norm where the model has one
    const heads = (t: Tensor, n: number, norm: RMSNorm | null = null) => {
      const split = t.reshape(B, T, n, D);
      return (norm ? norm.forward(split) : split).permute(0, 2, 1, 3);
    };
    const q = applyRotary(heads(this.q_proj.forward(x), H, this.q_norm), cos, sin);
    let k = applyRotary(heads(this.k_proj.forward(x), Hkv, this.k_norm), cos, sin);
    let v = heads(this.v_proj.forward(x), Hkv);
    // The cache holds the Hkv heads: H / Hkv times less memory, as transformers' cache.
    const precision = attentionPrecision(this.q_proj.weight);
    let kvRounded = false;
    if (cache) ({ key: k, value: v, kvRounded } = cache.appendFor(layerIdx, k, v, precision));
    // [B, H, T, D], scale 1/√D; with a cache the T queries are the last T of the Tk positions. The
    // Hkv key/value heads go in as they are: kv head j serves query heads j·g … j·g+g-1 (g = H / Hkv,
    // transformers' repeat_kv), which the attention op reads in place (repeats on CUDA).
    const y = scaledDotProductAttention(q, k, v, { causal: true, window: this.slidingWindow, precision, kvRounded });
    return this.o_proj.forward(y.transpose(1, 2).reshape(B, T, H * D));
  }
}

/** SwiGLU feed-forward: down(silu(gate(x)) · up(x)). */
export class LlamaMLP extends Module {
  declare gate_proj: Linear;
  declare up_proj: Linear;
  declare down_proj: Linear;

  constructor(config: LlamaConfig, opts: ModelOptions = {}) {
    super();
    const C = config.hiddenSize, I = config.intermediateSize;
    const init = { ...opts, std: config.initializerRange, bias: config.mlpBiasOn };
    this.registerModule("gate_proj", new Linear(C, I, init));
    this.registerModule("up_proj", new Linear(C, I, init));
    this.registerModule("down_proj", new Linear(I, C, init));
  }

  forward(x: Tensor): Tensor {
    return this.down_proj.forward(mul(silu(this.gate_proj.forward(x)), this.up_proj.forward(x)));
  }
}

/** A pre-norm decoder layer: x + attn(norm(x)), then + mlp(norm(.)). */
export class LlamaDecoderLayer extends Module {
  declare self_attn: LlamaAttention;
  declare mlp: LlamaMLP;
  declare input_layernorm: RMSNorm;
  declare post_attention_layernorm: RMSNorm;

  constructor(config: LlamaConfig, opts: ModelOptions = {}, readonly layerIdx = 0) {
    super();
    this.registerModule("self_attn", new LlamaAttention(config, opts, layerIdx));
    this.registerModule("mlp", new LlamaMLP(config, opts));
    this.registerModule("input_layernorm", new RMSNorm(config.hiddenSize, config.rmsNormEps, opts));
    this.registerModule("post_attention_layernorm", new RMSNorm(config.hiddenSize, config.rmsNormEps, opts));
  }

  forward(x: Tensor, cos: Tensor, sin: Tensor, cache: KVCache | null = null): Tensor {
    const h = add(x, this.self_attn.forward(this.input_layernorm.forward(x), cos, sin, cache, this.layerIdx));
    return add(h, this.mlp.forward(this.post_attention_layernorm.forward(h)));
  }
}

/** Token embeddings, the decoder layers and the final norm (transformers' LlamaModel). */
export class LlamaModel extends Module {
  declare embed_tokens: Embedding;
  declare layers: ModuleList<LlamaDecoderLayer>;
  declare norm: RMSNorm;
  /** Recompute each decoder layer in the backward instead of keeping its activations (training, no cache). */
  gradientCheckpointing = false;

  constructor(readonly config: LlamaConfig, opts: ModelOptions = {}) {
    super();
    checkWeightsFit("LlamaConfig", config, opts.device);
    this.registerModule("embed_tokens", new Embedding(config.vocabSize, config.hiddenSize, { ...opts, std: config.initializerRange }));
    this.registerModule("layers", new ModuleList(Array.from({ length: config.numHiddenLayers }, (_, i) => new LlamaDecoderLayer(config, opts, i))));
    this.registerModule("norm", new RMSNorm(config.hiddenSize, config.rmsNormEps, opts));
  }

  /** inputIds int32 [B, T] -> hidden states [B, T, C] after the final norm. Positions continue after the cache. */
  forward(inputIds: Tensor, cache: KVCache | null = null): Tensor {
    if (inputIds.ndim !== 2 || inputIds.dtype !== "int32") {
      throw new Error(`LlamaModel: inputIds must be int32 [batch, time], got ${inputIds.dtype} ${formatShape(inputIds.shape)}`);
    }
    const T = inputIds.shape[1]!;
    const offset = cache?.length ?? 0;
    const { cos, sin } = rotaryCosSin(T, this.config.attentionHeadDim, { theta: this.config.ropeTheta, scaling: this.config.ropeScaling, offset, device: inputIds.device });
    let x = this.embed_tokens.forward(inputIds);
    const recompute = this.gradientCheckpointing && this.training && !cache;
    x = this.layers.chain(x, (layer, h) =>
      recompute ? checkpoint((y, c, s) => layer.forward(y, c!, s!, null), h, [cos, sin], layer.parameters()) : layer.forward(h, cos, sin, cache),
    );
    cos.dispose();
    sin.dispose();
    return this.norm.forward(x);
  }
}

/** A Llama-family decoder with its language-modelling head. */
export class LlamaForCausalLM extends Module {
  declare model: LlamaModel;
  /** Linear(hidden, vocab); tied (tie_word_embeddings): its weight is model.embed_tokens', as in transformers. */
  declare lm_head: OutputHead;

  constructor(readonly config: LlamaConfig, opts: ModelOptions = {}) {
    super();
    this.registerModule("model", new LlamaModel(config, opts));
    const { hiddenSize: C, vocabSize: V } = config;
    this.registerModule(
      "lm_head",
      config.tieWordEmbeddings ? new Linear(C, V, { bias: false, tiedWeight: this.model.embed_tokens.weight }) : new Linear(C, V, { ...opts, std: config.initializerRange, bias: false }),
    );
  }

  /**
   * Gradient checkpointing (transformers' gradient_checkpointing_enable()): in training, each
   * block's activations are recomputed in the backward instead of kept, trading one more forward
   * per block for activation memory of one block; the gradients are the same, bit for bit.
   */
  get gradientCheckpointing(): boolean {
    return this.model.gradientCheckpointing;
  }
  set gradientCheckpointing(on: boolean) {
    this.model.gradientCheckpointing = on;
  }

  /**
   * Loads a checkpoint folder in Hugging Face layout (config.json + model.safetensors or its
   * shards) of model_type llama, mistral, qwen2 or qwen3, or such a model's Hugging Face name already
   * in the local Hugging Face cache, in eval mode as transformers returns it. The weights are read off
   * the main thread (fs/promises); fromPretrainedSync blocks instead.
   */
  static fromPretrained(nameOrPath: string, opts: LoadOptions = {}): Promise<LlamaForCausalLM> {
    return loadCheckpointAsync(nameOrPath, opts, LlamaForCausalLM.checkpoint(opts));
  }

  /** fromPretrained, blocking the thread until the model is loaded. */
  static fromPretrainedSync(nameOrPath: string, opts: LoadOptions = {}): LlamaForCausalLM {
    return loadCheckpoint(nameOrPath, opts, LlamaForCausalLM.checkpoint(opts));
  }

  private static checkpoint(opts: LoadOptions): CheckpointFamily<LlamaConfig, LlamaForCausalLM> {
    return {
      what: "LlamaForCausalLM.fromPretrained",
      family: "Llama-family",
      parseConfig: (json) => LlamaConfig.fromHF(json),
      paramName: (config) => (key) => llamaParamName(config, key),
      create: (config) => new LlamaForCausalLM(config, { device: opts.device, generator: opts.generator, initialize: false }),
    };
  }

  /**
   * Writes config.json + model.safetensors that transformers loads (its parameter names; no
   * lm_head.weight when tied), e.g. after PeftModel.mergeAndUnload(), each to a temporary file
   * renamed into place; the disk writes run off the main thread. savePretrainedSync blocks instead.
   */
  savePretrained(dir: string): Promise<void> {
    return saveCheckpointAsync(this, dir);
  }

  /** savePretrained, blocking the thread until both files are written. */
  savePretrainedSync(dir: string): void {
    saveCheckpoint(this, dir);
  }

  /**
   * What generate() needs: one cache layer per decoder layer, and every EOS id of the config
   * (Llama 3 lists several). No position limit: RoPE has no table, and transformers' generate does
   * not stop at max_position_embeddings either.
   */
  generationSpec(): GenerationSpec {
    const eos = this.config.eosTokenId;
    return {
      numLayers: this.config.numHiddenLayers,
      maxPositions: Infinity,
      eosTokenIds: eos === null ? [] : Array.isArray(eos) ? eos : [eos],
      device: this.model.embed_tokens.weight.device,
    };
  }

  /** The token embeddings (transformers' get_input_embeddings): the module in its place now, LoRA's wrapper included. */
  getInputEmbeddings(): Module {
    return this.model.embed_tokens;
  }

  /** The output head (transformers' get_output_embeddings). */
  getOutputEmbeddings(): Module {
    return this.lm_head;
  }

  forward(input: LlamaInput): CausalLMOutput {
    const hidden = lastPositions(this.model.forward(input.inputIds, input.cache ?? null), input);
    const logits = this.lm_head.forward(hidden);
    if (!input.labels) return { logits };
    return { logits, loss: causalLMLoss(logits, input.labels) };
  }

  /** forward(input).loss, computed without the [B, T, V] logits (headLoss); what the Trainer calls. */
  forwardLoss(input: LlamaInput & { labels: Tensor }): Tensor {
    const hidden = this.model.forward(input.inputIds, null);
    const loss = headLoss(hidden, this.lm_head, input.labels);
    hidden.dispose();
    return loss;
  }
}

/**
 * The parameter a checkpoint key holds, or null for keys that hold none: lm_head.weight when the
 * head is tied (some tied checkpoints store the copy) and the rotary inv_freq buffers older
 * checkpoints carry.
 */
export function llamaParamName(config: LlamaConfig, key: string): string | null {
  if (config.tieWordEmbeddings && key === "lm_head.weight") return null;
  if (/\.rotary_emb\.inv_freq$/.test(key)) return null;
  return key;
}
