// DoRA, weight-decomposed LoRA (PEFT's DoraLinearLayer and DoraLinearVariant, peft 0.21), for
// Linear and GPT-2's Conv1D. Each adapter adds a trainable magnitude m [out] next to A and B:
//
//   norm = ‖W + s·B·A‖ per output feature (W as nn.Linear holds it, [out, in]; a Conv1D's stored
//          [in, out] weight is normed over its rows, i.e. per column), computed without gradient
//   mag  = m / norm                        (the paper's §4.3: the norm is treated as a constant)
//   y    = base(x) + (mag − 1)·(x·Wᵀ) + mag·s·B(A(x))      bias counted once
//   init:    m = norm with A and B as initialised (B = 0 by default, so m = ‖W‖)
//   merge:   W ← (m/‖W₀ + ΔW‖)·(W + ΔW), W₀ the weight without merged adapters; unmerge inverts it
//            with the factor kept from the merge (the merged W no longer gives the same norm)
//
// In training with lora_dropout > 0, PEFT drops x once and runs both the LoRA term and x·Wᵀ on the
// dropped input; without dropout it reuses the base output minus the bias. Both are mirrored here.
import { Module } from "../nn/module.js";
import { add, div, mul, sqrt, square, sub } from "../ops/elementwise.js";
import { loraDelta, type LoraDeltaOptions } from "../ops/lora.js";
import { conv1dLinear, linear } from "../ops/matmul.js";
import { dropout } from "../ops/dropout.js";
import { sum } from "../ops/reduce.js";
import { tensor } from "../tensor/creation.js";
import { copyInto, noGrad, type Tensor } from "../tensor/tensor.js";

/**
 * One adapter's magnitude vector (PEFT's DoraLinearLayer): its parameter is named "weight", so it
 * lives at `<layer>.lora_magnitude_vector.<adapter>.weight` in memory and is saved as
 * `<layer>.lora_magnitude_vector`.
 */
export class DoraMagnitude extends Module {
  declare weight: Tensor;
  constructor(m: Tensor) {
    super();
    this.registerParameter("weight", m);
  }
}

/** What the DoRA math needs from a LoRA layer for one adapter. */
export interface DoraOperands {
  /** The base weight: [out, in], or [in, out] when fanInFanOut (GPT-2's Conv1D). */
  weight: Tensor;
  bias: Tensor | null;
  fanInFanOut: boolean;
  /** target += sign·s·ΔW, in the base weight's layout (the layer's own merge gemm). */
  addDelta(target: Tensor, sign: number): void;
}

/** ‖W + s·B·A‖ per output feature, [out], as a constant (no gradient). `weight` defaults to the base weight. */
export function doraWeightNorm(op: DoraOperands, weight: Tensor = op.weight): Tensor {
  return noGrad(() => {
    const w = weight.contiguous(); // a copy: the delta is added to it
    op.addDelta(w, 1);
    const squares = square(w);
    w.dispose();
    const sums = sum(squares, op.fanInFanOut ? 0 : 1);
    squares.dispose();
    const norm = sqrt(sums);
    sums.dispose();
    return norm;
  });
}

/**
 * The layer output with one DoRA adapter added: `y` is the output so far (base output, plus any
 * adapters applied before this one, as in PEFT), x the layer input, m the magnitude.
 */
export function doraForward(op: DoraOperands, y: Tensor, x: Tensor, A: Tensor, B: Tensor, m: Tensor, opts: LoraDeltaOptions): Tensor {
  const norm = doraWeightNorm(op);
  const mag = div(m, norm); // [out]: broadcasts over the last dim of y, for Linear and Conv1D alike
  norm.dispose();
  const p = opts.training === false ? 0 : opts.dropout ?? 0;
  if (p > 0) {
    const xd = dropout(x, p, { training: true, generator: opts.generator });
    const baseOnDropped = op.fanInFanOut ? conv1dLinear(xd, op.weight) : linear(xd, op.weight); // no bias
    const z = loraDelta(baseOnDropped, xd, A, B, { scaling: opts.scaling }); // x_d·Wᵀ + s·B(A(x_d))
    return add(sub(y, baseOnDropped), mul(mag, z)); // y + (mag − 1)·x_d·Wᵀ + mag·s·B(A(x_d))
  }
  // y + (mag − 1)·(y − b) + mag·s·B(A(x)) = b + mag·(y − b + s·B(A(x)))
  const withoutBias = op.bias ? sub(y, op.bias) : y;
  const scaled = mul(mag, loraDelta(withoutBias, x, A, B, { scaling: opts.scaling }));
  return op.bias ? add(scaled, op.bias) : scaled;
}

/**
 * Merges one DoRA adapter into `target` (the base weight, or a trial copy for a safe merge):
 * target ← factor·(target + ΔW) with factor = m/‖W₀ + ΔW‖ per output feature, W₀ = `unmerged`
 * (the base weight without previously merged adapters). Returns the factor, which unmerge needs,
 * on the host: it outlives the merge, and a layer dropped while merged must not hold device memory.
 */
export function doraMerge(op: DoraOperands, target: Tensor, unmerged: Tensor, m: Tensor): Float32Array {
  return noGrad(() => {
    const norm = doraWeightNorm(op, unmerged);
    const factor = div(m, norm);
    norm.dispose();
    op.addDelta(target, 1);
    scaleOutputs(op, target, factor, mul);
    const host = factor.dataSync() as Float32Array;
    factor.dispose();
    return host;
  });
}

/** Undoes doraMerge on `target`: target ← target/factor − ΔW. */
export function doraUnmerge(op: DoraOperands, target: Tensor, factor: Float32Array): void {
  noGrad(() => {
    const f = tensor(factor, { device: target.device });
    scaleOutputs(op, target, f, div);
    f.dispose();
    op.addDelta(target, -1);
  });
}

/** target ← f(target, factor) with factor [out] spread over target's output dimension, in place. */
function scaleOutputs(op: DoraOperands, target: Tensor, factor: Tensor, f: (a: Tensor, b: Tensor) => Tensor): void {
  const spread = op.fanInFanOut ? factor.reshape(1, -1) : factor.reshape(-1, 1);
  const result = f(target, spread);
  copyInto(target, result);
  result.dispose();
  spread.dispose();
}
