// Matrix products: matmul (PyTorch semantics), linear (x·Wᵀ + b) and conv1dLinear (x·W + b, GPT-2's
// Conv1D), and gemm2d, the unrecorded c = α·op(a)·op(b) + β·c on 2-D tensors that the LoRA op and
// adapter merges build on. Everything goes through one batched gemm call (native/ops/matmul.h).
// Operands are read in place whenever gemm can: a transposed view becomes a trans flag plus its row
// stride, a broadcast batch becomes batch stride 0, and leading dimensions that walk memory with
// one stride become rows. Only layouts gemm cannot express are copied. Backward rules compute
// dA = dC·Bᵀ and dB = Aᵀ·dC by flipping trans flags, never by materializing a transpose; frozen
// operands get no gemm at all.
import { native } from "../native/index.js";
import { full } from "../tensor/creation.js";
import { DTYPE_CODE, DTYPE_SIZE, type DType } from "../tensor/dtype.js";
import { copyInto, emptyLike, formatShape, record, shapeSize, type Tensor } from "../tensor/tensor.js";
import { Unary } from "../native/enums.js";
import { unaryGrad, unaryGradBf16 } from "./elementwise.js";
import { sumToShape } from "./reduce.js";
import { broadcastShapes, checkFloat, checkSameDevice, checkWeight, newFloat, stridedView } from "./util.js";

/**
 * A batch of matrices as gemm reads them. rows × cols is the logical shape op(X); when `trans`, the
 * memory holds Xᵀ (cols × rows) row-major. `ld` is the row stride of the stored matrix and
 * `batchStride` the distance between consecutive matrices (0: one matrix shared by the batch).
 */
interface Mat {
  t: Tensor;
  rows: number;
  cols: number;
  trans: boolean;
  ld: number;
  batchStride: number;
}

/** Xᵀ of a Mat: the same memory read with the other trans flag. */
function tr(x: Mat): Mat {
  return { ...x, rows: x.cols, cols: x.rows, trans: !x.trans };
}

/**
 * The one stride s that walks `shape` in row-major order (offset of flat index i = s·i), ignoring
 * size-1 dimensions, or null when the dimensions cannot be read as one. 0 for a fully broadcast
 * (all-stride-0) or empty set of dimensions.
 */
function flatStride(shape: readonly number[], strides: readonly number[]): number | null {
  let s: number | null = null, inner = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    if (shape[d] === 1) continue;
    if (s === null) s = strides[d]!;
    else if (strides[d] !== s * inner) return null;
    inner *= shape[d]!;
  }
  return s ?? 0;
}

/** How gemm reads a rows × cols matrix with strides (sr, sc), or null when it cannot without a copy. */
function matLayout(rows: number, cols: number, sr: number, sc: number): { trans: boolean; ld: number } | null {
  // Row-major with row stride sr (the row stride of a single row is irrelevant).
  if ((cols === 1 || sc === 1) && (rows === 1 || sr >= cols)) return { trans: false, ld: Math.max(rows === 1 ? cols : sr, 1) };
  // The transpose of a row-major matrix: columns are contiguous.
  if ((rows === 1 || sr === 1) && (cols === 1 || sc >= rows)) return { trans: true, ld: Math.max(cols === 1 ? rows : sc, 1) };
  return null;
}

/**
 * Describes `t`, seen through the view (shape, strides) — a batch of matrices, the last two dims —
 * as a Mat over the batch `batchShape` (the view's batch dims broadcast to it). When gemm cannot
 * read that layout, `copy` is a contiguous copy (expanded to the full batch only when its batch
 * strides mix broadcast and real dimensions) and the Mat reads the copy; the caller disposes it.
 */
function operand(t: Tensor, shape: readonly number[], strides: readonly number[], batchShape: readonly number[]): { mat: Mat; copy: Tensor | null } {
  const nb = shape.length - 2, lead = batchShape.length - nb;
  const rows = shape[nb]!, cols = shape[nb + 1]!;
  const batchStrides = batchShape.map((_, i) => (i < lead || shape[i - lead] === 1 ? 0 : strides[i - lead]!));
  const batchStride = flatStride(batchShape, batchStrides);
  const layout = matLayout(rows, cols, strides[nb]!, strides[nb + 1]!);
  if (batchStride !== null && layout) return { mat: { t, rows, cols, ...layout, batchStride }, copy: null };
  // Expanding to the full batch is the only way to give a mixed broadcast pattern one stride.
  const copyShape = batchStride === null ? [...batchShape, rows, cols] : [...shape];
  const srcStrides = batchStride === null ? [...batchStrides, strides[nb]!, strides[nb + 1]!] : [...strides];
  const copy = emptyLike(copyShape, t.dtype, t.deviceInfo);
  native().copyStrided({ src: stridedView(t, srcStrides), dst: copy.nativeView, shape: copyShape, elemSize: DTYPE_SIZE[t.dtype] });
  return { mat: operand(copy, copyShape, copy.strides, batchShape).mat, copy };
}

/** `t` as one [rows, last dim] matrix: the leading dims become rows (copied if they cannot). */
function rowsOperand(t: Tensor): { mat: Mat; copy: Tensor | null } {
  const cols = t.shape[t.ndim - 1]!, rows = shapeSize(t.shape.slice(0, -1));
  const sr = flatStride(t.shape.slice(0, -1), t.strides.slice(0, -1));
  if (sr !== null) return operand(t, [rows, cols], [sr, t.strides[t.ndim - 1]!], []);
  const copy = emptyLike(t.shape, t.dtype, t.deviceInfo);
  copyInto(copy, t);
  return { mat: operand(copy, [rows, cols], [cols, 1], []).mat, copy };
}

/** The batch's matrices stacked into one tall matrix, when their rows lie at one stride; else null. */
function stackRows(x: Mat, batch: number): Mat | null {
  if (x.trans) return null;
  if (x.rows === 1) return x.batchStride >= Math.max(x.cols, 1) ? { ...x, rows: batch, ld: x.batchStride, batchStride: 0 } : null;
  return x.batchStride === x.rows * x.ld ? { ...x, rows: x.rows * batch, batchStride: 0 } : null;
}

/** Whether native gemm multiplies a and b of these dtypes: one dtype, or float32 a rounded to bf16 for a bf16 b. */
function gemmDtypes(a: DType, b: DType): boolean {
  return (a === b && (a === "float32" || a === "bfloat16")) || (a === "float32" && b === "bfloat16");
}

/**
 * c[b] = L[b]·R[b] + beta·c[b] for b < batch, c contiguous [batch, L.rows, R.cols]. A batch that
 * shares one right operand is a single product of the stacked left rows (one big gemm, not many).
 * A float32 L times a bfloat16 R is multiplied as autocast does, L rounded to bf16 (inside gemm).
 */
function gemmInto(c: Tensor, l: Mat, r: Mat, batch: number, beta = 0): void {
  const stacked = batch > 1 && r.batchStride === 0 ? stackRows(l, batch) : null;
  const left = stacked ?? l, nb = stacked ? 1 : batch;
  if (!gemmDtypes(l.t.dtype, r.t.dtype)) throw new Error(`gemm: operands of one dtype or float32 × bfloat16 expected, got ${l.t.dtype} and ${r.t.dtype}`);
  native().gemm({
    transA: left.trans, transB: r.trans, m: left.rows, n: r.cols, k: l.cols, alpha: 1,
    a: left.t.nativeView, lda: left.ld, strideA: left.batchStride,
    b: r.t.nativeView, ldb: r.ld, strideB: r.batchStride,
    beta, c: c.nativeView, ldc: r.cols, strideC: l.rows * r.cols, batch: nb, dtypeA: DTYPE_CODE[l.t.dtype], dtypeB: DTYPE_CODE[r.t.dtype],
  });
}

/**
 * c = Σ_b L[b]·R[b] as one gemm whose inner dimension runs over every batch ([L0 L1 ..]·[R0; R1; ..]),
 * when L's columns and R's rows stack at one stride. Returns false (nothing written) otherwise.
 */
function gemmSummed(c: Tensor, l: Mat, r: Mat, batch: number): boolean {
  const lCols = stackRows(tr(l), batch), rRows = stackRows(r, batch);
  if (!lCols || !rRows) return false;
  gemmInto(c, tr(lCols), rRows, 1);
  return true;
}

/**
 * The gradient of one matmul operand: prod[b] = L[b]·R[b] over the output batch, summed over the
 * batch dims the operand was broadcast along. `own` is the operand's shape with matrix dims, `final`
 * its real shape (without the unit dims matmul added to 1-D arguments).
 */
function operandGrad(l: Mat, r: Mat, batchShape: readonly number[], own: readonly number[], final: readonly number[], like: Tensor): Tensor {
  const batch = shapeSize(batchShape), ownBatch = shapeSize(own.slice(0, -2));
  if (ownBatch === batch) {
    const out = newFloat(final, like);
    gemmInto(out, l, r, batch);
    return out;
  }
  if (ownBatch === 1) {
    const out = newFloat(final, like);
    if (gemmSummed(out, l, r, batch)) return out;
    out.dispose();
  }
  const all = newFloat([...batchShape, l.rows, r.cols], like);
  gemmInto(all, l, r, batch);
  const summed = sumToShape(all, own);
  all.dispose();
  const out = summed.reshape([...final]);
  summed.dispose();
  return out;
}

/**
 * Matrix product with PyTorch's semantics:
 *   [k] @ [k] -> []            [k] @ [.., k, n] -> [.., n]        [.., m, k] @ [k] -> [.., m]
 *   [.., m, k] @ [.., k, n] -> [broadcast(..), m, n]   (batch dims broadcast like element-wise ops)
 */
export function matmul(a: Tensor, b: Tensor): Tensor {
  const op = "matmul";
  checkFloat(op, a, b);
  if (a.ndim === 0 || b.ndim === 0) {
    throw new Error(`matmul: both arguments need at least one dimension, got ${formatShape(a.shape)} @ ${formatShape(b.shape)}; use mul() for scalars`);
  }
  // 1-D arguments become a row [1, k] (left) or a column [k, 1] (right); the unit dim is dropped after.
  const aShape = a.ndim === 1 ? [1, a.shape[0]!] : [...a.shape], aStrides = a.ndim === 1 ? [0, a.strides[0]!] : [...a.strides];
  const bShape = b.ndim === 1 ? [b.shape[0]!, 1] : [...b.shape], bStrides = b.ndim === 1 ? [b.strides[0]!, 0] : [...b.strides];
  const [m, k] = aShape.slice(-2) as [number, number], [kb, n] = bShape.slice(-2) as [number, number];
  if (k !== kb) {
    throw new Error(
      `matmul: ${formatShape(a.shape)} @ ${formatShape(b.shape)}: the inner dimensions differ (${k} vs ${kb}); ` +
        `the last dim of the left operand must equal the ${b.ndim === 1 ? "length" : "second-to-last dim"} of the right one (transpose one of them?)`,
    );
  }
  const batchShape = broadcastShapes(op, aShape.slice(0, -2), bShape.slice(0, -2));
  const batch = shapeSize(batchShape);
  const outShape = [...batchShape, ...(a.ndim > 1 ? [m] : []), ...(b.ndim > 1 ? [n] : [])];
  const A = operand(a, aShape, aStrides, batchShape), B = operand(b, bShape, bStrides, batchShape);
  const out = newFloat(outShape, a);
  gemmInto(out, A.mat, B.mat, batch);

  // dA needs B and dB needs A: keep only what the gradients that will be asked for read.
  const needA = a.requiresGrad, needB = b.requiresGrad;
  const fullOut = [...batchShape, m, n];
  record(
    op, out, [a, b],
    (g, saved) => {
      const bSaved = needA ? saved[0]! : null, aSaved = needB ? saved[saved.length - 1]! : null;
      const gStrides = g.ndim === fullOut.length ? [...g.strides] : fullOut.map((_, i) => (i < batchShape.length ? g.strides[i]! : 0));
      if (a.ndim > 1 && b.ndim === 1) gStrides[fullOut.length - 2] = g.strides[g.ndim - 1]!;
      else if (a.ndim === 1 && b.ndim > 1) gStrides[fullOut.length - 1] = g.strides[g.ndim - 1]!;
      const G = operand(g, fullOut, gStrides, batchShape);
      const ga = bSaved ? operandGrad(G.mat, tr({ ...B.mat, t: bSaved }), batchShape, aShape, a.shape, g) : null;
      const gb = aSaved ? operandGrad(tr({ ...A.mat, t: aSaved }), G.mat, batchShape, bShape, b.shape, g) : null;
      G.copy?.dispose();
      return [ga, gb];
    },
    [...(needA ? [B.mat.t] : []), ...(needB ? [A.mat.t] : [])],
  );
  A.copy?.dispose();
  B.copy?.dispose();
  return out;
}

export interface AffineOptions {
  /**
   * "gelu": gelu(x·W + b) in the same call (GPT-2's tanh form, as ops' gelu), the activation in the
   * GEMM's epilogue on CUDA (cuBLASLt); the sum before it is kept for the backward, as gelu keeps its input.
   */
  activation?: "gelu" | null;
}

/** linear(x [.., in], weight [out, in], bias? [out]) = x·Wᵀ + b (torch.nn.functional.linear). */
export function linear(x: Tensor, weight: Tensor, bias: Tensor | null = null, opts: AffineOptions = {}): Tensor {
  return affine("linear", x, weight, true, bias, opts.activation ?? null);
}

/** conv1dLinear(x [.., in], weight [in, out], bias? [out]) = x·W + b (GPT-2's Conv1D stores W as in × out). */
export function conv1dLinear(x: Tensor, weight: Tensor, bias: Tensor | null = null, opts: AffineOptions = {}): Tensor {
  return affine("conv1dLinear", x, weight, false, bias, opts.activation ?? null);
}

/**
 * y = act(x·op(W) + b) with every leading dim of x folded into the rows of one gemm; the bias and the
 * activation are the gemm's epilogue (native gemmEpilogue: cuBLASLt's on CUDA, one pass after the
 * gemm on the CPU). `outIn`: W is stored [out, in] (nn.Linear), else [in, out] (Conv1D).
 * A bfloat16 W (a frozen weight, as `dtype: "bfloat16"` models keep them) is multiplied as autocast
 * does: x, and dY in the backward, are rounded to bf16 for the GEMM (by gemm as it reads them, with
 * no bf16 copy on the CPU); y, dX and the sums are float32.
 */
function affine(op: string, x: Tensor, weight: Tensor, outIn: boolean, bias: Tensor | null, activation: "gelu" | null): Tensor {
  checkFloat(op, x, ...(bias ? [bias] : []));
  checkSameDevice(op, x, weight);
  checkWeight(op, weight);
  if (activation !== null && activation !== "gelu") throw new Error(`${op}: activation must be "gelu" or null, got ${JSON.stringify(activation)}`);
  const lowp = weight.dtype === "bfloat16";
  const layout = outIn ? "[out, in]" : "[in, out]";
  if (weight.ndim !== 2) throw new Error(`${op}: weight must be 2-D ${layout}, got ${formatShape(weight.shape)}`);
  const [inF, outF] = outIn ? [weight.shape[1]!, weight.shape[0]!] : [weight.shape[0]!, weight.shape[1]!];
  if (x.ndim === 0 || x.shape[x.ndim - 1] !== inF) {
    throw new Error(
      `${op}: input ${formatShape(x.shape)} does not end in ${inF} features, which weight ${formatShape(weight.shape)} (${layout}) expects` +
        (x.shape[x.ndim - 1] === outF && inF !== outF ? `; the weight looks transposed: ${outIn ? "conv1dLinear" : "linear"} takes it as ${outIn ? "[in, out]" : "[out, in]"}` : ""),
    );
  }
  if (bias && (bias.ndim !== 1 || bias.shape[0] !== outF)) {
    throw new Error(`${op}: bias must have shape [${outF}] to match weight ${formatShape(weight.shape)} (${layout}), got ${formatShape(bias.shape)}`);
  }
  const rows = shapeSize(x.shape.slice(0, -1));
  const X = rowsOperand(x);
  // op(W) is [in, out]: nn.Linear's [out, in] weight is read transposed, in place.
  const W = operand(weight, [inF, outF], outIn ? [weight.strides[1]!, weight.strides[0]!] : [...weight.strides], []);
  const outShape = [...x.shape.slice(0, -1), outF];
  const out = newFloat(outShape, x);
  const pre = activation ? newFloat(outShape, x) : null; // the sum before the activation, for its backward
  if (bias || pre) {
    const b = bias && (bias.isContiguous() ? bias : bias.contiguous());
    native().gemmEpilogue({
      transA: X.mat.trans, transB: W.mat.trans, m: rows, n: outF, k: inF, a: X.mat.t.nativeView, lda: X.mat.ld, b: W.mat.t.nativeView, ldb: W.mat.ld,
      c: out.nativeView, ldc: outF, bias: b?.nativeView ?? null, pre: pre?.nativeView ?? null, dtypeA: DTYPE_CODE[X.mat.t.dtype], dtypeB: DTYPE_CODE[weight.dtype],
    });
    if (b && b !== bias) b.dispose();
  } else {
    gemmInto(out, X.mat, W.mat, 1);
  }

  const needX = x.requiresGrad, needW = weight.requiresGrad, needB = bias?.requiresGrad === true;
  const nSaved = (needX ? 1 : 0) + (needW ? 1 : 0);
  record(
    op, out, [x, weight, bias],
    (gy, saved) => {
      const wSaved = needX ? saved[0]! : null, xSaved = needW ? saved[nSaved - 1]! : null;
      // Through the activation first. When only a bf16 weight's dX reads that gradient, it is written
      // in bf16 directly (the GEMM's operand, half the bytes), not in float32.
      const bf16Only = pre !== null && lowp && !xSaved && !needB;
      const g = pre && !bf16Only ? unaryGrad(Unary.Gelu, saved[nSaved]!, gy, 0) : gy;
      const G = bf16Only ? null : rowsOperand(g);
      let gx: Tensor | null = null, gw: Tensor | null = null, gb: Tensor | null = null;
      if (wSaved) {
        gx = newFloat(x.shape, g); // dX = dY·op(W)ᵀ
        const g16 = bf16Only ? unaryGradBf16(Unary.Gelu, saved[nSaved]!, gy, 0) : null, G16 = g16 && rowsOperand(g16);
        gemmInto(gx, G16 ? G16.mat : G!.mat, tr({ ...W.mat, t: wSaved }), 1);
        g16?.dispose();
        G16?.copy?.dispose();
      }
      if (xSaved) {
        gw = newFloat(weight.shape, g); // d op(W) = Xᵀ·dY; nn.Linear stores its transpose, dYᵀ·X
        const Xs = { ...X.mat, t: xSaved };
        if (outIn) gemmInto(gw, tr(G!.mat), Xs, 1);
        else gemmInto(gw, tr(Xs), G!.mat, 1);
      }
      if (needB) {
        // Column sums of dY as 1ᵀ·dY: a gemv over dY in place, instead of a transposed copy to sum rows.
        const ones = full([rows], 1, { device: g.device });
        gb = newFloat([outF], g);
        gemmInto(gb, { t: ones, rows: 1, cols: rows, trans: false, ld: Math.max(rows, 1), batchStride: 0 }, G!.mat, 1);
        ones.dispose();
      }
      G?.copy?.dispose();
      if (g !== gy) g.dispose();
      return [gx, gw, gb];
    },
    [...(needX ? [W.mat.t] : []), ...(needW ? [X.mat.t] : []), ...(pre ? [pre] : [])],
  );
  X.copy?.dispose();
  W.copy?.dispose();
  pre?.dispose();
  return out;
}

/**
 * c = alpha·op(a)·op(b) + beta·c for 2-D tensors whose rows are contiguous (a, b as stored; op =
 * transpose when flagged). Rows may be further apart than their length (a column slice of a wider
 * matrix): BLAS's leading dimension. c is float32; a and b are both float32, both bfloat16
 * (float32 sums, as gemm_bf16), or float32 a and bfloat16 b (a rounded to bf16 as gemm reads it).
 */
export function gemm2d(c: Tensor, a: Tensor, transA: boolean, b: Tensor, transB: boolean, alpha: number, beta: number): void {
  checkFloat("gemm2d", c);
  checkSameDevice("gemm2d", c, a, b);
  if (!gemmDtypes(a.dtype, b.dtype)) {
    throw new Error(`gemm2d: a and b must both be float32, both bfloat16, or float32 and bfloat16, got ${a.dtype} ${formatShape(a.shape)} and ${b.dtype} ${formatShape(b.shape)}`);
  }
  /** The row stride of a 2-D operand with contiguous rows (its leading dimension). */
  const ld = (t: Tensor): number => {
    const [rows, cols] = t.shape as [number, number];
    if (t.ndim !== 2 || (cols > 1 && t.strides[1] !== 1) || (rows > 1 && t.strides[0]! < cols)) {
      throw new Error(`gemm2d: operands must be 2-D with contiguous rows, got ${formatShape(t.shape)} with strides ${formatShape(t.strides)}`);
    }
    return rows > 1 ? t.strides[0]! : cols;
  };
  const [ar, ac] = a.shape as [number, number], [br, bc] = b.shape as [number, number];
  const m = transA ? ac : ar, k = transA ? ar : ac, n = transB ? br : bc;
  native().gemm({
    transA, transB, m, n, k, alpha, a: a.nativeView, lda: ld(a), strideA: 0, b: b.nativeView, ldb: ld(b), strideB: 0,
    beta, c: c.nativeView, ldc: ld(c), strideC: 0, batch: 1, dtypeA: DTYPE_CODE[a.dtype], dtypeB: DTYPE_CODE[b.dtype],
  });
}
