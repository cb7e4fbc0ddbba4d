// The vocabulary of the LoRA chapter (chapter 27 of the course; see the README), as a thin
// layer over the same ops the PEFT-style layers use. Its conventions differ from PEFT's:
//
//   LoRALayer(in, out, rank, alpha):  lora_A [in, rank] (kaiming-uniform, a = √5; torch takes the
//                                     fan-in of an [in, rank] tensor to be rank, so the bound is
//                                     1/√rank), lora_B [rank, out] (zeros), scaling = alpha / rank,
//                                     forward(x) = (x·A·B)·scaling
//   LinearWithLoRA(linear, rank, alpha): linear(x) + lora(x); the linear layer is frozen
//
// So the chapter's A and B are the transposes of PEFT's (A_peft = A_chapterᵀ [rank, in],
// B_peft = B_chapterᵀ [out, rank]), and LinearWithLoRA computes what PEFT's lora.Linear does with
// those factors. Defaults follow the chapter's code: rank 8, alpha 16.
//
// mergeLoraWeights folds scaling·(A·B)ᵀ into the linear weight. (The chapter prints
// `delta_W = (lora_B @ lora_A.t()) * scaling`, which multiplies [rank, out] by [rank, in] and only
// runs when out = rank; the update its forward pass applies is (A·B)ᵀ·scaling in nn.Linear's
// [out, in] layout, which is what is merged here.)
import { Conv1D, Linear } from "../nn/layers.js";
import { Module } from "../nn/module.js";
import { scale } from "../ops/elementwise.js";
import { loraDelta } from "../ops/lora.js";
import { gemm2d, matmul } from "../ops/matmul.js";
import { kaimingUniform, zeros } from "../tensor/creation.js";
import type { DeviceLike } from "../tensor/device.js";
import type { Generator } from "../tensor/random.js";
import { noGrad, type Tensor } from "../tensor/tensor.js";

export interface LoRALayerOptions {
  device?: DeviceLike;
  /** The random stream lora_A's init is drawn from (default: the global generator). */
  generator?: Generator;
}

/** The chapter's LoRALayer: the low-rank update alone, (x·A·B)·alpha/rank. */
export class LoRALayer extends Module {
  declare lora_A: Tensor;
  declare lora_B: Tensor;
  readonly scaling: number;

  constructor(readonly inFeatures: number, readonly outFeatures: number, readonly rank = 8, readonly loraAlpha = 16, opts: LoRALayerOptions = {}) {
    super();
    for (const [what, n] of [["inFeatures", inFeatures], ["outFeatures", outFeatures], ["rank", rank]] as const) {
      if (!Number.isInteger(n) || n <= 0) throw new Error(`LoRALayer: ${what} must be a positive integer, got ${n}`);
    }
    if (!Number.isFinite(loraAlpha)) throw new Error(`LoRALayer: loraAlpha must be a finite number, got ${loraAlpha}`);
    this.scaling = loraAlpha / rank;
    const { device, generator } = opts;
    this.registerParameter("lora_A", kaimingUniform([inFeatures, rank], { a: Math.sqrt(5), device, generator }));
    this.registerParameter("lora_B", zeros([rank, outFeatures], { device }));
  }

  /** x [.., in] -> (x·A·B)·scaling [.., out]. */
  forward(x: Tensor): Tensor {
    return scale(matmul(matmul(x, this.lora_A), this.lora_B), this.scaling);
  }

  /** y + (x·A·B)·scaling in one fused op (PEFT's factors are Aᵀ and Bᵀ). */
  addTo(y: Tensor, x: Tensor): Tensor {
    return loraDelta(y, x, this.lora_A.transpose(0, 1), this.lora_B.transpose(0, 1), { scaling: this.scaling });
  }
}

/** The chapter's LinearWithLoRA: a frozen Linear (or GPT-2 Conv1D) plus a LoRALayer. */
export class LinearWithLoRA extends Module {
  declare linear: Linear | Conv1D;
  declare lora: LoRALayer;

  constructor(linear: Linear | Conv1D, rank = 8, loraAlpha = 16, opts: LoRALayerOptions = {}) {
    super();
    const [inFeatures, outFeatures] = linear instanceof Conv1D ? [linear.nx, linear.nf] : [linear.inFeatures, linear.outFeatures];
    this.registerModule("linear", linear);
    this.registerModule("lora", new LoRALayer(inFeatures, outFeatures, rank, loraAlpha, { device: linear.weight.device, ...opts }));
    linear.requiresGrad_(false);
  }

  /** linear(x) + lora(x). */
  forward(x: Tensor): Tensor {
    return this.lora.addTo(this.linear.forward(x), x);
  }
}

/**
 * The chapter's add_lora_to_model: replaces every Linear (and GPT-2 Conv1D) whose full name
 * contains one of `targetModules` (a substring test, as in the chapter, not PEFT's suffix match)
 * by a LinearWithLoRA, then freezes every parameter except the LoRA factors. Returns how many
 * layers were replaced.
 */
export function addLoraToModel(model: Module, targetModules: readonly string[] = ["q_proj", "v_proj"], rank = 8, loraAlpha = 16, opts: LoRALayerOptions = {}): number {
  if (!Array.isArray(targetModules) || targetModules.some((t) => typeof t !== "string" || t.length === 0)) {
    throw new Error(`addLoraToModel: targetModules must be a list of non-empty name fragments; got ${JSON.stringify(targetModules)}`);
  }
  const modules = model.namedModules();
  const wrapped = new Set(modules.filter(([, m]) => m instanceof LinearWithLoRA).map(([path]) => path));
  const targets = modules.filter(
    ([path, m]) =>
      (m instanceof Linear || m instanceof Conv1D) &&
      targetModules.some((t) => path.includes(t)) &&
      // a layer already wrapped by an earlier call is left alone
      ![...wrapped].some((w) => path.startsWith(w + ".")),
  );
  for (const [path, m] of targets) model.setSubmodule(path, new LinearWithLoRA(m as Linear | Conv1D, rank, loraAlpha, opts));
  model.requiresGrad_(false);
  for (const m of model.modules()) if (m instanceof LoRALayer) m.requiresGrad_(true);
  return targets.length;
}

/**
 * The chapter's merge_lora_weights: adds scaling·(A·B)ᵀ to the linear weight in place (Conv1D,
 * stored [in, out]: scaling·A·B) and returns the plain layer. The LoRALayer's tensors are freed;
 * put the returned layer where the LinearWithLoRA was.
 */
export function mergeLoraWeights(layer: LinearWithLoRA): Linear | Conv1D {
  const { linear, lora } = layer;
  noGrad(() => {
    if (linear instanceof Conv1D) gemm2d(linear.weight, lora.lora_A, false, lora.lora_B, false, lora.scaling, 1);
    else gemm2d(linear.weight, lora.lora_B, true, lora.lora_A, true, lora.scaling, 1);
  });
  lora.dispose();
  return linear;
}
