// Cross-entropy over class logits fused with its log-softmax, one native pass forward and one
// backward, no probability tensor stored. Kernels: native/ops/crossentropy.h (CPU and CUDA twins).
import { native } from "../native/index.js";
import { full } from "../tensor/creation.js";
import { tidy } from "../tensor/scope.js";
import { emptyLike, formatShape, needsGrad, noGrad, record, shapeSize, type Tensor } from "../tensor/tensor.js";
import { div, mul } from "./elementwise.js";
import { gemm2d } from "./matmul.js";
import { sum } from "./reduce.js";
import { checkFloat, checkSameDevice, checkWeight, contiguousInput, newFloat, unravel, viewOrNull, withContiguous } from "./util.js";

// Codes of native/ops/crossentropy.h's Reduction (test/native/enums.test.ts checks them).
export enum Reduction { None = 0, Sum = 1, Mean = 2 }

export interface CrossEntropyOptions {
  /**
   * Targets equal to this are skipped: no loss, no gradient (0; NaN when the row's logits make its
   * softmax NaN, as in PyTorch), not counted in the mean. Default -100.
   */
  ignoreIndex?: number;
  /** "mean" (default) over the counted targets, "sum", or "none" (one loss per target). */
  reduction?: "mean" | "sum" | "none";
}

const REDUCTIONS = { none: Reduction.None, sum: Reduction.Sum, mean: Reduction.Mean } as const;

/**
 * Cross-entropy of logits [..., V] against int32 class indices [...] (PyTorch's F.cross_entropy
 * with class-index targets). Fused: the forward keeps one logsumexp per row and never the
 * probabilities; the backward writes softmax - onehot, times the upstream gradient (over the
 * count for "mean"), straight into the logits' gradient. With "mean" and every target ignored
 * the loss is NaN (0/0), as in PyTorch, and the gradient is zero.
 */
export function crossEntropy(logits: Tensor, targets: Tensor, opts: CrossEntropyOptions = {}): Tensor {
  const op = "crossEntropy";
  checkFloat(op, logits);
  if (targets.dtype !== "int32") {
    throw new Error(
      `${op}: targets must be int32 class indices, got ${targets.dtype} ${formatShape(targets.shape)}; lowrank has no int64 ` +
        `dtype (token ids fit in int32): convert with targets.to(targets.device, "int32")`,
    );
  }
  checkSameDevice(op, logits, targets);
  const lead = logits.shape.slice(0, -1);
  if (logits.ndim === 0 || targets.ndim !== lead.length || targets.shape.some((s, i) => s !== lead[i])) {
    throw new Error(
      `${op}: logits ${formatShape(logits.shape)} and targets ${formatShape(targets.shape)} do not match; ` +
        `logits must be [..., V] and targets [...] with the same leading shape (e.g. [N, V] and [N])`,
    );
  }
  const ignoreIndex = opts.ignoreIndex ?? -100;
  if (!Number.isInteger(ignoreIndex) || ignoreIndex < -(2 ** 31) || ignoreIndex >= 2 ** 31) {
    throw new Error(`${op}: ignoreIndex must be an int32, got ${ignoreIndex}`);
  }
  const reductionName = opts.reduction ?? "mean";
  const reduction = REDUCTIONS[reductionName];
  if (reduction === undefined) throw new Error(`${op}: reduction must be "mean", "sum" or "none", got "${String(reductionName)}"`);
  const V = logits.shape[logits.ndim - 1]!, N = shapeSize(lead);

  const lc = contiguousInput(logits), tc = contiguousInput(targets);
  const lse = newFloat([N], logits), loss = newFloat(lead, logits);
  const total = reduction === Reduction.None ? null : newFloat([], logits);
  const invalid = native().crossEntropy({
    logits: lc.nativeView, targets: tc.nativeView, lse: lse.nativeView, loss: loss.nativeView, total: viewOrNull(total), N, V, ignoreIndex, reduction,
  });
  const out = total ?? loss;
  const temporaries = [lse, ...(total ? [loss] : []), ...(lc !== logits ? [lc] : []), ...(tc !== targets ? [tc] : [])];
  if (invalid) {
    for (const t of [...temporaries, out]) t.dispose();
    const [row, target] = invalid;
    const where = lead.length > 1 ? `position [${unravel(row, lead).join(", ")}] of targets ${formatShape(lead)}` : `position ${row}`;
    throw new Error(`${op}: target ${target} at ${where} is out of range for ${V} classes; targets must be in [0, ${V}) or equal ignoreIndex (${ignoreIndex})`);
  }
  record(
    op, out, [logits],
    (g, [ls, ts, lses]) => {
      const dl = newFloat(ls!.shape, ls!);
      withContiguous([g], (gc) =>
        native().crossEntropyBackward({
          logits: ls!.nativeView, targets: ts!.nativeView, lse: lses!.nativeView, dout: gc.nativeView, dlogits: dl.nativeView, N, V, ignoreIndex, reduction,
        }),
      );
      return [dl];
    },
    [lc, tc, lse],
  );
  for (const t of temporaries) t.dispose();
  return out;
}

export interface LinearCrossEntropyOptions {
  /** Targets equal to this are skipped, as in crossEntropy. Default -100. */
  ignoreIndex?: number;
  /**
   * Rows of logits formed at a time (default: as many as fit 128 MiB of float32 logits). Smaller
   * chunks hold less memory; the result does not depend on it.
   */
  chunkRows?: number;
}

/** Rows per chunk: about 128 MiB of float32 logits (667 rows of GPT-2's 50,257). */
function defaultChunkRows(V: number): number {
  return Math.max(1, Math.floor(2 ** 25 / Math.max(V, 1)));
}

/**
 * crossEntropy(linear(x, weight), targets) with the mean reduction — a language model's head and
 * loss — without ever holding the [N, V] logits or their gradient: rows are taken `chunkRows` at a
 * time; each chunk's logits are formed by one GEMM, turned in one native pass into its per-row
 * losses and, in place, its gradient softmax − onehot (bf16 when the weight is bf16, the operand
 * the next GEMM reads, as autocast rounds it), and a second GEMM gives that chunk's rows of dL/dx
 * right away. The backward only scales dL/dx by g / count. x [N, C] float32; weight [V, C], frozen
 * (float32 or bfloat16: a tied embedding or an lm_head; a weight that requires grad needs its own
 * gradient and so the unfused crossEntropy(linear(...))); targets int32 [N].
 * Memory: x's gradient (N × C) and one chunk, instead of two N × V float32 tensors.
 */
export function linearCrossEntropy(x: Tensor, weight: Tensor, targets: Tensor, opts: LinearCrossEntropyOptions = {}): Tensor {
  const op = "linearCrossEntropy";
  checkFloat(op, x);
  checkSameDevice(op, x, weight, targets);
  checkWeight(op, weight);
  if (weight.requiresGrad) {
    throw new Error(`${op}: weight ${formatShape(weight.shape)} requires grad; the fused path computes no weight gradient: use crossEntropy(linear(x, weight), targets)`);
  }
  if (x.ndim !== 2 || weight.ndim !== 2 || weight.shape[1] !== x.shape[1]) {
    throw new Error(`${op}: x must be [N, C] and weight [V, C] with the same C, got x ${formatShape(x.shape)} and weight ${formatShape(weight.shape)}`);
  }
  const [N, C] = x.shape as [number, number], V = weight.shape[0]!;
  if (targets.dtype !== "int32" || targets.ndim !== 1 || targets.shape[0] !== N) {
    throw new Error(`${op}: targets must be int32 [${N}] (one class index per row of x ${formatShape(x.shape)}), got ${targets.dtype} ${formatShape(targets.shape)}`);
  }
  const ignoreIndex = opts.ignoreIndex ?? -100;
  const chunkRows = opts.chunkRows ?? defaultChunkRows(V);
  if (!Number.isInteger(chunkRows) || chunkRows < 1) throw new Error(`${op}: chunkRows must be an integer >= 1, got ${chunkRows}`);
  const lowp = weight.dtype === "bfloat16";
  const wantGrad = needsGrad(x);

  // cuBLAS runs GPT-2's head 7x slower with its odd vocabulary (50,257) than with a multiple of 8
  // (bench/RESULTS.md). So the logits' rows are ld = V rounded up to 8 apart, and the classes past
  // the last multiple of 8 (V mod 8 of them) take a second, thin GEMM: no GEMM has an odd n
  // (logits) or k (input gradient). The CPU's GEMMs do not care and run the same split.
  const V8 = V - (V % 8), ld = V8 === V ? V : V8 + 8;
  const parts = V8 === V || V8 === 0 ? [[0, V]] : [[0, V8], [V8, V]];

  return tidy(() => {
    const xc = contiguousInput(x), tc = contiguousInput(targets), wc = contiguousInput(weight);
    const rows = Math.min(chunkRows, Math.max(N, 1));
    const logits = newFloat([rows, ld], x);
    const grad16 = wantGrad && lowp ? emptyLike([rows, ld], "bfloat16", x.deviceInfo) : null;
    const losses = newFloat([N], x), counted = newFloat([N], x);
    const dx = wantGrad ? newFloat([N, C], x) : null;
    const firstBad = full([1], 2 ** 31 - 1, { dtype: "int32", device: x.device });
    for (let r0 = 0; r0 < N; r0 += rows) {
      const n = Math.min(rows, N - r0);
      const lg = logits.slice(0, 0, n), xs = xc.slice(0, r0, r0 + n);
      for (const [j0, j1] of parts) gemm2d(lg.slice(1, j0!, j1!), xs, false, wc.slice(0, j0!, j1!), true, 1, 0); // [n, V] = x·Wᵀ
      const grad = grad16 ? grad16.slice(0, 0, n) : dx ? lg : null;
      native().crossEntropyRows({
        logits: lg.nativeView, targets: tc.slice(0, r0, r0 + n).nativeView, loss: losses.slice(0, r0, r0 + n).nativeView,
        counted: counted.slice(0, r0, r0 + n).nativeView, grad: viewOrNull(grad), gradBf16: grad16 !== null, firstBad: firstBad.nativeView,
        N: n, V, ld, ignoreIndex,
      });
      if (grad && dx) {
        const dxs = dx.slice(0, r0, r0 + n);
        parts.forEach(([j0, j1], i) => gemm2d(dxs, grad.slice(1, j0!, j1!), false, wc.slice(0, j0!, j1!), false, 1, i === 0 ? 0 : 1)); // [n, C] = dlogits·W
      }
    }
    const bad = firstBad.dataSync()[0]!;
    if (bad !== 2 ** 31 - 1) {
      const target = tc.slice(0, bad, bad + 1).dataSync()[0]!;
      throw new Error(`${op}: target ${target} at position ${bad} is out of range for ${V} classes; targets must be in [0, ${V}) or equal ignoreIndex (${ignoreIndex})`);
    }
    // Mean over the counted rows (0/0 = NaN when every target is ignored, as in PyTorch).
    const count = noGrad(() => sum(counted));
    const loss = noGrad(() => div(sum(losses), count));
    if (dx) {
      record(op, loss, [x], (g, [d, c]) => [mul(d!, div(g, c!))], [dx, count]);
    }
    return loss;
  });
}
