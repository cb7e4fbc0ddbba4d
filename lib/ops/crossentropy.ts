// Cross-entropy over class logits fused with its log-softmax, one native pass forward and one
// backward, no probability tensor stored. Kernels: native/ops/crossentropy.h (CPU and CUDA twins).
import { native } from "../native/index.js";
import { formatShape, record, shapeSize, type Tensor } from "../tensor/tensor.js";
import { checkFloat, checkSameDevice, contiguousInput, newFloat, unravel, viewOrNull, withContiguous } from "./util.js";

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
