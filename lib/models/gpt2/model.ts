// GPT-2 (transformers' GPT2LMHeadModel), with its parameter names, so Hugging Face checkpoints
// and PEFT adapters address the same modules: transformer.wte / wpe / h.{i}.{ln_1, attn.c_attn,
// attn.c_proj, ln_2, mlp.c_fc, mlp.c_proj} / ln_f, and lm_head (tied to wte unless tie_word_embeddings is false).
import { checkpoint } from "../../autograd/checkpoint.js";
import { attentionPrecision, scaledDotProductAttention } from "../../ops/attention.js";
import { add, gelu, relu, silu } from "../../ops/elementwise.js";
import { crossEntropy, linearCrossEntropy } from "../../ops/crossentropy.js";
import { concat } from "../../ops/shape.js";
import { Conv1D, Dropout, Embedding, LayerNorm, Linear } from "../../nn/layers.js";
import { Module, ModuleList } from "../../nn/module.js";
import { arange, full } from "../../tensor/creation.js";
import type { DeviceLike } from "../../tensor/device.js";
import type { Generator } from "../../tensor/random.js";
import { tidy } from "../../tensor/scope.js";
import { formatShape, type Tensor } from "../../tensor/tensor.js";
import { gpt2Checkpoint } from "./checkpoint.js";
import { loadCheckpoint, loadCheckpointAsync, saveCheckpoint, saveCheckpointAsync, type CheckpointFamily, type LoadOptions } from "../checkpoint.js";
import type { GPT2Config } from "./config.js";
import type { GenerationSpec, KVCache } from "../kvcache.js";
import { checkWeightsFit } from "../size.js";

export interface ModelOptions {
  device?: DeviceLike;
  /** The random stream for the initial weights and for dropout. */
  generator?: Generator;
  /** false skips the random init (the weights are about to be loaded). */
  initialize?: boolean;
}

/**
 * The init std of the projections that write into the residual stream (attn.c_proj, mlp.c_proj):
 * transformers' _init_weights scales initializer_range by 1/√(2·n_layer), two residual additions
 * per block, so the residual's variance at init does not grow with depth (the GPT-2 paper's scheme).
 * Every other weight is N(0, initializer_range²), biases 0, layer norms 1 and 0.
 */
function residualProjectionStd(config: GPT2Config): number {
  return config.initializerRange / Math.sqrt(2 * config.nLayer);
}

/** Causal self-attention: one fused q/k/v projection, then the output projection. */
export class GPT2Attention extends Module {
  declare c_attn: Conv1D;
  declare c_proj: Conv1D;
  declare resid_dropout: Dropout;
  readonly nHead: number;
  readonly scale: number;
  /** Dropout on the attention weights while training (attn_pdrop). */
  readonly attnPdrop: number;
  readonly generator?: Generator;

  constructor(config: GPT2Config, layerIdx: number, opts: ModelOptions = {}) {
    super();
    const C = config.nEmbd;
    this.nHead = config.nHead;
    this.registerModule("c_attn", new Conv1D(3 * C, C, { ...opts, std: config.initializerRange }));
    this.registerModule("c_proj", new Conv1D(C, C, { ...opts, std: residualProjectionStd(config) }));
    this.registerModule("resid_dropout", new Dropout(config.residPdrop, { generator: opts.generator }));
    this.attnPdrop = config.attnPdrop;
    this.generator = opts.generator;
    let scale = config.scaleAttnWeights ? 1 / Math.sqrt(config.headDim) : 1;
    if (config.scaleAttnByInverseLayerIdx) scale /= layerIdx + 1;
    this.scale = scale;
  }

  /**
   * x [B, T, C] -> [B, T, C]. With a cache, x holds only the new positions. With a residual, returns
   * residual + the output, the residual add in the output dropout's pass.
   */
  forward(x: Tensor, attentionMask: Tensor | null, cache: KVCache | null, layerIdx: number, residual: Tensor | null = null): Tensor {
    const [B, T, C] = x.shape as [number, number, number];
    const H = this.nHead, D = C / H;
    const qkv = this.c_attn.forward(x); // [B, T, 3C]
    // [B, T, 3C] -> three [B, H, T, D] views into the same buffer (reshape splits C into H×D in place).
    const heads = (i: number) => qkv.slice(2, i * C, (i + 1) * C).reshape(B, T, H, D).permute(0, 2, 1, 3);
    let q = heads(0), k = heads(1), v = heads(2);
    const precision = attentionPrecision(this.c_attn.weight); // bf16 weights: bf16 attention, as autocast
    let kvRounded = false;
    if (cache) ({ key: k, value: v, kvRounded } = cache.appendFor(layerIdx, k, v, precision));
    const y = scaledDotProductAttention(q, k, v, {
      causal: true, attnMask: attentionMask, scale: this.scale, dropout: this.training ? this.attnPdrop : 0, generator: this.generator,
      precision, kvRounded,
    }); // [B, H, T, D]
    const merged = y.transpose(1, 2).reshape(B, T, C); // free: y is stored [B, T, H, D]
    return this.resid_dropout.forward(this.c_proj.forward(merged), residual);
  }
}

/** The feed-forward block: c_fc (C -> 4C), GELU (tanh form), c_proj (4C -> C). */
export class GPT2MLP extends Module {
  declare c_fc: Conv1D;
  declare c_proj: Conv1D;
  declare dropout: Dropout;

  /** config.activationFunction, as transformers' ACT2FN computes it. */
  private readonly activation: (x: Tensor) => Tensor;
  private readonly tanhGelu: boolean;

  constructor(config: GPT2Config, opts: ModelOptions = {}) {
    super();
    const act = config.activationFunction;
    this.tanhGelu = act === "gelu_new" || act === "gelu_pytorch_tanh";
    this.activation = this.tanhGelu ? (x) => gelu(x) : act === "gelu" ? (x) => gelu(x, { approximate: "none" }) : act === "relu" ? relu : silu;
    this.registerModule("c_fc", new Conv1D(config.innerDim, config.nEmbd, { ...opts, std: config.initializerRange }));
    this.registerModule("c_proj", new Conv1D(config.nEmbd, config.innerDim, { ...opts, std: residualProjectionStd(config) }));
    this.registerModule("dropout", new Dropout(config.residPdrop, { generator: opts.generator }));
  }

  /** x [B, T, C] -> [B, T, C]; with a residual, residual + the output (added in the dropout's pass). */
  forward(x: Tensor, residual: Tensor | null = null): Tensor {
    // A plain c_fc applies the tanh GELU in its GEMM's epilogue; a wrapped one (LoRA on c_fc), or
    // another activation, runs it after.
    const fc: { forward(x: Tensor): Tensor } = this.c_fc;
    const h = fc instanceof Conv1D && this.tanhGelu ? fc.forward(x, { activation: "gelu" }) : this.activation(fc.forward(x));
    return this.dropout.forward(this.c_proj.forward(h), residual);
  }
}

/** A pre-norm transformer block: x + attn(ln_1(x)), then + mlp(ln_2(.)). */
export class GPT2Block extends Module {
  declare ln_1: LayerNorm;
  declare attn: GPT2Attention;
  declare ln_2: LayerNorm;
  declare mlp: GPT2MLP;

  constructor(config: GPT2Config, readonly layerIdx: number, opts: ModelOptions = {}) {
    super();
    const ln = { eps: config.layerNormEpsilon, device: opts.device };
    this.registerModule("ln_1", new LayerNorm(config.nEmbd, ln));
    this.registerModule("attn", new GPT2Attention(config, layerIdx, opts));
    this.registerModule("ln_2", new LayerNorm(config.nEmbd, ln));
    this.registerModule("mlp", new GPT2MLP(config, opts));
  }

  forward(x: Tensor, attentionMask: Tensor | null, cache: KVCache | null): Tensor {
    const h = this.attn.forward(this.ln_1.forward(x), attentionMask, cache, this.layerIdx, x);
    return this.mlp.forward(this.ln_2.forward(h), h);
  }
}

/** Embeddings, the blocks and the final layer norm (transformers' GPT2Model). */
export class GPT2Model extends Module {
  declare wte: Embedding;
  declare wpe: Embedding;
  declare drop: Dropout;
  declare h: ModuleList<GPT2Block>;
  declare ln_f: LayerNorm;
  /** Recompute each block in the backward instead of keeping its activations (training, no cache). */
  gradientCheckpointing = false;

  constructor(readonly config: GPT2Config, opts: ModelOptions = {}) {
    super();
    checkWeightsFit("GPT2Config", config, opts.device);
    const init = { device: opts.device, generator: opts.generator, initialize: opts.initialize, std: config.initializerRange };
    this.registerModule("wte", new Embedding(config.vocabSize, config.nEmbd, init));
    this.registerModule("wpe", new Embedding(config.nPositions, config.nEmbd, init));
    this.registerModule("drop", new Dropout(config.embdPdrop, { generator: opts.generator }));
    this.registerModule("h", new ModuleList(Array.from({ length: config.nLayer }, (_, i) => new GPT2Block(config, i, opts))));
    this.registerModule("ln_f", new LayerNorm(config.nEmbd, { eps: config.layerNormEpsilon, device: opts.device }));
  }

  /** inputIds int32 [B, T] -> hidden states [B, T, C] after ln_f. Positions continue after the cache. */
  forward(inputIds: Tensor, attentionMask: Tensor | null = null, cache: KVCache | null = null): Tensor {
    if (inputIds.ndim !== 2 || inputIds.dtype !== "int32") {
      throw new Error(`GPT2Model: inputIds must be int32 [batch, time], got ${inputIds.dtype} ${formatShape(inputIds.shape)}`);
    }
    const T = inputIds.shape[1]!;
    const past = cache?.length ?? 0;
    if (past + T > this.config.nPositions) {
      throw new Error(`GPT2Model: ${past + T} positions exceed the model's n_positions (${this.config.nPositions}); shorten the input`);
    }
    if (attentionMask && (attentionMask.shape[0] !== inputIds.shape[0] || attentionMask.shape[1] !== past + T)) {
      throw new Error(
        `GPT2Model: attentionMask ${formatShape(attentionMask.shape)} must be [batch, past + time] = [${inputIds.shape[0]}, ${past + T}]`,
      );
    }
    // transformers uses positions past..past+T-1 whatever the padding (position_ids are not derived from the mask).
    let x = tidy(() => this.drop.forward(add(this.wte.forward(inputIds), this.wpe.forward(arange(past, past + T, 1, { device: inputIds.device })))));
    const recompute = this.gradientCheckpointing && this.training && !cache;
    x = this.h.chain(x, (block, h) =>
      recompute ? checkpoint((y, mask) => block.forward(y, mask, null), h, [attentionMask ?? null], block.parameters()) : block.forward(h, attentionMask, cache),
    );
    return this.ln_f.forward(x);
  }
}

export interface CausalLMInput {
  /** int32 [B, T]. */
  inputIds: Tensor;
  /** int32 [B, T_past + T]: 1 for tokens, 0 for padding. */
  attentionMask?: Tensor | null;
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

/** The hidden states whose logits are wanted: the last `logitsToKeep` positions, or all. */
export function lastPositions(hidden: Tensor, input: { logitsToKeep?: number; labels?: Tensor | null }): Tensor {
  const keep = input.logitsToKeep ?? 0, T = hidden.shape[1]!;
  if (!Number.isInteger(keep) || keep < 0) throw new Error(`forward: logitsToKeep must be an integer >= 0 (0: every position), got ${keep}`);
  if (keep > 0 && input.labels) throw new Error("forward: logitsToKeep and labels together: the loss needs the logits of every position; pass one of them");
  return keep > 0 && keep < T ? hidden.slice(1, T - keep) : hidden;
}

export interface CausalLMOutput {
  /** [B, T, vocab]. */
  logits: Tensor;
  /** Mean cross-entropy over the counted (non -100) targets, when labels were given. */
  loss?: Tensor;
}

/**
 * The module that turns hidden states into logits: lm_head as built (a Linear), or what PEFT put in
 * its place (LoRA around it, a trained copy beside it).
 */
export type OutputHead = Module & { forward(hidden: Tensor): Tensor };

/** GPT-2 with its language-modelling head (tied to the token embeddings, unless tie_word_embeddings is false). */
export class GPT2LMHeadModel extends Module {
  declare transformer: GPT2Model;
  /** Linear(nEmbd, vocabSize), as in transformers (PEFT can target or save it); tied: its weight is transformer.wte's. */
  declare lm_head: OutputHead;

  constructor(readonly config: GPT2Config, opts: ModelOptions = {}) {
    super();
    this.registerModule("transformer", new GPT2Model(config, opts));
    const { nEmbd: C, vocabSize: V } = config;
    this.registerModule(
      "lm_head",
      config.tieWordEmbeddings ? new Linear(C, V, { bias: false, tiedWeight: this.transformer.wte.weight }) : new Linear(C, V, { ...opts, std: config.initializerRange, bias: false }),
    );
  }

  /**
   * Gradient checkpointing (transformers' gradient_checkpointing_enable()): in training, each
   * block's activations are recomputed in the backward instead of kept, trading one more forward
   * per block for activation memory of one block; the gradients are the same, bit for bit.
   */
  get gradientCheckpointing(): boolean {
    return this.transformer.gradientCheckpointing;
  }
  set gradientCheckpointing(on: boolean) {
    this.transformer.gradientCheckpointing = on;
  }

  /**
   * Loads a checkpoint directory in Hugging Face layout (config.json + safetensors), or a model
   * name already in the local Hugging Face cache ("openai-community/gpt2"), in eval mode
   * (dropout off) as transformers' from_pretrained returns it: call train() to train in full; the
   * Trainer switches modes itself. The weights are read off the main thread (fs/promises), and the
   * event loop runs between the tensors' conversions; fromPretrainedSync blocks instead.
   */
  static fromPretrained(nameOrPath: string, opts: LoadOptions = {}): Promise<GPT2LMHeadModel> {
    return loadCheckpointAsync(nameOrPath, opts, GPT2LMHeadModel.checkpoint(opts));
  }

  /** fromPretrained, blocking the thread until the model is loaded. */
  static fromPretrainedSync(nameOrPath: string, opts: LoadOptions = {}): GPT2LMHeadModel {
    return loadCheckpoint(nameOrPath, opts, GPT2LMHeadModel.checkpoint(opts));
  }

  private static checkpoint(opts: LoadOptions): CheckpointFamily<GPT2Config, GPT2LMHeadModel> {
    return gpt2Checkpoint((config) => new GPT2LMHeadModel(config, { device: opts.device, generator: opts.generator, initialize: false }));
  }

  /**
   * Writes config.json + model.safetensors that transformers loads, each to a temporary file
   * renamed into place. The weights are copied to the host when it is called; the disk writes run
   * off the main thread. savePretrainedSync blocks instead.
   */
  savePretrained(dir: string): Promise<void> {
    return saveCheckpointAsync(this, dir);
  }

  /** savePretrained, blocking the thread until both files are written. */
  savePretrainedSync(dir: string): void {
    saveCheckpoint(this, dir);
  }

  /** What generate() needs: the cache's layers, the learned positions' limit and the config's EOS id. */
  generationSpec(): GenerationSpec {
    const eos = this.config.eosTokenId;
    return { numLayers: this.config.nLayer, maxPositions: this.config.nPositions, eosTokenIds: eos === null ? [] : [eos], device: this.transformer.wte.weight.device };
  }

  /** The token embeddings (transformers' get_input_embeddings): the module in its place now, LoRA's wrapper included. */
  getInputEmbeddings(): Module {
    return this.transformer.wte;
  }

  /** The output head (transformers' get_output_embeddings). */
  getOutputEmbeddings(): Module {
    return this.lm_head;
  }

  forward(input: CausalLMInput): CausalLMOutput {
    const hidden = lastPositions(this.transformer.forward(input.inputIds, input.attentionMask ?? null, input.cache ?? null), input);
    const logits = this.lm_head.forward(hidden); // x·wteᵀ unless PEFT wrapped the head
    if (!input.labels) return { logits };
    return { logits, loss: causalLMLoss(logits, input.labels) };
  }

  /** forward(input).loss, computed without the [B, T, V] logits (headLoss); what the Trainer calls. */
  forwardLoss(input: CausalLMInput & { labels: Tensor }): Tensor {
    const hidden = this.transformer.forward(input.inputIds, input.attentionMask ?? null, null);
    const loss = headLoss(hidden, this.lm_head, input.labels);
    hidden.dispose();
    return loss;
  }
}

/**
 * The targets of a causal LM's positions, flat [B·T]: labels[:, t + 1] for position t, -100 for the
 * last. The labels move left instead of the logits being sliced: the same loss and gradient, and
 * the [B·T, V] logits gradient is written once, in place, not into a [B·(T-1), V] buffer that a
 * slice's backward then copies into a zeroed [B, T, V] one.
 */
function shiftedTargets(labels: Tensor, B: number, T: number): Tensor {
  if (labels.ndim !== 2 || labels.shape[0] !== B || labels.shape[1] !== T || labels.dtype !== "int32") {
    throw new Error(`causalLMLoss: labels must be int32 [${B}, ${T}] like the inputs, got ${labels.dtype} ${formatShape(labels.shape)}`);
  }
  return tidy(() => concat([labels.slice(1, 1), full([B, 1], -100, { dtype: "int32", device: labels.device })], 1).reshape(B * T));
}

/** transformers' loss: logits[:, t] scored against labels[:, t + 1], -100 ignored, mean over counted targets. */
export function causalLMLoss(logits: Tensor, labels: Tensor): Tensor {
  const [B, T, V] = logits.shape as [number, number, number];
  const targets = shiftedTargets(labels, B, T), flatLogits = logits.reshape(B * T, V);
  const loss = crossEntropy(flatLogits, targets, { ignoreIndex: -100 });
  for (const t of [targets, flatLogits]) t.dispose();
  return loss;
}

/**
 * causalLMLoss(head(hidden), labels) without the [B, T, V] logits: the head and the loss run fused,
 * chunk by chunk (linearCrossEntropy), when the head is a plain Linear with a frozen weight (LoRA
 * training elsewhere); a trained head, or one PEFT wrapped (LoRA on lm_head, a trained copy), keeps
 * the unfused path, which gives its gradients.
 */
export function headLoss(hidden: Tensor, head: OutputHead, labels: Tensor): Tensor {
  if (!(head instanceof Linear) || head.bias || head.weight.requiresGrad) return tidy(() => causalLMLoss(head.forward(hidden), labels));
  const [B, T, C] = hidden.shape as [number, number, number];
  return tidy(() => linearCrossEntropy(hidden.reshape(B * T, C), head.weight, shiftedTargets(labels, B, T), { ignoreIndex: -100 }));
}
