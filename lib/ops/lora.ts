// The LoRA update as one differentiable op: out = y + s·(drop(x)·Aᵀ)·Bᵀ, where y is the frozen
// layer's output. x [.., k], A [r, k], B [d, r], y [.., d]; N = the rows of x.
//
// Forward: u = drop(x)·Aᵀ (N×r, kept for backward), then out = y + s·u·Bᵀ, accumulated onto a copy
// of y, or onto y itself when the caller hands y over (consumeY) and nothing else shares its
// storage. Backward, with v = g·B (N×r):
//   gy = g                 gB = s·gᵀ·u                gA = s·vᵀ·drop(x)
//   gx = s·(v·A) ⊙ mask/(1-p)
// The dropout mask is never stored: drop(x) and the masked gx are recomputed from the Philox
// (seed, offset) the forward drew (see ./dropout.ts), and with p = 0 there is no copy of x. Frozen
// operands cost nothing in backward.
//
// Both directions are one native call each (native/cpu/lora.cc, native/cuda/lora.cu): on the CPU,
// blocks of rows run all their products while their rows sit in cache (one Philox evaluation masks
// both x and gx); on CUDA, thin hand-written passes over x and g apply the mask in registers.
import { native } from "../native/index.js";
import { DTYPE_CODE } from "../tensor/dtype.js";
import { defaultGenerator, type Generator } from "../tensor/random.js";
import { formatShape, isSoleView, record, shapeSize, type Tensor } from "../tensor/tensor.js";
import { checkFloat, checkSameDevice, newFloat, withContiguous } from "./util.js";

export interface LoraDeltaOptions {
  /** s: alpha / r, or alpha / sqrt(r) with rsLoRA. */
  scaling: number;
  /** Dropout probability on x before A (0 = none). */
  dropout?: number;
  /** Dropout is applied only when training. */
  training?: boolean;
  generator?: Generator;
  /**
   * The caller hands y over and will not read it again (a layer's own base output): out is then
   * written into y's storage when no other view or saved tensor shares it, saving a copy of y.
   */
  consumeY?: boolean;
}

/** y + s·(drop(x)·Aᵀ)·Bᵀ; see the file comment. */
export function loraDelta(y: Tensor, x: Tensor, A: Tensor, B: Tensor, opts: LoraDeltaOptions): Tensor {
  const op = "loraDelta";
  checkFloat(op, y, x, A, B);
  const k = x.shape[x.ndim - 1]!, r = A.shape[0]!, d = y.shape[y.ndim - 1]!;
  if (A.ndim !== 2 || A.shape[1] !== k || B.ndim !== 2 || B.shape[0] !== d || B.shape[1] !== r) {
    throw new Error(
      `${op}: for x ${formatShape(x.shape)} and output ${formatShape(y.shape)}, lora_A must be [r, ${k}] and lora_B [${d}, r]; ` +
        `got A ${formatShape(A.shape)} and B ${formatShape(B.shape)}`,
    );
  }
  const N = shapeSize(x.shape.slice(0, -1));
  if (shapeSize(y.shape.slice(0, -1)) !== N) throw new Error(`${op}: x ${formatShape(x.shape)} and output ${formatShape(y.shape)} have different row counts`);
  const s = opts.scaling;
  const p = opts.training === false ? 0 : opts.dropout ?? 0;
  const { seed, offset } = p > 0 ? (opts.generator ?? defaultGenerator).next(N * k) : { seed: 0n, offset: 0n };
  const maskScale = p >= 1 ? 0 : 1 / (1 - p);

  return withContiguous([x, A, B, y], (xc, Ac, Bc, yc) => {
    const dims = { N, k, r, d, scaling: s, p, maskScale, seed, offset };
    const u = newFloat([N, r], x);
    const inPlace = opts.consumeY === true && y.isContiguous() && isSoleView(y); // y's storage, no other reader: written over
    const out = inPlace ? y.detach() : newFloat(y.shape, y);
    native().loraForward({ ...dims, x: xc.nativeView, A: Ac!.nativeView, B: Bc!.nativeView, y: yc!.nativeView, out: out.nativeView, u: u.nativeView });

    const needX = x.requiresGrad, needA = A.requiresGrad, needB = B.requiresGrad;
    record(
      op, out, [y, x, A, B],
      (g, [xs, As, Bs, us]) => {
        const g2 = withContiguous([g], (gc) => gc.reshape(N, d));
        const gx = needX ? newFloat([...x.shape], g) : null;
        const gA = needA ? newFloat([r, k], g) : null;
        const gB = needB ? newFloat([d, r], g) : null;
        native().loraBackward({
          ...dims, g: g2.nativeView, x: xs!.nativeView, A: As!.nativeView, B: Bs!.nativeView, u: us!.nativeView,
          gx: gx?.nativeView ?? null, gA: gA?.nativeView ?? null, gB: gB?.nativeView ?? null,
        });
        g2.dispose();
        return [g.alias(), gx, gA, gB];
      },
      [xc, Ac!, Bc!, u],
    );
    u.dispose();
    return out;
  });
}

/**
 * W += s·B·A in place: an adapter merged into its frozen weight (s < 0 takes it out again). W [d, k]
 * (nn.Linear), or with `transposed` W [k, d] += s·(B·A)ᵀ (GPT-2's Conv1D, nn.Embedding); A [r, k]
 * and B [d, r] float32. W is float32 or bfloat16, contiguous; each of its elements is read once and
 * written once (a bfloat16 one widened, changed in float32 and rounded back, as PyTorch adds PEFT's
 * float32 delta into a bf16 weight). Not recorded by autograd.
 */
export function loraMerge(W: Tensor, A: Tensor, B: Tensor, scaling: number, transposed = false): void {
  const op = "loraMerge";
  checkFloat(op, A, B);
  checkSameDevice(op, W, A, B);
  if (W.dtype !== "float32" && W.dtype !== "bfloat16") throw new Error(`${op}: W must be float32 or bfloat16, got ${W.dtype}`);
  if (!W.isContiguous()) throw new Error(`${op}: W ${formatShape(W.shape)} must be contiguous (it is updated in place); merge into W.contiguous() and copy back`);
  const r = A.shape[0]!, k = A.shape[1]!, d = B.shape[0]!;
  const want = transposed ? [k, d] : [d, k];
  if (A.ndim !== 2 || B.ndim !== 2 || B.shape[1] !== r || W.ndim !== 2 || W.shape[0] !== want[0] || W.shape[1] !== want[1]) {
    throw new Error(
      `${op}: with lora_A [r, k] and lora_B [d, r], W must be ${transposed ? "[k, d] (transposed)" : "[d, k]"}; ` +
        `got W ${formatShape(W.shape)}, A ${formatShape(A.shape)}, B ${formatShape(B.shape)}`,
    );
  }
  withContiguous([A, B], (Ac, Bc) =>
    native().loraMerge({ W: W.nativeView, dtype: DTYPE_CODE[W.dtype], A: Ac!.nativeView, B: Bc!.nativeView, rows: want[0]!, cols: want[1]!, r, scaling, transposed }),
  );
}
