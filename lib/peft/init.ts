// LoRA initialisations that rewrite the base weight (PEFT's LoraLayer.pissa_init / olora_init):
// A and B come from a factorisation of W, and W is replaced by W − s·B·A so that the adapted
// layer starts out computing what the base layer computed. The factorisations run in float64 on
// the CPU (lib/linalg); PEFT runs them in float32, so A, B and the residual agree with PEFT's to
// float32 rounding (and, for PiSSA, up to the sign of each singular pair, which no SVD fixes).
//
// "pissa_niter_N": PEFT takes the top-r triplets from torch.svd_lowrank (N subspace iterations on
// a random start, no oversampling), an approximation that is random and, for a weight whose top
// singular values are close together, far from the exact ones. lowrank computes the exact
// truncated SVD for every N: the top-r subspace the randomized method converges to. So on a
// weight with a clear spectral gap our B·A and residual equal PEFT's to float32 precision
// (test/fixtures/peft-extra/mlp); without a gap PEFT's own result changes from run to run.
//
// When an adapter saved with one of these inits is loaded, PEFT (and lowrank) run the init on the
// fresh base weight again, replacing W by its residual, before overwriting A and B from the file.
import { matrix, oloraFactors, pissaFactors, transpose, type Matrix } from "../linalg/index.js";
import { tensor } from "../tensor/creation.js";
import { copyInto, formatShape, noGrad, type Tensor } from "../tensor/tensor.js";
import type { InitLoraWeights } from "./config.js";

/** The initLoraWeights values that factor the base weight and replace it by the residual. */
export type BaseMutatingInit = "pissa" | `pissa_niter_${number}` | "olora";

export function isBaseMutatingInit(init: InitLoraWeights): init is BaseMutatingInit {
  return init === "pissa" || init === "olora" || (typeof init === "string" && init.startsWith("pissa_niter_"));
}

/** The tensors of one adapter on one linear layer that a base-mutating init writes. */
export interface InitTarget {
  /** The base layer's weight: [out, in], or [in, out] when fanInFanOut (GPT-2's Conv1D). */
  weight: Tensor;
  fanInFanOut: boolean;
  /** lora_A [r, in] and lora_B [out, r]. */
  A: Tensor;
  B: Tensor;
  scaling: number;
  /** Which layer this is, for error messages. */
  where: string;
}

/**
 * Runs `init` on one layer: computes A and B from the base weight, writes them into t.A and t.B,
 * and replaces the base weight by W − scaling·B·A (in its stored layout).
 */
export function applyBaseMutatingInit(init: BaseMutatingInit, t: InitTarget): void {
  const [r, inFeatures] = t.A.shape as [number, number];
  const outFeatures = t.B.shape[0]!;
  if (init === "olora" && t.fanInFanOut) {
    // PEFT 0.21's olora_init factors the weight as stored, so for a Conv1D ([in, out]) it makes
    // A [r, out] and B [in, r]: the forward pass then fails for in ≠ out (GPT-2's c_attn, c_fc,
    // mlp.c_proj) and, for square layers, the init changes the layer's output. An adapter made
    // here would not load in PEFT either, since PEFT re-runs that init when loading.
    throw new Error(
      `initLoraWeights "olora" on ${t.where}: a Conv1D stores its weight [in, out] (${formatShape(t.weight.shape)}), ` +
        "and PEFT's OLoRA init does not transpose it (it produces lora_A [r, out] and lora_B [in, r], which fail or change " +
        'the output), so such an adapter cannot be shared with PEFT. Use initLoraWeights "pissa" (which PEFT handles ' +
        "correctly for Conv1D), or OLoRA on nn.Linear layers.",
    );
  }
  noGrad(() => {
    const stored = matrix(t.weight.shape[0]!, t.weight.shape[1]!, t.weight.dataSync());
    // PiSSA and OLoRA factor the weight as nn.Linear holds it: [out, in].
    const w = t.fanInFanOut ? transpose(stored) : stored;
    if (w.rows !== outFeatures || w.cols !== inFeatures) {
      throw new Error(`initLoraWeights "${init}" on ${t.where}: weight ${formatShape(t.weight.shape)} does not match lora_A ${formatShape(t.A.shape)} and lora_B ${formatShape(t.B.shape)}`);
    }
    const f = init === "olora" ? oloraFactors(w, r, t.scaling) : pissaFactors(w, r, t.scaling);
    writeMatrix(t.A, f.A);
    writeMatrix(t.B, f.B);
    writeMatrix(t.weight, t.fanInFanOut ? transpose(f.residual) : f.residual);
  });
}

/** Copies a float64 matrix into a float32 tensor of the same shape, rounding each value. */
export function writeMatrix(dst: Tensor, m: Matrix): void {
  const src = tensor(Float32Array.from(m.data), { shape: [m.rows, m.cols], device: dst.device });
  copyInto(dst, src);
  src.dispose();
}
