// Safetensors: Hugging Face's tensor file format, read and written byte-compatibly with the
// reference implementation (the Rust `safetensors` crate behind Python's `safetensors` package).
//
// Layout: an 8-byte little-endian u64 N, N bytes of UTF-8 JSON header
//   {"__metadata__": {str: str}, "<name>": {"dtype": "F32", "shape": [2, 3], "data_offsets": [b, e]}}
// then the data section; offsets are relative to its start. Files come from anywhere, so the
// reader trusts nothing: every length is checked against the real file size before anything is
// allocated, and, as in the reference reader, the tensors must tile the data section exactly (no
// overlaps, no holes, nothing after the last tensor).
import { closeSync, existsSync, fstatSync, openSync, readFileSync, readSync } from "node:fs";
import { open, type FileHandle } from "node:fs/promises";
import { endianness } from "node:os";
import { basename, join } from "node:path";
import { native } from "../native/index.js";
import { empty } from "../tensor/creation.js";
import { DTYPE_SIZE, f32ToBf16Bits, type DType } from "../tensor/dtype.js";
import type { DeviceLike } from "../tensor/device.js";
import { formatShape, Tensor } from "../tensor/tensor.js";
import { writeFileAtomic, writeFileAtomicAsync } from "./atomic.js";
import { decodeF16, encodeF16 } from "./float16.js";
import { describeJson, LONE_SURROGATE, parseStrictJson, quote, type Json } from "./json.js";

/**
 * Bits per element of every safetensors dtype, listed in the reference implementation's order
 * (its Rust `Dtype` enum). The writer sorts tensors by this order, descending, then by name, as
 * the reference writer does, so the larger-aligned tensors come first in the data section.
 */
const DTYPE_BITS = {
  BOOL: 8, F4: 4, F6_E2M3: 6, F6_E3M2: 6, U8: 8, I8: 8, F8_E5M2: 8, F8_E4M3: 8, F8_E8M0: 8,
  F8_E4M3FNUZ: 8, F8_E5M2FNUZ: 8, I16: 16, U16: 16, F16: 16, BF16: 16, I32: 32, U32: 32, F32: 32,
  C64: 64, F64: 64, I64: 64, U64: 64,
} as const;

/** A dtype name as it appears in safetensors headers ("F32", "BF16", "I64", ...). */
export type SafetensorsDType = keyof typeof DTYPE_BITS;

const DTYPE_RANK = new Map(Object.keys(DTYPE_BITS).map((d, i) => [d, i]));

/** The reference implementation's limit on the JSON header. */
export const MAX_HEADER_BYTES = 100_000_000;

/** The index file of a sharded checkpoint (Hugging Face's name). */
export const SAFETENSORS_INDEX_FILE = "model.safetensors.index.json";

/** Tensor data in safetensors form: raw little-endian bytes, C (row-major) order. */
export interface SafetensorsTensor {
  readonly dtype: SafetensorsDType;
  readonly shape: readonly number[];
  readonly bytes: Uint8Array;
}

export interface SafetensorsEntry extends SafetensorsTensor {
  readonly name: string;
}

/** The tensors (in file order) and metadata of one safetensors file or sharded checkpoint. */
export class SafetensorsFile {
  private readonly byName: Map<string, SafetensorsEntry>;

  constructor(
    /** The file (or index file) they were read from, for error messages. */
    readonly source: string,
    readonly entries: readonly SafetensorsEntry[],
    readonly metadata: Readonly<Record<string, string>>,
  ) {
    this.byName = new Map(entries.map((e) => [e.name, e]));
  }

  get names(): string[] {
    return this.entries.map((e) => e.name);
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  /** The entry called `name`; throws naming the file and a few of its tensors when absent. */
  get(name: string): SafetensorsEntry {
    const entry = this.byName.get(name);
    if (entry) return entry;
    const some = this.names.slice(0, 5).map(quote).join(", ");
    throw new Error(
      `safetensors: "${this.source}" has no tensor ${quote(name)} (it has ${this.entries.length}` +
        `${this.entries.length ? `: ${some}${this.entries.length > 5 ? ", ..." : ""}` : ""})`,
    );
  }
}

// ---- errors -------------------------------------------------------------------------------------

function corrupt(source: string, what: string): Error {
  return new Error(`safetensors: "${source}" is not a valid safetensors file: ${what}`);
}

// ---- header validation ---------------------------------------------------------------------------

interface TensorInfo {
  name: string;
  dtype: SafetensorsDType;
  shape: number[];
  begin: number;
  end: number;
}

interface Header {
  tensors: TensorInfo[]; // in data order
  metadata: Record<string, string>;
}

/** Reads the 8-byte header length and checks it against the limit and the file size. */
function headerLength(prefix: Uint8Array, fileSize: number, source: string): number {
  if (fileSize < 8) throw corrupt(source, `the file has ${fileSize} bytes, fewer than the 8-byte header length`);
  const n = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER_BYTES)) {
    throw corrupt(source, `the header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit (a corrupt length, or not a safetensors file)`);
  }
  if (8n + n > BigInt(fileSize)) {
    throw corrupt(source, `the header length ${n} runs past the end of the ${fileSize}-byte file (truncated file?)`);
  }
  return Number(n);
}

/** A non-negative integer no larger than 2^53 - 1, or undefined. */
function safeCount(v: Json): number | undefined {
  return typeof v === "bigint" && v >= 0n && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : undefined;
}

function tensorInfo(name: string, value: Json, source: string): TensorInfo {
  const bad = (what: string) => corrupt(source, `tensor ${quote(name)}: ${what}`);
  if (!(value instanceof Map)) throw bad(`expected an object with dtype, shape and data_offsets`);
  const dtype = value.get("dtype");
  if (typeof dtype !== "string" || !DTYPE_RANK.has(dtype)) {
    throw bad(`unknown dtype ${describeJson(dtype)}; safetensors dtypes are ${[...DTYPE_RANK.keys()].join(", ")}`);
  }
  const shapeJson = value.get("shape");
  const shape = Array.isArray(shapeJson) ? shapeJson.map(safeCount) : undefined;
  if (!shape || shape.some((d) => d === undefined)) {
    throw bad(`shape must be an array of integers in [0, 2^53), got ${describeJson(shapeJson)}`);
  }
  const offsetsJson = value.get("data_offsets");
  const offsets = Array.isArray(offsetsJson) && offsetsJson.length === 2 ? offsetsJson.map(safeCount) : undefined;
  if (!offsets || offsets.some((o) => o === undefined)) {
    throw bad(`data_offsets must be [begin, end], integers in [0, 2^53), got ${describeJson(offsetsJson)}`);
  }
  const [begin, end] = offsets as [number, number];
  if (end < begin) throw bad(`data_offsets [${begin}, ${end}] end before they begin`);
  // Exact size arithmetic in bigint: shapes can be crafted to overflow any fixed-width product.
  const bits = (shape as number[]).reduce((n, d) => n * BigInt(d), 1n) * BigInt(DTYPE_BITS[dtype as SafetensorsDType]);
  if (bits % 8n !== 0n) throw bad(`shape ${formatShape(shape as number[])} of ${dtype} is not a whole number of bytes`);
  if (bits / 8n !== BigInt(end - begin)) {
    throw bad(`shape ${formatShape(shape as number[])} of ${dtype} needs ${bits / 8n} bytes, but data_offsets [${begin}, ${end}] hold ${end - begin}`);
  }
  return { name, dtype: dtype as SafetensorsDType, shape: shape as number[], begin, end };
}

function metadataOf(value: Json, source: string): Record<string, string> {
  if (value === null) return {};
  if (!(value instanceof Map)) throw corrupt(source, `__metadata__ must be an object of strings, got ${describeJson(value)}`);
  for (const [k, v] of value) {
    if (typeof v !== "string") throw corrupt(source, `__metadata__ entry ${quote(k)} must be a string, got ${describeJson(v)}`);
  }
  return Object.fromEntries(value as Map<string, string>);
}

const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** Parses and validates a header against the size of the data section that follows it. */
function parseHeader(headerBytes: Uint8Array, dataLength: number, source: string): Header {
  let text: string;
  try {
    text = utf8.decode(headerBytes);
  } catch {
    throw corrupt(source, "the header is not valid UTF-8");
  }
  let json: Json;
  try {
    json = parseStrictJson(text);
  } catch (err) {
    throw corrupt(source, `the header is not valid JSON: ${(err as Error).message}`);
  }
  if (!(json instanceof Map)) throw corrupt(source, `the header must be a JSON object, got ${Array.isArray(json) ? "an array" : describeJson(json)}`);

  let metadata: Record<string, string> = {};
  const tensors: TensorInfo[] = [];
  for (const [name, value] of json) {
    if (name === "__metadata__") metadata = metadataOf(value, source);
    else tensors.push(tensorInfo(name, value, source));
  }
  // The reference reader orders tensors by their offsets and requires each to start where the
  // previous one ended, so that together they cover the data section exactly.
  tensors.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = 0;
  let previous: TensorInfo | undefined;
  for (const t of tensors) {
    const range = `data_offsets [${t.begin}, ${t.end}]`;
    if (t.end > dataLength) {
      throw corrupt(source, `tensor ${quote(t.name)}: ${range} run past the end of the ${dataLength}-byte data section (truncated file?)`);
    }
    if (t.begin < cursor) {
      throw corrupt(source, `tensor ${quote(t.name)}: ${range} overlap tensor ${quote(previous!.name)}, which ends at ${cursor}`);
    }
    if (t.begin > cursor) {
      throw corrupt(source, `tensor ${quote(t.name)}: ${range} leave bytes ${cursor}..${t.begin} of the data section unused (tensors must be contiguous)`);
    }
    cursor = t.end;
    previous = t;
  }
  if (cursor !== dataLength) {
    throw corrupt(source, `the tensors cover ${cursor} bytes, but the data section has ${dataLength} (extra or missing data)`);
  }
  return { tensors, metadata };
}

// ---- reading ---------------------------------------------------------------------------------------

/**
 * Parses a whole safetensors file held in memory. Entry bytes are views into `buffer` (no copy).
 * `sourceName` names the data in error messages.
 */
export function parseSafetensors(buffer: Uint8Array, sourceName = "<buffer>"): SafetensorsFile {
  const n = headerLength(buffer.subarray(0, 8), buffer.byteLength, sourceName);
  const dataStart = 8 + n;
  const header = parseHeader(buffer.subarray(8, dataStart), buffer.byteLength - dataStart, sourceName);
  const entries = header.tensors.map(({ name, dtype, shape, begin, end }) => ({
    name, dtype, shape, bytes: buffer.subarray(dataStart + begin, dataStart + end),
  }));
  return new SafetensorsFile(sourceName, entries, header.metadata);
}

/** One read the parser asks for: `length` bytes at `position` of the file. */
interface ReadRequest {
  length: number;
  position: number;
}

/**
 * The reading of one safetensors file as a sequence of reads, whatever does the I/O: it yields each
 * read it needs (the length prefix, the header, then each tensor) and is given the bytes back. The
 * header is validated against the real file size before any tensor is read, and each tensor gets a
 * buffer of its own, so files larger than one JavaScript buffer can hold (2 GiB and up) load as
 * long as each tensor fits. readSafetensors drives it with blocking reads, readSafetensorsAsync
 * with fs/promises reads that run on libuv's thread pool.
 */
function* safetensorsReads(path: string, size: number): Generator<ReadRequest, SafetensorsFile, Uint8Array> {
  const n = headerLength(yield { length: Math.min(8, size), position: 0 }, size, path);
  const dataStart = 8 + n;
  const header = parseHeader(yield { length: n, position: 8 }, size - dataStart, path);
  const entries: SafetensorsEntry[] = [];
  for (const { name, dtype, shape, begin, end } of header.tensors) {
    entries.push({ name, dtype, shape, bytes: yield { length: end - begin, position: dataStart + begin } });
  }
  return new SafetensorsFile(path, entries, header.metadata);
}

function endedEarly(path: string, { length, position }: ReadRequest): Error {
  return new Error(`safetensors: "${path}" ended early: expected ${length} bytes at offset ${position} (was it changed while being read?)`);
}

function cannotOpen(path: string, err: unknown): Error {
  return new Error(`safetensors: cannot open "${path}": ${(err as Error).message}`);
}

/** Reads a safetensors file (see safetensorsReads), blocking the thread during the reads. */
export function readSafetensors(path: string): SafetensorsFile {
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch (err) {
    throw cannotOpen(path, err);
  }
  try {
    const reads = safetensorsReads(path, fstatSync(fd).size);
    let step = reads.next();
    while (!step.done) {
      const { length, position } = step.value;
      const out = new Uint8Array(length);
      for (let done = 0; done < length; ) {
        const got = readSync(fd, out, done, length - done, position + done);
        if (got === 0) throw endedEarly(path, step.value);
        done += got;
      }
      step = reads.next(out);
    }
    return step.value;
  } finally {
    closeSync(fd);
  }
}

/**
 * The Promise form of readSafetensors: the reads run on libuv's thread pool, so the event loop
 * keeps running while a large checkpoint comes off the disk.
 */
export async function readSafetensorsAsync(path: string): Promise<SafetensorsFile> {
  let handle: FileHandle;
  try {
    handle = await open(path, "r");
  } catch (err) {
    throw cannotOpen(path, err);
  }
  try {
    const reads = safetensorsReads(path, (await handle.stat()).size);
    let step = reads.next();
    while (!step.done) {
      const { length, position } = step.value;
      const out = new Uint8Array(length);
      for (let done = 0; done < length; ) {
        const { bytesRead } = await handle.read(out, done, length - done, position + done);
        if (bytesRead === 0) throw endedEarly(path, step.value);
        done += bytesRead;
      }
      step = reads.next(out);
    }
    return step.value;
  } finally {
    await handle.close();
  }
}

/**
 * Reads a sharded checkpoint: `index` (model.safetensors.index.json in `dir`) maps each tensor
 * name to the shard file holding it ({"weight_map": {name: file}}). Every listed tensor must be in
 * its shard, and every tensor of a shard must be listed. Entries come in weight_map order; the
 * metadata is the shards' __metadata__ merged. The reading is a generator that yields each shard's path and is given the file back, so the
 * blocking and the Promise forms share it.
 */
function* shardedReads(dir: string, index: string): Generator<string, SafetensorsFile, SafetensorsFile> {
  const indexPath = join(dir, index);
  const bad = (what: string) => new Error(`safetensors: sharded checkpoint index "${indexPath}": ${what}`);
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(indexPath, "utf8"));
  } catch (err) {
    throw bad(err instanceof SyntaxError ? `not valid JSON: ${err.message}` : (err as Error).message);
  }
  const weightMap = (json as { weight_map?: unknown } | null)?.weight_map;
  if (typeof weightMap !== "object" || weightMap === null || Array.isArray(weightMap)) {
    throw bad(`expected {"weight_map": {tensor name: shard file}}`);
  }
  const byShard = new Map<string, string[]>();
  for (const [name, file] of Object.entries(weightMap)) {
    if (typeof file !== "string" || file === "" || basename(file) !== file || file === "." || file === "..") {
      throw bad(`weight_map maps ${quote(name)} to ${typeof file === "string" ? quote(file) : JSON.stringify(file)?.slice(0, 120)}; shards must be file names inside "${dir}"`);
    }
    const names = byShard.get(file);
    if (names) names.push(name);
    else byShard.set(file, [name]);
  }
  const shards = new Map<string, SafetensorsFile>();
  for (const [file, names] of byShard) {
    const path = join(dir, file);
    if (!existsSync(path)) throw bad(`shard file ${quote(file)} (holding ${quote(names[0]!)} and ${names.length - 1} more) is missing from "${dir}"`);
    shards.set(file, yield path);
  }
  // Listed tensors first: a tensor mapped to the wrong shard is reported as such, not as unlisted.
  for (const [file, names] of byShard) {
    for (const name of names) {
      if (!shards.get(file)!.has(name)) throw bad(`weight_map puts ${quote(name)} in ${quote(file)}, but that shard has no such tensor`);
    }
  }
  for (const [file, names] of byShard) {
    const listed = new Set(names);
    for (const name of shards.get(file)!.names) {
      if (!listed.has(name)) throw bad(`shard ${quote(file)} holds ${quote(name)}, which weight_map does not list for it`);
    }
  }
  const entries = Object.entries(weightMap as Record<string, string>).map(([name, file]) => shards.get(file)!.get(name));
  const metadata = Object.fromEntries([...shards.values()].flatMap((s) => Object.entries(s.metadata)));
  return new SafetensorsFile(indexPath, entries, metadata);
}

/** Reads a sharded checkpoint (see shardedReads), blocking the thread during the reads. */
export function readShardedSafetensors(dir: string, index = SAFETENSORS_INDEX_FILE): SafetensorsFile {
  const reads = shardedReads(dir, index);
  let step = reads.next();
  while (!step.done) step = reads.next(readSafetensors(step.value));
  return step.value;
}

/** The Promise form of readShardedSafetensors: each shard is read with readSafetensorsAsync. */
export async function readShardedSafetensorsAsync(dir: string, index = SAFETENSORS_INDEX_FILE): Promise<SafetensorsFile> {
  const reads = shardedReads(dir, index);
  let step = reads.next();
  while (!step.done) step = reads.next(await readSafetensorsAsync(step.value));
  return step.value;
}

// ---- conversion to and from tensors --------------------------------------------------------------

type TypedArrayClass<T> = { new (buffer: ArrayBufferLike, byteOffset: number, length: number): T; BYTES_PER_ELEMENT: number };

/** `bytes` as a typed array; copied only when they are not aligned for it. */
function typedView<T>(bytes: Uint8Array, Type: TypedArrayClass<T>): T {
  // safetensors data is little-endian; reinterpreting it in place needs a little-endian host.
  if (endianness() !== "LE") throw new Error("safetensors: this host is big-endian; lowrank reads and writes safetensors only on little-endian hosts");
  const aligned = bytes.byteOffset % Type.BYTES_PER_ELEMENT === 0 ? bytes : bytes.slice();
  return new Type(aligned.buffer, aligned.byteOffset, aligned.byteLength / Type.BYTES_PER_ELEMENT);
}

function int64ToInt32(bytes: Uint8Array, what: string): Int32Array {
  const wide = typedView(bytes, BigInt64Array);
  const out = new Int32Array(wide.length);
  for (let i = 0; i < wide.length; i++) {
    const v = wide[i]!;
    if (v < -2147483648n || v > 2147483647n) {
      throw new Error(`toTensor: ${what} is I64 and holds ${v} at flat index ${i}, outside the int32 range lowrank uses`);
    }
    out[i] = Number(v);
  }
  return out;
}

/** The safetensors dtypes that hold integers (and booleans). */
const INTEGER_DTYPES: ReadonlySet<string> = new Set(["BOOL", "U8", "I8", "I16", "U16", "I32", "U32", "I64", "U64"]);

/** Host data in a lowrank dtype, ready to copy into a tensor. */
function hostData(entry: SafetensorsTensor, what: string): { dtype: DType; data: ArrayBufferView } {
  switch (entry.dtype) {
    case "F32": return { dtype: "float32", data: entry.bytes };
    case "BF16": return { dtype: "bfloat16", data: entry.bytes };
    case "I32": return { dtype: "int32", data: entry.bytes };
    case "F16": return { dtype: "float32", data: decodeF16(typedView(entry.bytes, Uint16Array)) };
    case "F64": return { dtype: "float32", data: Float32Array.from(typedView(entry.bytes, Float64Array)) };
    case "I64": return { dtype: "int32", data: int64ToInt32(entry.bytes, what) };
    default:
      throw new Error(`toTensor: ${what} has dtype ${entry.dtype}, which lowrank cannot load; supported: F32, F16, BF16, F64, I32, I64`);
  }
}

export interface ToTensorOptions {
  /**
   * Default: float32 for floating dtypes, int32 for integer ones. BF16 data kept as bfloat16 is
   * copied bit for bit. Integer data asked for as a float dtype (or the reverse) is refused.
   */
  dtype?: DType;
  device?: DeviceLike;
}

/**
 * A lowrank Tensor from a safetensors entry: F32, F16 (exact, subnormals, Inf and NaN included),
 * BF16 and F64 become float32 (or the requested dtype); I32 and I64 (when every value fits)
 * become int32.
 */
export function toTensor(entry: SafetensorsTensor & { name?: string }, opts: ToTensorOptions = {}): Tensor {
  const what = entry.name === undefined ? "tensor" : `tensor ${quote(entry.name)}`;
  // A cast between integers and floats is never what a checkpoint means: integer "weights" (or
  // float token ids) are a file written wrongly, and converting them would train on garbage.
  if (opts.dtype !== undefined && INTEGER_DTYPES.has(entry.dtype) !== (opts.dtype === "int32")) {
    throw new Error(
      `toTensor: ${what} ${formatShape(entry.shape)} is stored as ${entry.dtype} where ${opts.dtype} values are expected; ` +
        `the file was written wrongly: save this tensor as ${opts.dtype === "int32" ? "I32 or I64" : "F32, F16 or BF16"}`,
    );
  }
  const host = hostData(entry, what);
  const target = opts.dtype ?? (host.dtype === "int32" ? "int32" : "float32");
  const t = empty(entry.shape, { dtype: host.dtype, device: opts.device });
  native().write({ dst: t.nativeView, data: host.data });
  if (entry.name !== undefined) t.name = entry.name;
  if (target === host.dtype) return t;
  const out = t.to(t.deviceInfo, target);
  t.dispose();
  if (entry.name !== undefined) out.name = entry.name;
  return out;
}

/** The safetensors dtypes a lowrank tensor can be saved as. */
export type SavableDType = "F32" | "BF16" | "F16" | "I32";

/** The dtype each lowrank dtype is saved as by default. */
const NATIVE_SAFETENSORS_DTYPE: Record<DType, SavableDType> = { float32: "F32", bfloat16: "BF16", int32: "I32" };

/** The raw bytes of a tensor in its own dtype (a host copy; synchronizes with its device). */
function rawBytes(t: Tensor): Uint8Array {
  const src = t.isContiguous() ? t : t.contiguous();
  try {
    return new Uint8Array(native().read({ src: src.nativeView, bytes: src.size * DTYPE_SIZE[src.dtype] }));
  } finally {
    if (src !== t) src.dispose();
  }
}

/**
 * A tensor as safetensors data: float32 -> F32, bfloat16 -> BF16, int32 -> I32 by default; floating
 * tensors can also be stored as F32, BF16 or F16 (rounded to nearest even).
 */
export function fromTensor(t: Tensor, dtype: SavableDType = NATIVE_SAFETENSORS_DTYPE[t.dtype]): SafetensorsTensor {
  const shape = [...t.shape];
  if (dtype === NATIVE_SAFETENSORS_DTYPE[t.dtype]) return { dtype, shape, bytes: rawBytes(t) };
  if (t.dtype === "int32" || dtype === "I32") {
    throw new Error(`fromTensor: cannot store a ${t.dtype} tensor${t.name ? ` ${quote(t.name)}` : ""} ${formatShape(shape)} as ${dtype}; convert it with .to(device, dtype) first`);
  }
  const values = t.dataSync() as Float32Array;
  const converted = dtype === "F32" ? values : dtype === "F16" ? encodeF16(values) : Uint16Array.from(values, f32ToBf16Bits);
  return { dtype, shape, bytes: new Uint8Array(converted.buffer, converted.byteOffset, converted.byteLength) };
}

// ---- writing ---------------------------------------------------------------------------------------

/** Tensors to write: a name -> (Tensor or raw data) record, or a list of named entries. */
export type SafetensorsInput = Readonly<Record<string, Tensor | SafetensorsTensor>> | readonly SafetensorsEntry[];

function checkEntry(e: SafetensorsEntry, names: Set<string>): void {
  const bad = (what: string) => new Error(`writeSafetensors: tensor ${quote(e.name)}: ${what}`);
  if (e.name === "__metadata__") throw bad(`"__metadata__" is reserved for the file's metadata`);
  if (LONE_SURROGATE.test(e.name)) throw bad("the name holds an unpaired UTF-16 surrogate and cannot be stored as UTF-8");
  if (names.has(e.name)) throw bad("the name is given twice");
  names.add(e.name);
  if (!DTYPE_RANK.has(e.dtype)) throw bad(`unknown dtype ${JSON.stringify(e.dtype)}; use one of ${[...DTYPE_RANK.keys()].join(", ")}`);
  if (!Array.isArray(e.shape) || e.shape.some((d) => !Number.isSafeInteger(d) || d < 0)) {
    throw bad(`shape ${JSON.stringify(e.shape)} must be a list of non-negative integers`);
  }
  const bits = e.shape.reduce((n, d) => n * BigInt(d), 1n) * BigInt(DTYPE_BITS[e.dtype]);
  if (bits % 8n !== 0n || bits / 8n !== BigInt(e.bytes.byteLength)) {
    throw bad(`shape ${formatShape(e.shape)} of ${e.dtype} needs ${Number(bits) / 8} bytes, but ${e.bytes.byteLength} were given`);
  }
}

function toEntries(tensors: SafetensorsInput): SafetensorsEntry[] {
  if (Array.isArray(tensors)) return [...(tensors as readonly SafetensorsEntry[])];
  return Object.entries(tensors as Record<string, Tensor | SafetensorsTensor>).map(([name, v]) => ({
    name, ...(v instanceof Tensor ? fromTensor(v) : v),
  }));
}

/**
 * The bytes of a safetensors file, in the reference writer's layout: tensors sorted by dtype
 * (descending, as listed in DTYPE_BITS) then by name, compact JSON header with __metadata__ first,
 * padded with spaces to a multiple of 8 bytes. Returned as chunks (header, then each tensor) so
 * large checkpoints are never concatenated in memory.
 */
export function serializeSafetensors(tensors: SafetensorsInput, metadata?: Readonly<Record<string, string>>): Uint8Array[] {
  const entries = toEntries(tensors);
  const names = new Set<string>();
  for (const e of entries) checkEntry(e, names);
  if (metadata) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== "string" || LONE_SURROGATE.test(k) || LONE_SURROGATE.test(v)) {
        throw new Error(`writeSafetensors: metadata ${quote(k)} must map to a well-formed string, got ${typeof v}`);
      }
    }
  }
  // Names compare as UTF-8 bytes (= code point order), as Rust's String ordering does.
  const key = new Map(entries.map((e) => [e, Buffer.from(e.name, "utf8")]));
  entries.sort((a, b) => DTYPE_RANK.get(b.dtype)! - DTYPE_RANK.get(a.dtype)! || Buffer.compare(key.get(a)!, key.get(b)!));

  const fields: string[] = [];
  if (metadata) fields.push(`"__metadata__":${JSON.stringify(metadata)}`);
  let offset = 0;
  for (const e of entries) {
    const end = offset + e.bytes.byteLength;
    fields.push(`${JSON.stringify(e.name)}:{"dtype":"${e.dtype}","shape":[${e.shape.join(",")}],"data_offsets":[${offset},${end}]}`);
    offset = end;
  }
  const json = Buffer.from(`{${fields.join(",")}}`, "utf8");
  const padded = Math.ceil(json.byteLength / 8) * 8;
  const head = Buffer.alloc(8 + padded, 0x20); // spaces pad the header, as in the reference writer
  head.writeBigUInt64LE(BigInt(padded), 0);
  json.copy(head, 8);
  return [head, ...entries.map((e) => e.bytes).filter((b) => b.byteLength > 0)];
}

/** Writes a safetensors file atomically (see writeFileAtomic). */
export function writeSafetensors(path: string, tensors: SafetensorsInput, metadata?: Readonly<Record<string, string>>): void {
  writeFileAtomic(path, serializeSafetensors(tensors, metadata));
}

/** The Promise form of writeSafetensors: the disk I/O does not block the event loop. */
export async function writeSafetensorsAsync(path: string, tensors: SafetensorsInput, metadata?: Readonly<Record<string, string>>): Promise<void> {
  await writeFileAtomicAsync(path, serializeSafetensors(tensors, metadata));
}
