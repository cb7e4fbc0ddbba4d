// Reverse-mode differentiation over the tape: visits the recorded ops from the output back to the
// leaves in reverse topological order, calls each op's backward rule once with the summed
// gradient of its output, and accumulates into the .grad of leaves that require grad.
// Every intermediate gradient and saved tensor is disposed as soon as it is used.
// The engine sits above lib/tensor (which holds the tape) and below the ops: it registers itself
// as Tensor.backward() when loaded, and sums gradients with the element-wise Add kernel directly.
// Sums are written in place into a gradient the engine owns outright, so summing allocates only
// when neither side is owned; the pieces of slices (GradPiece) wait until the gradient is needed
// and are then copied into one buffer, unless they already lie in place in one (see piecesInPlace).
import { Binary } from "../native/enums.js";
import { native } from "../native/index.js";
import { PROFILING, profilePhase } from "../profile.js";
import { onesLike, zeros } from "../tensor/creation.js";
import { keep } from "../tensor/scope.js";
import {
  contiguousStrides, copyInto, emptyLike, formatShape, GradPiece, isSoleView, noGrad, registerBackward, shapeSize, Tensor, type GradNode, type InputGrad,
} from "../tensor/tensor.js";

/** out = a + b for two gradients of one shape; out is contiguous and may be a or b (an in-place sum). */
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

/**
 * prev + g, taking ownership of both: written in place into whichever the engine owns (a + b and
 * b + a are the same floats), into a new tensor only when both share their storage with others.
 */
function sumGrads(prev: Tensor, g: Tensor): Tensor {
  const out = isSoleView(prev) ? prev : isSoleView(g) ? g : emptyLike(prev.shape, prev.dtype, prev.deviceInfo);
  addGrads(out, prev, g);
  if (out !== prev) prev.dispose();
  if (out !== g) g.dispose();
  return out;
}

const boxesOverlap = (a: GradPiece, b: GradPiece): boolean =>
  a.starts.every((s, i) => s < b.starts[i]! + b.grad.shape[i]! && b.starts[i]! < s + a.grad.shape[i]!);

/**
 * The pieces' own buffer as the full gradient of `shape` (taking ownership of the pieces) when they
 * already tile one contiguous tensor of that shape and nothing else shares their storage, else null.
 * A backward rule that writes the gradients of several slices of one tensor into views of a single
 * buffer laid out as that tensor (attention's dq, dk, dv of a packed qkv projection) so saves the copies.
 */
function piecesInPlace(shape: readonly number[], pieces: readonly GradPiece[]): Tensor | null {
  const first = pieces[0]!.grad;
  const storage = first.storage;
  if (storage.refCount !== pieces.length || pieces.some((p) => p.grad.storage !== storage || p.grad.dtype !== first.dtype)) return null;
  if (pieces.reduce((n, p) => n + p.grad.size, 0) !== shapeSize(shape)) return null;
  const strides = contiguousStrides(shape);
  const at = (p: GradPiece) => p.starts.reduce((o, s, d) => o + s * strides[d]!, 0);
  const base = first.offset - at(pieces[0]!);
  const placed = (p: GradPiece) =>
    p.grad.offset - at(p) === base && p.grad.shape.every((n, d) => n === 1 || p.grad.strides[d] === strides[d]);
  if (base < 0 || !pieces.every(placed)) return null;
  // In place and as many elements as the tensor: they tile it exactly unless two boxes overlap.
  if (pieces.some((p, i) => pieces.slice(i + 1).some((q) => boxesOverlap(p, q)))) return null;
  const full = new Tensor(storage.retain(), shape, first.dtype, strides, base);
  for (const p of pieces) p.grad.dispose();
  return full;
}

/**
 * The full gradient of a tensor of `shape` from its pieces (taking ownership of them): each piece
 * is copied into its box of one buffer, zero-filled first only where the pieces leave part of it
 * uncovered. Pieces that overlap an earlier one go into a second buffer, added to the first.
 */
function assemble(shape: readonly number[], pieces: readonly GradPiece[]): Tensor {
  const { dtype, device } = pieces[0]!.grad;
  const layers: GradPiece[][] = [];
  for (const p of pieces) {
    if (p.grad.size === 0) {
      p.grad.dispose(); // an empty box adds nothing
      continue;
    }
    const layer = layers.find((l) => l.every((q) => !boxesOverlap(p, q)));
    if (layer) layer.push(p);
    else layers.push([p]);
  }
  if (layers.length === 0) return zeros(shape, { dtype, device });
  let total: Tensor | null = null;
  for (const layer of layers) {
    const covered = layer.reduce((n, p) => n + p.grad.size, 0) === shapeSize(shape);
    const buf = covered ? emptyLike(shape, dtype, layer[0]!.grad.deviceInfo) : zeros(shape, { dtype, device });
    for (const p of layer) {
      let box = buf.alias();
      p.starts.forEach((s, d) => {
        if (s === 0 && p.grad.shape[d] === shape[d]) return;
        const narrower = box.slice(d, s, s + p.grad.shape[d]!);
        box.dispose();
        box = narrower;
      });
      copyInto(box, p.grad);
      box.dispose();
      p.grad.dispose();
    }
    total = total ? sumGrads(total, buf) : buf;
  }
  return total!;
}

/** The gradients routed to one node's output so far: a summed full gradient and pieces not yet written out. */
interface Pending {
  /** The shape of the node's output. */
  shape: readonly number[];
  full: Tensor | null;
  pieces: GradPiece[];
}

function addPending(p: Pending, g: Tensor | GradPiece): void {
  if (g instanceof GradPiece) p.pieces.push(g);
  else p.full = p.full ? sumGrads(p.full, g) : g;
}

/** The summed gradient of a Pending (which it consumes), or null when nothing arrived. */
function resolve(p: Pending | undefined): Tensor | null {
  if (!p) return null;
  if (p.pieces.length === 0) return p.full;
  const assembled = piecesInPlace(p.shape, p.pieces) ?? assemble(p.shape, p.pieces);
  return p.full ? sumGrads(p.full, assembled) : assembled;
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

function checkGrad(node: string, input: Tensor, g: Tensor | GradPiece): void {
  const piece = g instanceof GradPiece ? g : null;
  const t = piece ? piece.grad : (g as Tensor);
  const fits = piece
    ? t.ndim === input.ndim && piece.starts.length === input.ndim && piece.starts.every((s, i) => s >= 0 && s + t.shape[i]! <= input.shape[i]!)
    : t.ndim === input.ndim && t.shape.every((s, i) => s === input.shape[i]);
  if (!fits) {
    const what = piece ? `gradient piece ${formatShape(t.shape)} at [${piece.starts.join(", ")}]` : `gradient shape ${formatShape(t.shape)}`;
    throw new Error(`backward of ${node}: ${what} does not ${piece ? "fit in" : "match"} its input ${formatShape(input.shape)}`);
  }
}

/** Adds g into leaf.grad; takes ownership of g. */
function accumulateLeaf(leaf: Tensor, grad: Tensor): void {
  const g = keep(grad);
  if (!leaf.grad) {
    // The stored gradient must own its memory: a view or alias would be changed by later in-place sums.
    if (isSoleView(g)) {
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
    const grads = new Map<GradNode, Pending>([[root.gradFn, { shape: root.shape, full: seed, pieces: [] }]]);
    // A leaf's full gradients go into its .grad as they come; its pieces (a sliced parameter) wait
    // for the end, to be written into one buffer first.
    const leafPieces = new Map<Tensor, Pending>();
    for (const node of topoOrder(root.gradFn)) {
      if (node.released) {
        throw new Error(`backward: the graph through ${node.name} was already used by an earlier backward(); run the forward pass again`);
      }
      const pending = grads.get(node);
      grads.delete(node);
      let g: Tensor | null = null;
      let inputGrads: InputGrad[] = [];
      try {
        // With LOWRANK_PROFILE, the rule's native calls are counted under "backward <op>".
        g = resolve(pending);
        if (g) inputGrads = PROFILING ? profilePhase(`backward ${node.name}`, () => node.backward(g!)) : node.backward(g);
      } finally {
        g?.dispose();
        node.saved.forEach((t) => t.dispose());
        node.saved = [];
        node.released = true;
      }
      node.inputs.forEach((input, i) => {
        const gi = inputGrads[i];
        if (!input || !gi) {
          (gi instanceof GradPiece ? gi.grad : gi)?.dispose();
          return;
        }
        checkGrad(node.name, input, gi);
        if (!input.gradFn && !(gi instanceof GradPiece)) {
          accumulateLeaf(input, gi);
          return;
        }
        const key = input.gradFn ?? input;
        const map = (input.gradFn ? grads : leafPieces) as Map<GradNode | Tensor, Pending>;
        let p = map.get(key);
        if (!p) map.set(key, (p = { shape: input.shape, full: null, pieces: [] }));
        addPending(p, gi);
      });
    }
    leafPieces.forEach((p, leaf) => accumulateLeaf(leaf, resolve(p)!));
  });
}

registerBackward(backward);
