// The layers GPT-2 is built from, initialized like PyTorch / transformers.
import { embedding } from "../ops/embedding.js";
import { conv1dLinear, linear, type AffineOptions } from "../ops/matmul.js";
import { dropout } from "../ops/dropout.js";
import { layerNorm } from "../ops/layernorm.js";
import { rmsNorm } from "../ops/rmsnorm.js";
import { empty, kaimingUniform, ones, rand, randn, zeros } from "../tensor/creation.js";
import type { DeviceLike } from "../tensor/device.js";
import type { Generator } from "../tensor/random.js";
import { formatShape, type Tensor } from "../tensor/tensor.js";
import { Module } from "./module.js";

export interface LayerOptions {
  device?: DeviceLike;
  /** The random stream the initial weights are drawn from (default: the global generator). */
  generator?: Generator;
  /**
   * false leaves weights uninitialized (random memory) when they are about to be overwritten, e.g.
   * by a checkpoint: drawing GPT-2 124M's random init costs seconds that loading then discards.
   */
  initialize?: boolean;
}

/** Layers whose weight is drawn from a normal distribution: its standard deviation. */
export interface NormalInitOptions extends LayerOptions {
  std?: number;
}

/** `draw()` or, when the layer is not initialized, an uninitialized tensor of the same shape. */
function init(opts: LayerOptions, shape: readonly number[], draw: () => Tensor): Tensor {
  return opts.initialize === false ? empty(shape, { device: opts.device }) : draw();
}

function checkSize(layer: string, what: string, n: number): void {
  if (!Number.isInteger(n) || n < 0) throw new Error(`${layer}: ${what} must be an integer >= 0, got ${n}`);
}

/**
 * y = x·Wᵀ + b with weight [out, in] (torch.nn.Linear). Init as PyTorch: W ~ kaiming_uniform(a=√5),
 * i.e. U(-1/√in, 1/√in), and b ~ U(-1/√in, 1/√in); with `std`, as transformers' _init_weights
 * does for Llama-family models: W ~ N(0, std²), b = 0.
 */
export class Linear extends Module {
  declare weight: Tensor;
  declare bias: Tensor | null;

  /**
   * `tiedWeight`: the weight is that tensor itself, [outFeatures, inFeatures], shared with the module
   * that owns it (an output head tied to the token embeddings: transformers' tie_word_embeddings).
   */
  constructor(readonly inFeatures: number, readonly outFeatures: number, opts: NormalInitOptions & { bias?: boolean; tiedWeight?: Tensor } = {}) {
    super();
    checkSize("Linear", "inFeatures", inFeatures);
    checkSize("Linear", "outFeatures", outFeatures);
    const { device, generator, std, tiedWeight } = opts;
    const shape = [outFeatures, inFeatures];
    if (tiedWeight) {
      if (tiedWeight.ndim !== 2 || tiedWeight.shape[0] !== outFeatures || tiedWeight.shape[1] !== inFeatures) {
        throw new Error(`Linear: tiedWeight must be [${outFeatures}, ${inFeatures}] (outFeatures, inFeatures), got ${formatShape(tiedWeight.shape)}`);
      }
      this.registerParameter("weight", tiedWeight);
      this.registerParameter("bias", opts.bias === false ? null : zeros([outFeatures], { device: tiedWeight.device }));
      return;
    }
    if (std !== undefined) {
      this.registerParameter("weight", init(opts, shape, () => randn(shape, { std, device, generator })));
      this.registerParameter("bias", opts.bias === false ? null : zeros([outFeatures], { device }));
      return;
    }
    this.registerParameter("weight", init(opts, shape, () => inFeatures > 0 ? kaimingUniform(shape, { a: Math.sqrt(5), device, generator }) : zeros([outFeatures, 0], { device })));
    const bound = inFeatures > 0 ? 1 / Math.sqrt(inFeatures) : 0;
    this.registerParameter("bias", opts.bias === false ? null : init(opts, [outFeatures], () => rand([outFeatures], { low: -bound, high: bound, device, generator })));
  }

  forward(x: Tensor): Tensor {
    return linear(x, this.weight, this.bias);
  }
}

/**
 * GPT-2's Conv1D (transformers.pytorch_utils.Conv1D(nf, nx)): y = x·W + b with weight stored
 * [nx = in, nf = out], the transpose of Linear's. Init as transformers: W ~ N(0, std²) with std
 * 0.02 unless given, b = 0.
 */
export class Conv1D extends Module {
  declare weight: Tensor;
  declare bias: Tensor;

  constructor(readonly nf: number, readonly nx: number, opts: NormalInitOptions = {}) {
    super();
    checkSize("Conv1D", "nf", nf);
    checkSize("Conv1D", "nx", nx);
    this.registerParameter("weight", init(opts, [nx, nf], () => randn([nx, nf], { std: opts.std ?? 0.02, device: opts.device, generator: opts.generator })));
    this.registerParameter("bias", zeros([nf], { device: opts.device }));
  }

  /** opts.activation "gelu": gelu of the output in the same call (the GEMM's epilogue on CUDA). */
  forward(x: Tensor, opts: AffineOptions = {}): Tensor {
    return conv1dLinear(x, this.weight, this.bias, opts);
  }
}

/** A lookup table [num, dim] indexed by int32 ids (torch.nn.Embedding). Init N(0, std²), std 1 unless given, like PyTorch. */
export class Embedding extends Module {
  declare weight: Tensor;

  constructor(readonly numEmbeddings: number, readonly embeddingDim: number, opts: NormalInitOptions = {}) {
    super();
    checkSize("Embedding", "numEmbeddings", numEmbeddings);
    checkSize("Embedding", "embeddingDim", embeddingDim);
    this.registerParameter("weight", init(opts, [numEmbeddings, embeddingDim], () => randn([numEmbeddings, embeddingDim], { std: opts.std ?? 1, device: opts.device, generator: opts.generator })));
  }

  /** ids int32 [...] -> [..., embeddingDim]. */
  forward(ids: Tensor): Tensor {
    return embedding(ids, this.weight);
  }
}

/** Layer norm over the last dim (torch.nn.LayerNorm with one normalized dim): weight 1, bias 0. */
export class LayerNorm extends Module {
  declare weight: Tensor | null;
  declare bias: Tensor | null;
  readonly eps: number;

  constructor(readonly normalizedShape: number, opts: { eps?: number; elementwiseAffine?: boolean; device?: DeviceLike } = {}) {
    super();
    checkSize("LayerNorm", "normalizedShape", normalizedShape);
    this.eps = opts.eps ?? 1e-5;
    const affine = opts.elementwiseAffine !== false;
    this.registerParameter("weight", affine ? ones([normalizedShape], { device: opts.device }) : null);
    this.registerParameter("bias", affine ? zeros([normalizedShape], { device: opts.device }) : null);
  }

  forward(x: Tensor): Tensor {
    return layerNorm(x, this.weight, this.bias, this.eps);
  }
}

/** RMS norm over the last dim (transformers' LlamaRMSNorm): weight 1. */
export class RMSNorm extends Module {
  declare weight: Tensor;

  constructor(readonly hiddenSize: number, readonly eps = 1e-6, opts: { device?: DeviceLike } = {}) {
    super();
    checkSize("RMSNorm", "hiddenSize", hiddenSize);
    this.registerParameter("weight", ones([hiddenSize], { device: opts.device }));
  }

  forward(x: Tensor): Tensor {
    return rmsNorm(x, this.weight, this.eps);
  }
}

/** Zeroes elements with probability p while training, scaling the rest by 1/(1-p); identity in eval(). */
export class Dropout extends Module {
  /** The random stream masks are drawn from (default: the global generator). */
  readonly generator?: Generator;

  constructor(readonly p = 0.5, opts: { generator?: Generator } = {}) {
    super();
    if (!(p >= 0 && p <= 1)) throw new Error(`Dropout: p must be a probability in [0, 1], got ${p}`);
    this.generator = opts.generator;
  }

  /** dropout(x); with a residual, residual + dropout(x) in one pass (lib/ops/dropout.ts). */
  forward(x: Tensor, residual: Tensor | null = null): Tensor {
    return dropout(x, this.p, { training: this.training, generator: this.generator, residual });
  }
}
