// Gradient checkpointing (torch.utils.checkpoint): a segment of the forward pass (one decoder block)
// keeps only its inputs for the backward; its activations are freed as the forward goes on and
// recomputed, one segment at a time, when the backward reaches it. Memory for activations drops
// from all blocks' to one block's plus the block inputs; the cost is a second forward of each
// block. Random draws (dropout) are recorded in the first pass and replayed in the recomputation,
// so the recomputed activations, and so the gradients, are exactly those of the plain run.
import { recordDraws, replayDraws } from "../tensor/random.js";
import { tidy } from "../tensor/scope.js";
import { enableGrad, needsGrad, noGrad, record, type Tensor } from "../tensor/tensor.js";

/**
 * y = fn(x, ...context), recorded as one op whose backward recomputes fn. `context` are further
 * inputs that get no gradient (masks, RoPE tables): the op keeps them alive for the recomputation.
 * `params` are the tensors fn reads besides its arguments (a block's parameters); those that
 * require grad get their gradients from the recomputation's own backward, added into their .grad.
 */
export function checkpoint<C extends (Tensor | null)[]>(
  fn: (x: Tensor, ...context: C) => Tensor,
  x: Tensor,
  context: C,
  params: readonly Tensor[],
): Tensor {
  const trainable = params.filter((p) => p.requiresGrad);
  if (!needsGrad(x, ...trainable)) return fn(x, ...context);
  // The first pass records nothing, so its intermediates are freed at the end of the tidy.
  const { result: out, draws } = recordDraws(() => tidy(() => noGrad(() => fn(x, ...context))));
  const present = context.filter((t): t is Tensor => t !== null);
  record(
    "checkpoint",
    out,
    [x, ...trainable],
    (g, [savedX, ...savedContext]) => {
      const gx = tidy(() => {
        const input = savedX!.detach();
        if (x.requiresGrad) input.requiresGrad = true;
        let k = 0;
        const ctx = context.map((t) => (t === null ? null : savedContext[k++]!)) as C;
        const y = enableGrad(() => replayDraws(draws, () => fn(input, ...ctx)));
        y.backward(g);
        const grad = input.grad;
        input.grad = null; // handed to the caller, not freed with input
        return grad;
      });
      return [gx, ...trainable.map(() => null)];
    },
    [x, ...present],
  );
  return out;
}
