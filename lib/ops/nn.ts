// Neural-network ops: layer norm, softmax / log-softmax, fused cross-entropy and dropout, each a
// single native pass forward and backward, with the backward rule beside the forward.
// Kernels: native/ops/nn.h (CPU and CUDA twins). Attention is in attention.ts.
import { kernels, type NativeStorage } from "../native.js";
import { defaultGenerator, type Generator } from "../tensor/random.js";
import { formatShape, normDim, record, shapeSize, type Tensor } from "../tensor/tensor.js";
import { checkFloat, checkSameDevice, contiguousInput, newFloat, unravel, withContiguous } from "./util.js";

export const enum Reduction { None = 0, Sum = 1, Mean = 2 }

/** native/binding/nn.cc (attention's kernels are declared in attention.ts). */
export interface NNKernels {
  layerNorm(
    x: NativeStorage, xOffset: number, w: NativeStorage | null, wOffset: number, b: NativeStorage | null, bOffset: number,
    y: NativeStorage, yOffset: number, mean: NativeStorage, meanOffset: number, rstd: NativeStorage, rstdOffset: number,
    N: number, C: number, eps: number,
  ): void;
  layerNormBackward(
    x: NativeStorage, xOffset: number, w: NativeStorage | null, wOffset: number, mean: NativeStorage, meanOffset: number,
    rstd: NativeStorage, rstdOffset: number, dy: NativeStorage, dyOffset: number, dx: NativeStorage, dxOffset: number,
    dw: NativeStorage | null, dwOffset: number, db: NativeStorage | null, dbOffset: number, N: number, C: number,
  ): void;
  softmax(x: NativeStorage, xOffset: number, y: NativeStorage, yOffset: number, rows: number, cols: number, log: boolean): void;
  softmaxBackward(
    y: NativeStorage, yOffset: number, dy: NativeStorage, dyOffset: number, dx: NativeStorage, dxOffset: number,
    rows: number, cols: number, log: boolean,
  ): void;
  /** Returns null, or [row, target] of the first target outside [0, V) that is not ignoreIndex. */
  crossEntropy(
    logits: NativeStorage, logitsOffset: number, targets: NativeStorage, targetsOffset: number, lse: NativeStorage, lseOffset: number,
    loss: NativeStorage, lossOffset: number, total: NativeStorage | null, totalOffset: number, N: number, V: number,
    ignoreIndex: number, reduction: Reduction,
  ): [number, number] | null;
  crossEntropyBackward(
    logits: NativeStorage, logitsOffset: number, targets: NativeStorage, targetsOffset: number, lse: NativeStorage, lseOffset: number,
    dout: NativeStorage, doutOffset: number, dlogits: NativeStorage, dlogitsOffset: number, N: number, V: number,
    ignoreIndex: number, reduction: Reduction,
  ): void;
  dropout(x: NativeStorage, xOffset: number, y: NativeStorage, yOffset: number, n: number, p: number, scale: number, seed: bigint, offset: bigint): void;
}
export const nnKernels = kernels<NNKernels>;
const native = nnKernels;

const storageOf = (t: Tensor | null): NativeStorage | null => (t ? t.storage.native : null);
const offsetOf = (t: Tensor | null): number => (t ? t.byteOffset : 0);

// ---- layer norm -----------------------------------------------------------------------------------

/**
 * Layer norm over the last dimension C of x: (x - mean) / sqrt(var + eps) * weight + bias, with
 * the biased variance (PyTorch's F.layer_norm). weight and bias are [C] or null (1 and 0).
 * The forward saves each row's mean and 1/std; the backward is one native pass.
 */
export function layerNorm(x: Tensor, weight: Tensor | null, bias: Tensor | null, eps = 1e-5): Tensor {
  const op = "layerNorm";
  checkFloat(op, x, ...[weight, bias].filter((t): t is Tensor => t !== null));
  if (x.ndim === 0) throw new Error(`${op}: x must have at least one dimension (the normalized one), got a 0-d tensor`);
  const C = x.shape[x.ndim - 1]!, N = shapeSize(x.shape.slice(0, -1));
  for (const [name, t] of [["weight", weight], ["bias", bias]] as const) {
    if (t && (t.ndim !== 1 || t.shape[0] !== C)) {
      throw new Error(`${op}: ${name} has shape ${formatShape(t.shape)} but x ${formatShape(x.shape)} normalizes its last dimension of ${C}; ${name} must be [${C}]`);
    }
  }
  const xc = contiguousInput(x), wc = weight && contiguousInput(weight), bc = bias && contiguousInput(bias);
  const out = newFloat(x.shape, x), mean = newFloat([N], x), rstd = newFloat([N], x);
  native().layerNorm(
    xc.storage.native, xc.byteOffset, storageOf(wc), offsetOf(wc), storageOf(bc), offsetOf(bc), out.storage.native, 0,
    mean.storage.native, 0, rstd.storage.native, 0, N, C, eps,
  );
  if (bc && bc !== bias) bc.dispose();
  record(
    op, out, [x, weight, bias],
    (g, [xs, ms, rs, ws]) => {
      const dx = newFloat(xs!.shape, xs!);
      const dw = weight?.requiresGrad ? newFloat([C], xs!) : null;
      const db = bias?.requiresGrad ? newFloat([C], xs!) : null;
      const w = ws ?? null;
      withContiguous([g], (gc) =>
        native().layerNormBackward(
          xs!.storage.native, xs!.byteOffset, storageOf(w), offsetOf(w), ms!.storage.native, 0, rs!.storage.native, 0,
          gc.storage.native, gc.byteOffset, dx.storage.native, 0, storageOf(dw), 0, storageOf(db), 0, N, C,
        ),
      );
      return [dx, dw, db];
    },
    [xc, mean, rstd, ...(wc ? [wc] : [])],
  );
  for (const t of [mean, rstd, ...(xc !== x ? [xc] : []), ...(wc && wc !== weight ? [wc] : [])]) t.dispose();
  return out;
}

// ---- softmax --------------------------------------------------------------------------------------

/** softmax or log-softmax over the last dimension of x. */
function softmaxLast(x: Tensor, log: boolean, op: string): Tensor {
  const cols = x.shape[x.ndim - 1]!, rows = shapeSize(x.shape.slice(0, -1));
  const out = newFloat(x.shape, x);
  withContiguous([x], (xc) => native().softmax(xc.storage.native, xc.byteOffset, out.storage.native, 0, rows, cols, log));
  record(
    op, out, [x],
    (g, [ys]) => {
      const dx = newFloat(ys!.shape, ys!);
      withContiguous([g], (gc) =>
        native().softmaxBackward(ys!.storage.native, 0, gc.storage.native, gc.byteOffset, dx.storage.native, 0, rows, cols, log),
      );
      return [dx];
    },
    [out],
  );
  return out;
}

/** Runs a last-dimension op along `dim` by swapping it last and back (views, recorded). */
function alongDim(x: Tensor, dim: number, op: string, fn: (t: Tensor) => Tensor): Tensor {
  checkFloat(op, x);
  if (x.ndim === 0) throw new Error(`${op}: x must have at least one dimension, got a 0-d tensor`);
  const d = normDim(dim, x.ndim, op);
  if (d === x.ndim - 1) return fn(x);
  const moved = x.transpose(d, -1);
  const y = fn(moved);
  moved.dispose();
  const out = y.transpose(d, -1);
  y.dispose();
  return out;
}

/** exp(x) / sum(exp(x)) along `dim` (the row max is subtracted first, so large values are safe). */
export function softmax(x: Tensor, dim = -1): Tensor {
  return alongDim(x, dim, "softmax", (t) => softmaxLast(t, false, "softmax"));
}

/** x - logsumexp(x) along `dim`, computed stably (never log of a softmax that underflowed). */
export function logSoftmax(x: Tensor, dim = -1): Tensor {
  return alongDim(x, dim, "logSoftmax", (t) => softmaxLast(t, true, "logSoftmax"));
}

// ---- cross-entropy --------------------------------------------------------------------------------

export interface CrossEntropyOptions {
  /** Targets equal to this are skipped: no loss, no gradient, not counted in the mean. Default -100. */
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
  const invalid = native().crossEntropy(
    lc.storage.native, lc.byteOffset, tc.storage.native, tc.byteOffset, lse.storage.native, 0, loss.storage.native, 0,
    storageOf(total), 0, N, V, ignoreIndex, reduction,
  );
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
        native().crossEntropyBackward(
          ls!.storage.native, ls!.byteOffset, ts!.storage.native, ts!.byteOffset, lses!.storage.native, 0, gc.storage.native,
          gc.byteOffset, dl.storage.native, 0, N, V, ignoreIndex, reduction,
        ),
      );
      return [dl];
    },
    [lc, tc, lse],
  );
  for (const t of temporaries) t.dispose();
  return out;
}

// ---- dropout --------------------------------------------------------------------------------------

export interface DropoutOptions {
  /** Identity when false (evaluation). Default true, as in PyTorch's F.dropout. */
  training?: boolean;
  /** The random stream the mask is drawn from (default: the global generator). */
  generator?: Generator;
}

/**
 * Zeroes each element with probability p and scales the kept ones by 1/(1-p).
 *
 * The mask is never stored. It comes from the Philox stream (native/core/philox.h): the call
 * reserves x.size counters from the generator, (seed, offset) = gen.next(x.size), and element i
 * of x in row-major order is kept when philox_keep(seed, offset, i, p), i.e. when the uniform from
 * lane 0 of Philox block (offset + i) under key seed is >= p. The backward recomputes the same
 * mask from the same (seed, offset), and so does any kernel that fuses dropout (the LoRA kernel
 * drops its input x [N, k] with this rule, element i = n*k + j): the same generator state gives
 * the same mask on every backend.
 */
export function dropout(x: Tensor, p: number, opts: DropoutOptions = {}): Tensor {
  const op = "dropout";
  checkFloat(op, x);
  if (!(p >= 0 && p <= 1)) throw new Error(`${op}: p must be a probability in [0, 1], got ${p}`);
  if (p === 0 || opts.training === false) {
    const out = x.detach();
    record(op, out, [x], (g) => [g.alias()]);
    return out;
  }
  const n = x.size;
  const { seed, offset } = (opts.generator ?? defaultGenerator).next(n);
  const scale = p === 1 ? 0 : 1 / (1 - p);
  const apply = (src: Tensor): Tensor => {
    const dst = newFloat(src.shape, src);
    withContiguous([src], (c) => native().dropout(c.storage.native, c.byteOffset, dst.storage.native, 0, n, p, scale, seed, offset));
    return dst;
  };
  const out = apply(x);
  record(op, out, [x], (g) => [apply(g)]);
  return out;
}
