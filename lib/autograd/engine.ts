// Reverse-mode differentiation over the tape: visits the recorded ops from the output back to the
// leaves in reverse topological order, calls each op's backward rule once with the summed
// gradient of its output, and accumulates into the .grad of leaves that require grad.
// Every intermediate gradient and saved tensor is disposed as soon as it is used.
// The engine sits above lib/tensor (which holds the tape) and below the ops: it registers itself
// as Tensor.backward() when loaded, and sums gradients with the element-wise Add kernel directly.
import { Binary } from "../native/enums.js";
import { native } from "../native/index.js";
import { PROFILING, profilePhase } from "../profile.js";
import { onesLike } from "../tensor/creation.js";
import { keep } from "../tensor/scope.js";
import { emptyLike, formatShape, noGrad, registerBackward, type GradNode, type Tensor } from "../tensor/tensor.js";

/** out = a + b for two gradients of one shape; out is contiguous and may be a (an in-place sum). */
function addGrads(out: Tensor, a: Tensor, b: Tensor): void {
  if (!out.isContiguous() || [a, b].some((t) => t.ndim !== out.ndim || t.shape.some((s, i) => s !== out.shape[i]))) {
    throw new Error(
      `backward: cannot add a gradient of shape ${formatShape(b.shape)} into ${formatShape(a.shape)}` +
        `${out.isContiguous() ? "" : " (the .grad being summed into is not contiguous)"}; a .grad must be a contiguous tensor shaped like its parameter`,
    );
  }
  for (const t of [a, b]) {
    if (t.dtype !== "float32") {
      throw new Error(`backward: gradients are summed in float32, got ${t.dtype} ${formatShape(t.shape)}; convert with .to(device, "float32")`);
    }
  }
  if (a.device !== b.device) throw new Error(`backward: gradients are on different devices (${a.device} and ${b.device}); move them with .to(device)`);
  native().binary({ op: Binary.Add, a: a.nativeView, b: b.nativeView, out: out.nativeView, shape: out.shape });
}

/** a + b in a new contiguous tensor. */
function sumGrads(a: Tensor, b: Tensor): Tensor {
  const out = emptyLike(a.shape, a.dtype, a.deviceInfo);
  addGrads(out, a, b);
  return out;
}

function topoOrder(root: GradNode): GradNode[] {
  const order: GradNode[] = [];
  const seen = new Set<GradNode>([root]);
  const stack: { node: GradNode; next: number }[] = [{ node: root, next: 0 }];
  while (stack.length > 0) {
    const top = stack[stack.length - 1]!;
    const input = top.node.inputs[top.next++];
    if (top.next > top.node.inputs.length) {
      order.push(top.node);
      stack.pop();
    } else if (input?.gradFn && !seen.has(input.gradFn)) {
      seen.add(input.gradFn);
      stack.push({ node: input.gradFn, next: 0 });
    }
  }
  return order.reverse();
}

function checkGrad(node: string, input: Tensor, g: Tensor): void {
  if (g.ndim !== input.ndim || g.shape.some((s, i) => s !== input.shape[i])) {
    throw new Error(`backward of ${node}: gradient shape ${formatShape(g.shape)} does not match its input ${formatShape(input.shape)}`);
  }
}

/** Adds g into leaf.grad; takes ownership of g. */
function accumulateLeaf(leaf: Tensor, g: Tensor): void {
  keep(g);
  if (!leaf.grad) {
    // The stored gradient must own its memory: a view or alias would be changed by later in-place sums.
    if (g.isContiguous() && g.storage.refCount === 1) {
      leaf.grad = g;
    } else {
      leaf.grad = keep(g.contiguous());
      g.dispose();
    }
  } else {
    addGrads(leaf.grad, leaf.grad, g);
    g.dispose();
  }
}

/**
 * Computes d(root)/d(leaf) for every leaf that requires grad and adds it to leaf.grad.
 * `grad` defaults to 1 for a one-element root. The graph is freed afterwards.
 */
export function backward(root: Tensor, grad?: Tensor): void {
  if (!root.requiresGrad) {
    throw new Error(
      "backward: this tensor does not require grad: no parameter it depends on has requiresGrad, or it was computed inside noGrad()",
    );
  }
  if (!grad && root.size !== 1) {
    throw new Error(`backward: a gradient must be passed for a non-scalar output of shape ${formatShape(root.shape)}`);
  }
  noGrad(() => {
    const seed = grad ? grad.alias() : onesLike(root);
    if (grad) checkGrad("backward", root, grad);
    if (!root.gradFn) {
      accumulateLeaf(root, seed);
      return;
    }
    const grads = new Map<GradNode, Tensor>([[root.gradFn, seed]]);
    for (const node of topoOrder(root.gradFn)) {
      if (node.released) {
        throw new Error(`backward: the graph through ${node.name} was already used by an earlier backward(); run the forward pass again`);
      }
      const g = grads.get(node);
      grads.delete(node);
      let inputGrads: (Tensor | null)[] = [];
      try {
        // With LOWRANK_PROFILE, the rule's native calls are counted under "backward <op>".
        if (g) inputGrads = PROFILING ? profilePhase(`backward ${node.name}`, () => node.backward(g)) : node.backward(g);
      } finally {
        g?.dispose();
        node.saved.forEach((t) => t.dispose());
        node.saved = [];
        node.released = true;
      }
      node.inputs.forEach((input, i) => {
        const gi = inputGrads[i];
        if (!input || !gi) {
          gi?.dispose();
          return;
        }
        checkGrad(node.name, input, gi);
        if (!input.gradFn) {
          accumulateLeaf(input, gi);
          return;
        }
        const prev = grads.get(input.gradFn);
        if (prev && prev.isContiguous() && prev.storage.refCount === 1) {
          // The engine owns prev outright (no other view of its storage): sum in place, no new buffer.
          addGrads(prev, prev, gi);
          gi.dispose();
        } else if (prev) {
          grads.set(input.gradFn, sumGrads(prev, gi));
          prev.dispose();
          gi.dispose();
        } else {
          grads.set(input.gradFn, gi);
        }
      });
    }
  });
}

registerBackward(backward);
