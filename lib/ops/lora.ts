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
import { zeros } from "../tensor/creation.js";
import { keep } from "../tensor/scope.js";
import { copyInto, emptyLike, formatShape, isSoleView, record, shapeSize, type Tensor } from "../tensor/tensor.js";
import { checkFloat, checkSameDevice, contiguousInput, newFloat, withContiguous } from "./util.js";

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
 * and B [d, r] float32. W is float32 or bfloat16 with contiguous rows (further apart in an
 * AugmentedWeight); each of its elements is read once and
 * written once (a bfloat16 one widened, changed in float32 and rounded back, as PyTorch adds PEFT's
 * float32 delta into a bf16 weight). Not recorded by autograd.
 */
export function loraMerge(W: Tensor, A: Tensor, B: Tensor, scaling: number, transposed = false): void {
  const op = "loraMerge";
  checkFloat(op, A, B);
  checkSameDevice(op, W, A, B);
  if (W.dtype !== "float32" && W.dtype !== "bfloat16") throw new Error(`${op}: W must be float32 or bfloat16, got ${W.dtype}`);
  const r = A.shape[0]!, k = A.shape[1]!, d = B.shape[0]!;
  const want = transposed ? [k, d] : [d, k];
  if (A.ndim !== 2 || B.ndim !== 2 || B.shape[1] !== r || W.ndim !== 2 || W.shape[0] !== want[0] || W.shape[1] !== want[1]) {
    throw new Error(
      `${op}: with lora_A [r, k] and lora_B [d, r], W must be ${transposed ? "[k, d] (transposed)" : "[d, k]"}; ` +
        `got W ${formatShape(W.shape)}, A ${formatShape(A.shape)}, B ${formatShape(B.shape)}`,
    );
  }
  const [rows, cols] = want as [number, number];
  const ld = rows > 1 ? W.strides[0]! : cols;
  if ((cols > 1 && W.strides[1] !== 1) || ld < cols) {
    throw new Error(`${op}: W ${formatShape(W.shape)} with strides ${formatShape(W.strides)} must have contiguous rows (it is updated in place); merge into W.contiguous() and copy back`);
  }
  withContiguous([A, B], (Ac, Bc) =>
    native().loraMerge({ W: W.nativeView, dtype: DTYPE_CODE[W.dtype], A: Ac!.nativeView, B: Bc!.nativeView, rows, cols, ld, r, scaling, transposed }),
  );
}

/**
 * A frozen bfloat16 weight kept in the top-left corner of a zero-padded buffer whose extra `pad`
 * rows and columns take one adapter and the bias, so that loraLinear runs a layer, its bias and its
 * LoRA update as one tensor-core GEMM (the layout: native/ops/lora.h, LoraAugPack). `weight` is the
 * view a layer holds: [in, out] (Conv1D, `transposed`) or [out, in] (nn.Linear), rows ld apart.
 */
export class AugmentedWeight {
  /** bf16 [in + pad, out + pad] (transposed) or [out + pad, in + pad]. */
  readonly buffer: Tensor;
  readonly inFeatures: number;
  readonly outFeatures: number;

  /**
   * Moves `weight` (bfloat16 [in, out] when `transposed`, else [out, in]) into a new buffer with room
   * for adapters of rank up to pad - 1 (the last column takes the bias): weight becomes a view of it.
   */
  constructor(weight: Tensor, readonly pad: number, readonly transposed: boolean) {
    if (weight.dtype !== "bfloat16" || weight.ndim !== 2) throw new Error(`AugmentedWeight: a 2-D bfloat16 weight expected, got ${weight.toString()}`);
    const [rows, cols] = weight.shape as [number, number];
    [this.inFeatures, this.outFeatures] = transposed ? [rows, cols] : [cols, rows];
    this.buffer = keep(zeros([rows + pad, cols + pad], { device: weight.device, dtype: "bfloat16" }));
    const top = this.buffer.slice(0, 0, rows), corner = top.slice(1, 0, cols);
    copyInto(corner, weight);
    weight.adoptView(corner);
    top.dispose();
    corner.dispose();
  }

  /** The padding an adapter of rank r needs (r columns and the bias, rounded up to 8: 16-byte rows). */
  static padFor(r: number): number {
    return Math.ceil((r + 1) / 8) * 8;
  }

  /** The buffer's row stride. */
  get ld(): number {
    return this.buffer.shape[1]!;
  }

  /** Whether `weight` is (still) the view of this buffer's corner. */
  holds(weight: Tensor): boolean {
    return !weight.isDisposed && !this.buffer.isDisposed && weight.storage === this.buffer.storage && weight.offset === 0 && weight.strides[0] === this.ld;
  }

  dispose(): void {
    this.buffer.dispose();
  }
}

/**
 * The frozen layer and one LoRA adapter in one GEMM: out = x·W + b + s·(drop(x)·Aᵀ)·Bᵀ (W as
 * `aug` holds it: Conv1D's [in, out] or nn.Linear's [out, in], bfloat16), x float32 [.., k], A [r, k]
 * and B [d, r] float32 (the trainable factors), bias [d] frozen or null. Autocast's arithmetic: the
 * GEMM multiplies bf16 values (x, s·u, B, the bias) with float32 sums; u, v and the factors'
 * gradients are float32.
 *
 * Forward: one pass over x writes its bf16 copy and u = drop(x)·Aᵀ into the augmented input
 * xa = [x | s·u | 1] (kept for backward: half of x's bytes), then y = xa·[W; Bᵀ; b].
 * Backward, v = g·B: one pass over g writes ga = [g | s·v], then gx = ga·[W | Aᵀ]ᵀ; with dropout
 * the GEMM takes [g]·Wᵀ and the masked s·(v·A) is added after. gA = s·vᵀ·drop(x) and gB = s·gᵀ·u
 * read xa and ga. The factors are packed into the buffer (bf16) at each forward; the backward's gx
 * reads the A packed by the latest forward (the one it belongs to, unless A changed in between).
 */
export function loraLinear(x: Tensor, aug: AugmentedWeight, A: Tensor, B: Tensor, bias: Tensor | null, opts: LoraDeltaOptions): Tensor {
  const op = "loraLinear";
  checkFloat(op, x, A, B, ...(bias ? [bias] : []));
  checkSameDevice(op, x, aug.buffer, A, B, ...(bias ? [bias] : []));
  const k = aug.inFeatures, d = aug.outFeatures, r = A.shape[0]!;
  if (x.ndim === 0 || x.shape[x.ndim - 1] !== k) throw new Error(`${op}: input ${formatShape(x.shape)} does not end in the layer's ${k} input features`);
  if (A.ndim !== 2 || A.shape[1] !== k || B.ndim !== 2 || B.shape[0] !== d || B.shape[1] !== r) {
    throw new Error(`${op}: lora_A must be [r, ${k}] and lora_B [${d}, r]; got A ${formatShape(A.shape)} and B ${formatShape(B.shape)}`);
  }
  if (r < 1 || r + 1 > aug.pad) throw new Error(`${op}: rank ${r} does not fit the augmented weight's padding of ${aug.pad} (rank < pad needed)`);
  if (bias && (bias.ndim !== 1 || bias.shape[0] !== d)) throw new Error(`${op}: bias must be [${d}], got ${formatShape(bias.shape)}`);
  if (bias?.requiresGrad) throw new Error(`${op}: the bias must be frozen (its gradient is not computed); use loraDelta on the layer's output instead`);
  const N = shapeSize(x.shape.slice(0, -1));
  const s = opts.scaling;
  const p = opts.training === false ? 0 : opts.dropout ?? 0;
  if (p >= 1) throw new Error(`${op}: dropout ${p} drops every input; use p < 1`);
  const { seed, offset } = p > 0 ? (opts.generator ?? defaultGenerator).next(N * k) : { seed: 0n, offset: 0n };
  const maskScale = 1 / (1 - p);
  const { pad, transposed } = aug, ldw = aug.ld, ldx = k + pad, ldg = d + pad;
  const bf16 = DTYPE_CODE.bfloat16;

  const bc = bias && contiguousInput(bias);
  const out = withContiguous([x, A, B], (xc, Ac, Bc) => {
    native().loraAugPack({ W: aug.buffer.nativeView, A: Ac!.nativeView, B: Bc!.nativeView, bias: bc?.nativeView ?? null, k, d, r, ld: ldw, transposed });
    const xa = emptyLike([N, ldx], "bfloat16", x.deviceInfo), u = newFloat([N, r], x);
    native().loraDownAug({
      x: xc!.nativeView, f: Ac!.nativeView, u: u.nativeView, xa: xa.nativeView, N, K: k, r, ld: ldx, tailScale: s, ones: bias !== null,
      fTransposed: false, p, maskScale, seed, offset,
    });
    const y = newFloat([...x.shape.slice(0, -1), d], x);
    // y = xa·X[0:k+pad, 0:d]: Conv1D's buffer holds X (rows ld apart), nn.Linear's its transpose.
    native().gemm({
      transA: false, transB: !transposed, m: N, n: d, k: k + pad, alpha: 1, a: xa.nativeView, lda: ldx, strideA: 0,
      b: aug.buffer.nativeView, ldb: ldw, strideB: 0, beta: 0, c: y.nativeView, ldc: d, strideC: 0, batch: 1, dtypeA: bf16, dtypeB: bf16,
    });

    const needX = x.requiresGrad, needA = A.requiresGrad, needB = B.requiresGrad;
    record(
      op, y, [x, A, B],
      (g, [xas, us, As, Bs, buffer]) => {
        const g2 = withContiguous([g], (gc) => gc.reshape(N, d));
        const ga = emptyLike([N, ldg], "bfloat16", g.deviceInfo), v = newFloat([N, r], g);
        // ga = [g | s·v] (dropout: [g | 0], the masked term comes after the GEMM)
        native().loraDownAug({
          x: g2.nativeView, f: Bs!.nativeView, u: v.nativeView, xa: ga.nativeView, N, K: d, r, ld: ldg, tailScale: p > 0 ? 0 : s, ones: false,
          fTransposed: true, p: 0, maskScale: 1, seed: 0n, offset: 0n,
        });
        g2.dispose();
        let gx: Tensor | null = null;
        if (needX) {
          gx = newFloat([...x.shape], g);
          // gx = ga·X[0:k, 0:K]ᵀ, K = d + pad (s·v·A inside) or d (dropout)
          native().gemm({
            transA: false, transB: transposed, m: N, n: k, k: p > 0 ? d : ldg, alpha: 1, a: ga.nativeView, lda: ldg, strideA: 0,
            b: buffer!.nativeView, ldb: ldw, strideB: 0, beta: 0, c: gx.nativeView, ldc: k, strideC: 0, batch: 1, dtypeA: bf16, dtypeB: bf16,
          });
        }
        const gA = needA ? newFloat([r, k], g) : null, gB = needB ? newFloat([d, r], g) : null;
        native().loraBackwardAug({
          N, k, r, d, scaling: s, p, maskScale, seed, offset, v: v.nativeView, u: us!.nativeView, xa: xas!.nativeView, ldx,
          ga: ga.nativeView, ldg, A: As!.nativeView, gx: p > 0 ? gx?.nativeView ?? null : null, gA: gA?.nativeView ?? null, gB: gB?.nativeView ?? null,
        });
        ga.dispose();
        v.dispose();
        return [gx, gA, gB];
      },
      [xa, u, Ac!, Bc!, aug.buffer],
    );
    xa.dispose();
    u.dispose();
    return y;
  });
  if (bc && bc !== bias) bc.dispose();
  return out;
}
