// The tape: each differentiable op calls record() right after computing its output, with a
// backward rule written beside its forward (see lib/ops). Nodes keep the tensors their rule needs
// alive through saved aliases; the engine (engine.ts) frees them once the rule has run.
import type { Tensor } from "../tensor/tensor.js";

/** One recorded op: routes the output's gradient to its inputs. */
export interface GradNode {
  readonly name: string;
  /** The op's inputs (null where no gradient flows); only their graph links are used. */
  readonly inputs: readonly (Tensor | null)[];
  /** Maps the output gradient to one gradient per input (null = none), each shaped like the input. */
  backward(grad: Tensor): (Tensor | null)[];
  /** Aliases kept alive for backward; released by the engine. */
  saved: Tensor[];
  /** Set once backward ran and the saved tensors were freed. */
  released?: boolean;
}

let gradDepth = 0;

/** True unless inside noGrad(). */
export function isGradEnabled(): boolean {
  return gradDepth === 0;
}

/** Runs fn without recording anything on the tape (inference, optimizer updates, merges). */
export function noGrad<T>(fn: () => T): T {
  gradDepth++;
  try {
    return fn();
  } finally {
    gradDepth--;
  }
}

/** True when an op on these inputs must be recorded. */
export function needsGrad(...inputs: (Tensor | null | undefined)[]): boolean {
  return gradDepth === 0 && inputs.some((t) => t?.requiresGrad === true);
}

/**
 * Records `output = name(inputs)` when gradients are enabled and some input requires them.
 * `backward` receives the output gradient; `save` lists tensors the rule reads later: they are
 * kept alive (as aliases sharing storage) even if the caller disposes them, until backward ran.
 */
export function record(
  name: string,
  output: Tensor,
  inputs: readonly (Tensor | null)[],
  backward: (grad: Tensor, saved: Tensor[]) => (Tensor | null)[],
  save: readonly Tensor[] = [],
): void {
  if (!needsGrad(...inputs)) return;
  const saved = save.map((t) => t.alias());
  const node: GradNode = {
    name,
    inputs: inputs.map((t) => (t?.requiresGrad ? t : null)),
    backward: (g) => backward(g, node.saved),
    saved,
  };
  output.setGradFn(node);
}
