// Creating tensors: from data, constants, ranges and seeded random streams.
import { native } from "../native/index.js";
import { defaultDevice, parseDevice, type DeviceLike } from "./device.js";
import { checkDType, DTYPE_CODE, f32ToBf16Bits, type DType } from "./dtype.js";
import { defaultGenerator, type Generator } from "./random.js";
import { emptyLike, formatShape, shapeSize, type NestedArray, Tensor } from "./tensor.js";

export interface CreateOptions {
  dtype?: DType;
  device?: DeviceLike;
  requiresGrad?: boolean;
}

export interface RandomOptions extends CreateOptions {
  generator?: Generator;
}

type Data = NestedArray | readonly NestedArray[] | Float32Array | Float64Array | Int32Array | Uint16Array | Uint8Array | number[];

function finish(t: Tensor, opts: CreateOptions): Tensor {
  if (opts.requiresGrad) t.requiresGrad = true;
  return t;
}

/** An uninitialized tensor (its contents are whatever memory held). */
export function empty(shape: readonly number[], opts: CreateOptions = {}): Tensor {
  const dtype = checkDType(opts.dtype ?? "float32", "empty");
  return finish(emptyLike(shape, dtype, parseDevice(opts.device ?? defaultDevice(), "empty")), opts);
}

function inferDataShape(data: NestedArray | readonly NestedArray[], op: string): number[] {
  const shape: number[] = [];
  let level: unknown = data;
  while (Array.isArray(level)) {
    shape.push(level.length);
    level = level[0];
  }
  const check = (node: unknown, dim: number): void => {
    if (dim === shape.length) {
      if (typeof node !== "number") throw new Error(`${op}: expected a number at depth ${dim}, got ${typeof node}`);
      return;
    }
    if (!Array.isArray(node) || node.length !== shape[dim]) {
      throw new Error(`${op}: ragged nested array: expected length ${shape[dim]} at depth ${dim} (shape ${formatShape(shape)})`);
    }
    for (const child of node) check(child, dim + 1);
  };
  check(data, 0);
  return shape;
}

/**
 * A tensor from nested arrays or a typed array. Typed arrays are flat: pass `shape`.
 * A Uint16Array is read as raw bfloat16 bits.
 */
export function tensor(data: Data, opts: CreateOptions & { shape?: readonly number[] } = {}): Tensor {
  const op = "tensor";
  const isTyped = ArrayBuffer.isView(data);
  const shape = opts.shape ? [...opts.shape] : isTyped ? [(data as Float32Array).length] : inferDataShape(data as NestedArray, op);
  const dtype = checkDType(opts.dtype ?? (data instanceof Int32Array ? "int32" : data instanceof Uint16Array ? "bfloat16" : "float32"), op);
  const flat: ArrayLike<number> = isTyped ? (data as Float32Array) : typeof data === "number" ? [data] : (data as unknown[]).flat(Infinity as 1) as number[];
  if (flat.length !== shapeSize(shape)) {
    throw new Error(`${op}: ${flat.length} values do not fill shape ${formatShape(shape)} (${shapeSize(shape)} elements)`);
  }
  let host: ArrayBufferView;
  if (dtype === "bfloat16") {
    host = data instanceof Uint16Array ? data : Uint16Array.from(flat, (v) => f32ToBf16Bits(v));
  } else if (dtype === "int32") {
    host = data instanceof Int32Array ? data : Int32Array.from(flat, (v) => Math.trunc(v));
  } else {
    host = data instanceof Float32Array ? data : Float32Array.from(flat);
  }
  const t = empty(shape, { dtype, device: opts.device });
  native().write({ dst: t.nativeView, data: host });
  return finish(t, opts);
}

/** A tensor filled with `value`. */
export function full(shape: readonly number[], value: number, opts: CreateOptions = {}): Tensor {
  const t = empty(shape, opts);
  native().fill({ dst: t.nativeView, dtype: DTYPE_CODE[t.dtype], n: t.size, value });
  return t;
}

export function zeros(shape: readonly number[], opts: CreateOptions = {}): Tensor {
  return full(shape, 0, opts);
}

export function ones(shape: readonly number[], opts: CreateOptions = {}): Tensor {
  return full(shape, 1, opts);
}

/** zeros/ones/full shaped, typed and placed like `t`. */
export function zerosLike(t: Tensor, opts: CreateOptions = {}): Tensor {
  return zeros(t.shape, { dtype: t.dtype, device: t.deviceInfo, ...opts });
}
export function onesLike(t: Tensor, opts: CreateOptions = {}): Tensor {
  return ones(t.shape, { dtype: t.dtype, device: t.deviceInfo, ...opts });
}
export function fullLike(t: Tensor, value: number, opts: CreateOptions = {}): Tensor {
  return full(t.shape, value, { dtype: t.dtype, device: t.deviceInfo, ...opts });
}

/** start, start+step, ... up to but excluding end. arange(n) counts 0..n-1. */
export function arange(start: number, end?: number, step = 1, opts: CreateOptions = {}): Tensor {
  if (end === undefined) [start, end] = [0, start];
  if (step === 0) throw new Error("arange: step must not be 0");
  const n = Math.max(0, Math.ceil((end - start) / step));
  const t = empty([n], { dtype: "int32", ...opts });
  native().arange({ dst: t.nativeView, dtype: DTYPE_CODE[t.dtype], n, start, step });
  return t;
}

function randomFloat(shape: readonly number[], opts: RandomOptions, op: string, draw: (t: Tensor, seed: bigint, offset: bigint) => void): Tensor {
  const dtype = opts.dtype ?? "float32";
  const gen = opts.generator ?? defaultGenerator;
  const f32 = empty(shape, { device: opts.device });
  const { seed, offset } = gen.next(f32.size);
  draw(f32, seed, offset);
  if (dtype === "float32") return finish(f32, opts);
  if (dtype !== "bfloat16") throw new Error(`${op}: random tensors are float32 or bfloat16, not ${dtype}`);
  const out = f32.to(f32.deviceInfo, "bfloat16");
  f32.dispose();
  return finish(out, opts);
}

/** Uniform in [low, high). */
export function rand(shape: readonly number[], opts: RandomOptions & { low?: number; high?: number } = {}): Tensor {
  return randomFloat(shape, opts, "rand", (t, seed, offset) =>
    native().randomUniform({ dst: t.nativeView, n: t.size, seed, offset, low: opts.low ?? 0, high: opts.high ?? 1 }),
  );
}

/** Normal with the given mean and standard deviation. */
export function randn(shape: readonly number[], opts: RandomOptions & { mean?: number; std?: number } = {}): Tensor {
  return randomFloat(shape, opts, "randn", (t, seed, offset) =>
    native().randomNormal({ dst: t.nativeView, n: t.size, seed, offset, mean: opts.mean ?? 0, std: opts.std ?? 1 }),
  );
}

/**
 * PyTorch's kaiming_uniform_ for a weight of shape [out, in, ...]: U(-b, b) with
 * b = gain * sqrt(3 / fanIn), gain = sqrt(2 / (1 + a^2)). a = sqrt(5) is nn.Linear's default
 * (and LoRA's A init), giving b = 1 / sqrt(fanIn).
 */
export function kaimingUniform(shape: readonly number[], opts: RandomOptions & { a?: number; fanIn?: number } = {}): Tensor {
  const fanIn = opts.fanIn ?? (shape.length < 2 ? shape[0]! : shapeSize(shape.slice(1)));
  if (!(fanIn > 0)) throw new Error(`kaimingUniform: fan-in must be > 0 for shape ${formatShape(shape)}`);
  const a = opts.a ?? Math.sqrt(5);
  const bound = Math.sqrt(2 / (1 + a * a)) * Math.sqrt(3 / fanIn);
  return rand(shape, { ...opts, low: -bound, high: bound });
}
