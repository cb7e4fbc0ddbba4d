// The fused optimizer kernels (native/ops/optim.h): each call covers a whole list of tensors, so a
// step is one native call (one CUDA launch) per device, however many parameters there are.
import { kernels, type NativeStorage } from "../native.js";
import type { Tensor } from "../tensor/tensor.js";

/** native/binding/optim.cc. Storages come `per` per tensor in a fixed role order. */
export interface OptimKernels {
  /** Roles: param, grad, expAvg, expAvgSq. hyper per tensor: lr, beta1, beta2, eps, weightDecay, step. */
  adamw(storages: NativeStorage[], byteOffsets: Float64Array, sizes: Float64Array, hyper: Float64Array): void;
  /** Roles: param, grad, momentumBuffer (null when momentum is 0). hyper: lr, momentum, dampening, weightDecay, nesterov, firstStep. */
  sgd(storages: (NativeStorage | null)[], byteOffsets: Float64Array, sizes: Float64Array, hyper: Float64Array): void;
  /** Per tensor: the sum of |x|^p (p = Infinity: the max of |x|), in double. Waits for the device. */
  sumPow(storages: NativeStorage[], byteOffsets: Float64Array, sizes: Float64Array, p: number): Float64Array;
  /** x *= alpha on every tensor. */
  scaleSpans(storages: NativeStorage[], byteOffsets: Float64Array, sizes: Float64Array, alpha: number): void;
}
export const optimKernels = kernels<OptimKernels>;

/** The tensors of one fused call, packed as the binding expects (all on one device). */
export interface PackedTensors<S> {
  storages: S[];
  byteOffsets: Float64Array;
  sizes: Float64Array;
}

/**
 * Packs rows of tensors (one row per parameter, the same roles in each; null for an absent
 * optional role). Every tensor must be contiguous float32; callers check that with messages
 * that name the parameter.
 */
export function pack<T extends Tensor | null>(rows: readonly (readonly T[])[]): PackedTensors<T extends Tensor ? NativeStorage : null> {
  type S = T extends Tensor ? NativeStorage : null;
  const per = rows[0]?.length ?? 0;
  const storages: S[] = [];
  const byteOffsets = new Float64Array(rows.length * per);
  const sizes = new Float64Array(rows.length);
  rows.forEach((row, t) => {
    sizes[t] = row[0]!.size;
    row.forEach((x, r) => {
      storages.push((x ? x.storage.native : null) as S);
      byteOffsets[t * per + r] = x ? x.byteOffset : 0;
    });
  });
  return { storages, byteOffsets, sizes };
}

/** Splits items by the device of their key tensor, keeping their order within each device. */
export function byDevice<T>(items: readonly T[], key: (item: T) => Tensor): T[][] {
  const groups = new Map<string, T[]>();
  for (const item of items) {
    const device = key(item).device;
    let group = groups.get(device);
    if (!group) groups.set(device, (group = []));
    group.push(item);
  }
  return [...groups.values()];
}
