// Gradient accumulation. backward() adds into each leaf's .grad (autograd/engine.ts), so running
// backward on k micro-batches before one optimizer step sums their gradients. When each
// micro-batch loss is a mean over its examples, scaling every loss by 1/k makes the sum equal the
// gradient of the mean over all k micro-batches (for equal-sized micro-batches; a token-level mean
// whose micro-batches hold different numbers of counted tokens weights them slightly differently,
// as in PyTorch). The Trainer's loop:
//
//   for each micro-batch i < k:  backwardAccumulated(loss_i, k)
//   clipGradNorm(params, maxNorm); optimizer.step(); scheduler.step(); optimizer.zeroGrad()
import type { Tensor } from "../tensor/tensor.js";
import { div } from "../ops/elementwise.js";

/** loss.backward() of loss / accumSteps (the Hugging Face Trainer's `loss / gradient_accumulation_steps`). */
export function backwardAccumulated(loss: Tensor, accumSteps: number): void {
  if (!Number.isInteger(accumSteps) || accumSteps < 1) throw new Error(`backwardAccumulated: accumSteps must be an integer >= 1, got ${accumSteps}`);
  if (accumSteps === 1) {
    loss.backward();
    return;
  }
  const scaled = div(loss, accumSteps);
  try {
    scaled.backward();
  } finally {
    scaled.dispose();
  }
}
