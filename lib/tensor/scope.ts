// tidy() scopes and memory accounting. Every tensor created inside tidy(fn) is disposed when fn
// returns, except the tensors it returns and those passed to keep().
import { native } from "../native/index.js";

/**
 * What a scope needs of a tensor. Declared here rather than importing Tensor, because the Tensor
 * constructor reports to this module (onCreate) and the two would import each other.
 */
export interface Scoped {
  readonly device: string;
  dispose(): void;
}

const scopes: Set<Scoped>[] = [];
const liveTensors = new Map<string, number>();

/** Internal (Tensor constructor): counts the tensor and tracks it in the innermost scope. */
export function onCreate(t: Scoped, tracked: boolean): void {
  liveTensors.set(t.device, (liveTensors.get(t.device) ?? 0) + 1);
  if (tracked) scopes[scopes.length - 1]?.add(t);
}

/** Internal (Tensor.dispose). */
export function onDispose(t: Scoped, device: string): void {
  liveTensors.set(device, (liveTensors.get(device) ?? 1) - 1);
  for (const s of scopes) s.delete(t);
}

/** Adds to `into` the members of `scope` found in value (itself, or inside arrays and plain objects). */
function collect(value: unknown, scope: ReadonlySet<Scoped>, into: Set<Scoped>, seen = new Set<unknown>()): void {
  if (value === null || typeof value !== "object" || seen.has(value)) return;
  seen.add(value);
  if (scope.has(value as Scoped)) {
    into.add(value as Scoped);
  } else if (Array.isArray(value)) {
    for (const v of value) collect(v, scope, into, seen);
  } else if (Object.getPrototypeOf(value) === Object.prototype) {
    for (const v of Object.values(value)) collect(v, scope, into, seen);
  }
}

/**
 * Runs fn and disposes every tensor created inside it, except the tensors in its return value
 * (found in arrays and plain objects) and those passed to keep(). Scopes nest: returned tensors
 * belong to the enclosing scope. fn must be synchronous.
 */
export function tidy<T>(fn: () => T): T {
  const scope = new Set<Scoped>();
  scopes.push(scope);
  let result: T;
  try {
    result = fn();
  } finally {
    scopes.pop();
  }
  if (result instanceof Promise) {
    throw new Error("tidy: fn returned a Promise; tidy scopes must be synchronous (await outside, tidy inside)");
  }
  const keepers = new Set<Scoped>();
  collect(result, scope, keepers);
  for (const t of scope) {
    if (keepers.has(t)) scopes[scopes.length - 1]?.add(t);
    else t.dispose();
  }
  return result;
}

/** Takes a tensor out of every tidy() scope, so it lives until disposed explicitly. */
export function keep<T extends Scoped>(t: T): T {
  for (const s of scopes) s.delete(t);
  return t;
}

export interface DeviceMemory {
  /** Bytes held by live native buffers. */
  bytes: number;
  /** Live native buffers (storages). */
  buffers: number;
  /** Live tensor objects (several views may share one buffer). */
  tensors: number;
  /** High-water mark of `bytes` since the process started. */
  peakBytes: number;
  /**
   * Bytes the device holds for lowrank, used or not: on CUDA the stream-ordered pool keeps freed
   * blocks for the next step (like torch.cuda.memory_reserved) and gives them back when an
   * allocation would otherwise run out of memory; on the CPU, equal to `bytes`.
   */
  reservedBytes: number;
}

/** Exact live memory per device ("cpu", "cuda:0", ...). */
export function memory(): Record<string, DeviceMemory> {
  const out: Record<string, DeviceMemory> = {};
  for (const m of native().memory()) {
    out[m.device] = {
      bytes: m.bytes,
      buffers: m.buffers,
      tensors: liveTensors.get(m.device) ?? 0,
      peakBytes: m.peakBytes,
      reservedBytes: m.reservedBytes,
    };
  }
  for (const [device, n] of liveTensors) {
    out[device] ??= { bytes: 0, buffers: 0, tensors: 0, peakBytes: 0, reservedBytes: 0 };
    out[device].tensors = n;
  }
  return out;
}
