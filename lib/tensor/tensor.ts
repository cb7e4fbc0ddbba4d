// Tensor: a strided view (shape, strides, offset) over a reference-counted native storage.
// Memory is freed deterministically: dispose(), tidy() scopes, or `using`. Views share storage;
// the storage goes back to its device when the last view of it is disposed.
// The tape (GradNode, record, noGrad) lives here too: tensor methods record their views, and the
// autograd engine one layer up walks the recorded graph (it registers itself with registerBackward).
import { native, type NativeStorage, type View } from "../native/index.js";
import { parseDevice, type Device, type DeviceLike } from "./device.js";
import { bf16BitsToF32, checkDType, DTYPE_CODE, DTYPE_SIZE, type DType } from "./dtype.js";
import { onCreate, onDispose } from "./scope.js";

/** A storage shared by the views over it; freed when the last one is disposed. */
export class StorageRef {
  private refs = 1;
  constructor(
    readonly native: NativeStorage,
    readonly device: Device,
  ) {}

  static allocate(device: Device, bytes: number): StorageRef {
    const addon = native();
    return new StorageRef(new addon.Storage(device.type === "cuda" ? 1 : 0, device.index, bytes), device);
  }

  get refCount(): number {
    return this.refs;
  }
  retain(): this {
    this.refs++;
    return this;
  }
  release(): void {
    if (--this.refs === 0) this.native.dispose();
  }
}

/** Host memory of tensors that were garbage-collected without dispose() is still returned. */
const hostSafetyNet = new FinalizationRegistry<StorageRef>((ref) => {
  if (ref.device.type === "cpu") ref.release();
});

export function contiguousStrides(shape: readonly number[]): number[] {
  const strides = new Array<number>(shape.length);
  let s = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    strides[d] = s;
    s *= shape[d]!;
  }
  return strides;
}

export function shapeSize(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function formatShape(shape: readonly number[]): string {
  return `[${shape.join(", ")}]`;
}

/** Normalizes a possibly negative dimension index, with an error that names the op. */
export function normDim(dim: number, ndim: number, op: string): number {
  const d = dim < 0 ? dim + ndim : dim;
  if (!Number.isInteger(d) || d < 0 || d >= ndim) {
    throw new Error(`${op}: dimension ${dim} is out of range for a tensor with ${ndim} dimension(s)`);
  }
  return d;
}

// ---- the tape -----------------------------------------------------------------------------------
// Each differentiable op calls record() right after computing its output, with a backward rule
// written beside its forward (see lib/ops). Nodes keep the tensors their rule needs alive through
// saved aliases; the engine (lib/autograd/engine.ts) frees them once the rule has run.

/**
 * The gradient of one box of an input: `grad` belongs at `starts` (one start per dimension; the
 * box's extent is grad's shape), and the rest of the input gets none from this op. A slice's
 * backward returns one instead of a zero-filled full-size gradient: the engine writes the pieces
 * an input collects into one buffer when its gradient is needed, so the q, k and v slices of a
 * fused projection cost one copy each, with no zero fill (the pieces cover the buffer) and no sums.
 */
export class GradPiece {
  constructor(
    readonly grad: Tensor,
    readonly starts: readonly number[],
  ) {}
}

/** What a backward rule gives an input: its full gradient, one box of it, or null (none). */
export type InputGrad = Tensor | GradPiece | null;

/** One recorded op: routes the output's gradient to its inputs. */
export interface GradNode {
  readonly name: string;
  /** The op's inputs (null where no gradient flows); only their graph links are used. */
  readonly inputs: readonly (Tensor | null)[];
  /**
   * Maps the output gradient to one gradient per input (null = none), each shaped like the input
   * (or a piece of it). The engine hands `grad` over and disposes it afterwards: when
   * isSoleView(grad), the rule may write its result over it and return grad.alias().
   */
  backward(grad: Tensor): InputGrad[];
  /** Aliases kept alive for backward; released by the engine. */
  saved: Tensor[];
  /** Set once backward ran and the saved tensors were freed. */
  released?: boolean;
}

let gradDepth = 0;

/** True unless inside noGrad(). */
export function isGradEnabled(): boolean {
  return gradDepth === 0;
}

/** Runs fn without recording anything on the tape (inference, optimizer updates, merges). */
export function noGrad<T>(fn: () => T): T {
  gradDepth++;
  try {
    return fn();
  } finally {
    gradDepth--;
  }
}

/**
 * Runs fn with recording on even inside noGrad(): the recomputation of gradient checkpointing,
 * which builds a graph inside a backward rule.
 */
export function enableGrad<T>(fn: () => T): T {
  const outer = gradDepth;
  gradDepth = 0;
  try {
    return fn();
  } finally {
    gradDepth = outer;
  }
}

/** True when an op on these inputs must be recorded. */
export function needsGrad(...inputs: (Tensor | null | undefined)[]): boolean {
  return gradDepth === 0 && inputs.some((t) => t?.requiresGrad === true);
}

/**
 * Records `output = name(inputs)` when gradients are enabled and some input requires them.
 * `backward` receives the output gradient; `save` lists tensors the rule reads later: they are
 * kept alive (as aliases sharing storage) even if the caller disposes them, until backward ran.
 */
export function record(
  name: string,
  output: Tensor,
  inputs: readonly (Tensor | null)[],
  backward: (grad: Tensor, saved: Tensor[]) => InputGrad[],
  save: readonly Tensor[] = [],
): void {
  if (!needsGrad(...inputs)) return;
  const saved = save.map((t) => t.alias());
  const node: GradNode = {
    name,
    inputs: inputs.map((t) => (t?.requiresGrad ? t : null)),
    backward: (g) => backward(g, node.saved),
    saved,
  };
  output.setGradFn(node);
}

/** Runs reverse-mode differentiation from a root; see lib/autograd/engine.ts. */
export type BackwardEngine = (root: Tensor, grad?: Tensor) => void;

let engine: BackwardEngine | null = null;

/**
 * Internal (lib/autograd/engine.ts): installs the engine that Tensor.backward() runs. The engine
 * sits in the layer above and registers itself when loaded (every op module loads it).
 */
export function registerBackward(fn: BackwardEngine): void {
  engine = fn;
}

export type NestedArray = number | NestedArray[];

export class Tensor {
  readonly shape: readonly number[];
  readonly strides: readonly number[];
  /** Element offset into the storage. */
  readonly offset: number;
  readonly dtype: DType;
  private storageRef: StorageRef | null;
  private _requiresGrad = false;
  private _gradFn: GradNode | null = null;
  /** Accumulated gradient of a leaf that requires grad (owned by this tensor). */
  grad: Tensor | null = null;
  /** Optional name, used in error messages and by nn parameters. */
  name?: string;

  /** Internal: use the creation functions (tensor, zeros, ...) instead. */
  constructor(storage: StorageRef, shape: readonly number[], dtype: DType, strides?: readonly number[], offset = 0, tracked = true) {
    this.storageRef = storage;
    this.shape = Object.freeze([...shape]);
    this.strides = Object.freeze(strides ? [...strides] : contiguousStrides(shape));
    this.offset = offset;
    this.dtype = dtype;
    hostSafetyNet.register(this, storage, this);
    onCreate(this, tracked);
  }

  // ---- metadata -------------------------------------------------------------------------------

  get device(): string {
    return this.storage.device.name;
  }
  get deviceInfo(): Device {
    return this.storage.device;
  }
  get ndim(): number {
    return this.shape.length;
  }
  /** Number of elements. */
  get size(): number {
    return shapeSize(this.shape);
  }
  get isDisposed(): boolean {
    return this.storageRef === null;
  }
  /** The shared storage (throws after dispose). */
  get storage(): StorageRef {
    if (!this.storageRef) throw new Error(`tensor${this.describeName()} ${formatShape(this.shape)} was used after dispose()`);
    return this.storageRef;
  }
  /** Byte offset of the first element, for native calls. */
  get byteOffset(): number {
    return this.offset * DTYPE_SIZE[this.dtype];
  }

  /** This tensor as a native operand: its storage, the byte offset of element 0, its strides. */
  get nativeView(): View {
    return { storage: this.storage.native, offset: this.byteOffset, strides: this.strides };
  }

  isContiguous(): boolean {
    let expected = 1;
    for (let d = this.shape.length - 1; d >= 0; d--) {
      if (this.shape[d] !== 1 && this.strides[d] !== expected) return false;
      expected *= this.shape[d]!;
    }
    return true;
  }

  toString(): string {
    return `Tensor(${formatShape(this.shape)}, ${this.dtype}, ${this.isDisposed ? "disposed" : this.device}${this._requiresGrad ? ", requiresGrad" : ""})`;
  }

  private describeName(): string {
    return this.name ? ` "${this.name}"` : "";
  }

  // ---- autograd -------------------------------------------------------------------------------

  get requiresGrad(): boolean {
    return this._requiresGrad;
  }
  set requiresGrad(value: boolean) {
    if (value && this.dtype === "int32") throw new Error(`requiresGrad: tensor${this.describeName()} is int32; only floating tensors have gradients`);
    if (!value && this._gradFn) throw new Error("requiresGrad: cannot turn off gradients of a non-leaf tensor; use detach()");
    this._requiresGrad = value;
    if (!value && this.grad) {
      this.grad.dispose();
      this.grad = null;
    }
  }
  /** The op that produced this tensor, or null for leaves. */
  get gradFn(): GradNode | null {
    return this._gradFn;
  }
  get isLeaf(): boolean {
    return this._gradFn === null;
  }
  /** Internal (record): marks this tensor as the output of a recorded op. */
  setGradFn(node: GradNode): void {
    this._gradFn = node;
    this._requiresGrad = true;
  }
  /** Enables gradients on a leaf; returns this. */
  requireGrad(value = true): this {
    this.requiresGrad = value;
    return this;
  }
  /**
   * Backpropagates from this tensor: adds d(this)/d(leaf) into leaf.grad for every leaf that
   * requires grad. `grad` defaults to 1 for a one-element tensor. Frees the graph.
   */
  backward(grad?: Tensor): void {
    if (!engine) throw new Error("backward: the autograd engine is not loaded; import lowrank (or lib/autograd/engine.js) before calling backward()");
    engine(this, grad);
  }

  /** A view of the same data cut from the graph. */
  detach(): Tensor {
    return new Tensor(this.storage.retain(), this.shape, this.dtype, this.strides, this.offset);
  }
  /** Internal: a view sharing storage that no tidy() scope tracks (saved-for-backward tensors). */
  alias(): Tensor {
    return new Tensor(this.storage.retain(), this.shape, this.dtype, this.strides, this.offset, false);
  }

  /**
   * Internal: this tensor becomes the view `src` is (src's storage, strides and offset; the same
   * shape and dtype), letting go of its own storage. Every holder of this tensor then reads and
   * writes through the new storage: a frozen weight moved into a buffer that holds it with padding
   * (lib/ops/lora.ts, AugmentedWeight). The caller copies the values first.
   */
  adoptView(src: Tensor): void {
    if (src.dtype !== this.dtype || src.shape.length !== this.shape.length || src.shape.some((d, i) => d !== this.shape[i])) {
      throw new Error(`adoptView: ${this.toString()} cannot become a view ${src.toString()} (shape and dtype must match)`);
    }
    const old = this.storage;
    const self = this as unknown as { strides: readonly number[]; offset: number };
    self.strides = src.strides;
    self.offset = src.offset;
    this.storageRef = src.storage.retain();
    hostSafetyNet.unregister(this);
    hostSafetyNet.register(this, this.storageRef, this);
    old.release();
  }

  // ---- lifetime -------------------------------------------------------------------------------

  /** Frees this view (and the storage once no other view uses it). Safe to call twice. */
  dispose(): void {
    if (!this.storageRef) return;
    const device = this.storageRef.device.name;
    hostSafetyNet.unregister(this);
    this.storageRef.release();
    this.storageRef = null;
    if (this.grad) {
      this.grad.dispose();
      this.grad = null;
    }
    // gradFn stays: a recorded graph still routes gradients through disposed intermediates.
    onDispose(this, device);
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  // ---- reading back ---------------------------------------------------------------------------

  /** The elements in row-major order as a typed array (bfloat16 is widened to float32). Waits for the device. */
  dataSync(): Float32Array | Int32Array {
    const src = this.isContiguous() ? this : this.contiguous();
    try {
      return decodeHost(src.dtype, native().read({ src: src.nativeView, bytes: src.size * DTYPE_SIZE[src.dtype] }));
    } finally {
      if (src !== this) src.dispose();
    }
  }

  /**
   * Like dataSync(), as a Promise: the copy (and, on CUDA, the wait for queued work) runs on a
   * worker thread, so the event loop keeps serving while the device finishes.
   */
  async data(): Promise<Float32Array | Int32Array> {
    const src = this.isContiguous() ? this.alias() : this.contiguous();
    try {
      return decodeHost(src.dtype, await native().readAsync({ src: src.nativeView, bytes: src.size * DTYPE_SIZE[src.dtype] }));
    } finally {
      src.dispose();
    }
  }

  /** Nested JS arrays in the tensor's shape (a number for a 0-d tensor). */
  toArray(): NestedArray {
    const flat = this.dataSync();
    if (this.shape.length === 0) return flat[0]!;
    let pos = 0;
    const build = (dim: number): NestedArray[] => {
      const out: NestedArray[] = [];
      for (let i = 0; i < this.shape[dim]!; i++) out.push(dim === this.shape.length - 1 ? flat[pos++]! : build(dim + 1));
      return out;
    };
    return build(0);
  }

  /** The value of a one-element tensor. */
  item(): number {
    if (this.size !== 1) throw new Error(`item: tensor has ${this.size} elements (shape ${formatShape(this.shape)}); item() needs exactly one`);
    return this.dataSync()[0]!;
  }

  // ---- copies and conversion ------------------------------------------------------------------

  /** A contiguous copy (or this tensor's data in row-major order). Differentiable. */
  contiguous(): Tensor {
    const out = emptyLike(this.shape, this.dtype, this.deviceInfo);
    copyInto(out, this);
    record("contiguous", out, [this], (g) => [g.alias()]);
    return out;
  }

  /** Alias of contiguous() that always copies. */
  clone(): Tensor {
    return this.contiguous();
  }

  /**
   * Copies to another device and/or dtype. float32 -> bfloat16 rounds to nearest even.
   * Returns a new tensor (a copy even when nothing changes). Differentiable for float dtypes.
   */
  to(device: DeviceLike = this.deviceInfo, dtype: DType = this.dtype): Tensor {
    const dst = parseDevice(device, "to");
    checkDType(dtype, "to");
    const src = this.isContiguous() ? this : this.contiguous();
    try {
      const n = src.size;
      let moved: Tensor;
      if (dst.name === src.device) {
        moved = src;
      } else {
        moved = emptyLike(src.shape, src.dtype, dst);
        native().copyBytes({ dst: moved.nativeView, src: src.nativeView, bytes: n * DTYPE_SIZE[src.dtype] });
      }
      let out: Tensor;
      if (moved.dtype === dtype && moved !== src) {
        out = moved;
      } else {
        out = emptyLike(src.shape, dtype, dst);
        native().cast({ src: moved.nativeView, srcDtype: DTYPE_CODE[moved.dtype], dst: out.nativeView, dstDtype: DTYPE_CODE[dtype], n });
        if (moved !== src) moved.dispose();
      }
      if (dtype !== "int32" && this.dtype !== "int32") {
        const from = { device: this.deviceInfo, dtype: this.dtype };
        record(`to(${dst.name}, ${dtype})`, out, [this], (g) => [g.to(from.device, from.dtype)]);
      }
      return out;
    } finally {
      if (src !== this) src.dispose();
    }
  }

  // ---- views (share storage; differentiable) --------------------------------------------------

  /**
   * A view with new shape; one dimension may be -1. A view whenever the strides allow it (as
   * PyTorch's view), a contiguous copy otherwise.
   */
  reshape(...shape: number[] | [number[]]): Tensor {
    const dims = Array.isArray(shape[0]) ? (shape[0] as number[]) : (shape as number[]);
    const target = inferShape(dims, this.size, this.shape);
    const strides = this.isContiguous() ? contiguousStrides(target) : viewStrides(this.shape, this.strides, target);
    let out: Tensor;
    if (strides) {
      out = new Tensor(this.storage.retain(), target, this.dtype, strides, this.offset);
    } else {
      const base = this.contiguous();
      out = new Tensor(base.storage.retain(), target, base.dtype, undefined, base.offset);
      base.dispose();
    }
    const from = this.shape;
    record("reshape", out, [this], (g) => [g.reshape([...from])]);
    return out;
  }

  /** Same as reshape(). */
  view(...shape: number[] | [number[]]): Tensor {
    return this.reshape(...shape);
  }

  /** Flattens dimensions start..end (inclusive) into one. */
  flatten(start = 0, end = -1): Tensor {
    if (this.ndim === 0) return this.reshape([1]);
    const s = normDim(start, this.ndim, "flatten"), e = normDim(end, this.ndim, "flatten");
    const shape = [...this.shape.slice(0, s), shapeSize(this.shape.slice(s, e + 1)), ...this.shape.slice(e + 1)];
    return this.reshape(shape);
  }

  /** Reorders dimensions: out.shape[i] = this.shape[dims[i]]. */
  permute(...dims: number[] | [number[]]): Tensor {
    const order = (Array.isArray(dims[0]) ? (dims[0] as number[]) : (dims as number[])).map((d) => normDim(d, this.ndim, "permute"));
    if (order.length !== this.ndim || new Set(order).size !== order.length) {
      throw new Error(`permute: [${order.join(", ")}] is not a permutation of the ${this.ndim} dimensions of ${formatShape(this.shape)}`);
    }
    const out = new Tensor(
      this.storage.retain(), order.map((d) => this.shape[d]!), this.dtype, order.map((d) => this.strides[d]!), this.offset,
    );
    const inverse = new Array<number>(order.length);
    order.forEach((d, i) => (inverse[d] = i));
    record("permute", out, [this], (g) => [g.permute(inverse)]);
    return out;
  }

  /** Swaps two dimensions. */
  transpose(dim0 = -2, dim1 = -1): Tensor {
    const a = normDim(dim0, this.ndim, "transpose"), b = normDim(dim1, this.ndim, "transpose");
    const order = [...this.shape.keys()];
    order[a] = b;
    order[b] = a;
    return this.permute(order);
  }

  /** Elements start..end-1 (negative indices count from the end) along `dim`. */
  slice(dim: number, start: number, end?: number): Tensor {
    const d = normDim(dim, this.ndim, "slice");
    const len = this.shape[d]!;
    let s = start < 0 ? start + len : start;
    let e = end === undefined ? len : end < 0 ? end + len : end;
    s = Math.min(Math.max(s, 0), len);
    e = Math.min(Math.max(e, s), len);
    const shape = [...this.shape];
    shape[d] = e - s;
    const out = new Tensor(this.storage.retain(), shape, this.dtype, this.strides, this.offset + s * this.strides[d]!);
    const starts = shape.map((_, i) => (i === d ? s : 0));
    record("slice", out, [this], (g) => [new GradPiece(g.alias(), starts)]);
    return out;
  }

  /** Inserts a dimension of size 1 at `dim`. */
  unsqueeze(dim: number): Tensor {
    const d = normDim(dim, this.ndim + 1, "unsqueeze");
    const shape = [...this.shape], strides = [...this.strides];
    shape.splice(d, 0, 1);
    strides.splice(d, 0, d < this.ndim ? this.strides[d]! * this.shape[d]! : 1);
    return this.sizeOneView(shape, strides, "unsqueeze");
  }

  /** Removes dimension `dim` (of size 1), or every size-1 dimension when `dim` is omitted. */
  squeeze(dim?: number): Tensor {
    const drop = dim === undefined ? this.shape.map((s) => s === 1) : this.shape.map((s, i) => s === 1 && i === normDim(dim, this.ndim, "squeeze"));
    const shape = this.shape.filter((_, i) => !drop[i]), strides = this.strides.filter((_, i) => !drop[i]);
    return this.sizeOneView(shape, strides, "squeeze");
  }

  /** A view that only adds or removes size-1 dimensions. */
  private sizeOneView(shape: number[], strides: number[], op: string): Tensor {
    const out = new Tensor(this.storage.retain(), shape, this.dtype, strides, this.offset);
    const from = [...this.shape];
    record(op, out, [this], (g) => [g.reshape(from)]);
    return out;
  }
}

// ---- helpers shared by creation and ops ---------------------------------------------------------

/** Host bytes of a contiguous tensor as a typed array (bfloat16 widened to float32). */
function decodeHost(dtype: DType, bytes: ArrayBuffer): Float32Array | Int32Array {
  if (dtype === "int32") return new Int32Array(bytes);
  if (dtype === "float32") return new Float32Array(bytes);
  const bits = new Uint16Array(bytes);
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) out[i] = bf16BitsToF32(bits[i]!);
  return out;
}

/**
 * True when t is contiguous and the only view of its storage (no other view, alias or saved
 * tensor shares it): whoever holds t may then write into it without anyone else seeing the change.
 */
export function isSoleView(t: Tensor): boolean {
  return t.isContiguous() && t.storage.refCount === 1;
}

/** An uninitialized contiguous tensor. */
export function emptyLike(shape: readonly number[], dtype: DType, device: Device): Tensor {
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) throw new Error(`empty: invalid shape ${formatShape(shape)}: sizes must be integers >= 0`);
  }
  const storage = StorageRef.allocate(device, shapeSize(shape) * DTYPE_SIZE[dtype]);
  return new Tensor(storage, shape, dtype);
}

/** Copies src into the (possibly strided) view dst; same shape, dtype and device. */
export function copyInto(dst: Tensor, src: Tensor): void {
  if (dst.shape.length !== src.shape.length || dst.shape.some((d, i) => d !== src.shape[i])) {
    throw new Error(`copy: shapes differ: ${formatShape(dst.shape)} <- ${formatShape(src.shape)}`);
  }
  if (dst.dtype !== src.dtype) throw new Error(`copy: dtypes differ: ${dst.dtype} <- ${src.dtype}; convert with .to(device, dtype)`);
  native().copyStrided({ src: src.nativeView, dst: dst.nativeView, shape: dst.shape, elemSize: DTYPE_SIZE[src.dtype] });
}

/**
 * Strides that read a tensor (shape, strides) as `target` without moving data, or null when no
 * view can (PyTorch's computeStride): dimensions are split or merged only within chunks of the
 * old shape whose elements are laid out at one stride.
 */
function viewStrides(shape: readonly number[], strides: readonly number[], target: readonly number[]): number[] | null {
  if (shapeSize(shape) === 0 || shape.length === 0) return contiguousStrides(target);
  const out = new Array<number>(target.length);
  let viewD = target.length - 1;
  let chunkStride = strides[strides.length - 1]!;
  let tensorNumel = 1, viewNumel = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    tensorNumel *= shape[d]!;
    // A chunk ends where the next-outer dimension does not continue this one's layout.
    if (d === 0 || (shape[d - 1] !== 1 && strides[d - 1] !== tensorNumel * chunkStride)) {
      while (viewD >= 0 && (viewNumel < tensorNumel || target[viewD] === 1)) {
        out[viewD] = viewNumel * chunkStride;
        viewNumel *= target[viewD]!;
        viewD--;
      }
      if (viewNumel !== tensorNumel) return null;
      if (d > 0) {
        chunkStride = strides[d - 1]!;
        tensorNumel = 1;
        viewNumel = 1;
      }
    }
  }
  return viewD === -1 ? out : null;
}

function inferShape(dims: readonly number[], size: number, from: readonly number[]): number[] {
  const out = [...dims];
  const free = out.indexOf(-1);
  if (out.filter((d) => d === -1).length > 1) throw new Error(`reshape: only one dimension may be -1, got ${formatShape(dims)}`);
  if (free >= 0) {
    const rest = shapeSize(out.filter((_, i) => i !== free));
    if (rest === 0 || size % rest !== 0) {
      throw new Error(`reshape: cannot reshape ${formatShape(from)} (${size} elements) into ${formatShape(dims)}`);
    }
    out[free] = size / rest;
  }
  if (out.some((d) => !Number.isInteger(d) || d < 0) || shapeSize(out) !== size) {
    throw new Error(`reshape: cannot reshape ${formatShape(from)} (${size} elements) into ${formatShape(dims)}`);
  }
  return out;
}
