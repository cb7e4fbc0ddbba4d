// The fused optimizer kernels (native/ops/optim.h): each call covers a whole list of tensors, so a
// step is one native call (one CUDA launch) per device, however many parameters there are.
import type { View } from "../native/index.js";
import type { Tensor } from "../tensor/tensor.js";

/**
 * Rows of tensors (one row per parameter, the same roles in each; null for an absent optional
 * role) as the binding takes them: one column of views per role, and each row's element count.
 * Every tensor must be contiguous float32; callers check that with messages that name the parameter.
 */
export function pack(rows: readonly (readonly (Tensor | null)[])[]): { columns: (View | null)[][]; sizes: Float64Array } {
  const per = rows[0]?.length ?? 0;
  const columns = Array.from({ length: per }, () => new Array<View | null>(rows.length));
  const sizes = new Float64Array(rows.length);
  rows.forEach((row, t) => {
    sizes[t] = row[0]!.size;
    row.forEach((x, r) => (columns[r]![t] = x ? x.nativeView : null));
  });
  return { columns, sizes };
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
