// Loads the native addon once. Prefers the CUDA build (build/Release/lowrank_cuda.node) and falls
// back to the CPU build with a warning when CUDA cannot be loaded on this host.
// LOWRANK_DEVICE=cpu skips the CUDA build entirely; LOWRANK_BUILD_DIR points at another cmake-js
// output folder (default: build).
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { PROFILING, profileAddon } from "./profile.js";

/** A native buffer on one device. JS tensors are views over it. */
export interface NativeStorage {
  readonly byteLength: number;
  readonly device: string;
  readonly disposed: boolean;
  dispose(): void;
}

export interface NativeInfo {
  version: string;
  simd: string;
  threads: number;
  cudaBuilt: boolean;
  gpus: string[];
  cudaRuntime?: string;
  cublas?: string;
}

export interface NativeMemory {
  device: string;
  bytes: number;
  buffers: number;
  peakBytes: number;
}

/** The addon's surface. Buffers are passed as (storage, byteOffset); dtypes as DTYPE_CODE. */
export interface NativeAddon {
  Storage: new (deviceType: number, deviceIndex: number, bytes: number) => NativeStorage;
  write(dst: NativeStorage, byteOffset: number, src: ArrayBufferView): void;
  read(src: NativeStorage, byteOffset: number, byteLength: number): ArrayBuffer;
  /** Like read(), on a worker thread: the event loop runs while the device finishes. */
  readAsync(src: NativeStorage, byteOffset: number, byteLength: number): Promise<ArrayBuffer>;
  copyBytes(dst: NativeStorage, dstOffset: number, src: NativeStorage, srcOffset: number, byteLength: number): void;
  fill(dst: NativeStorage, byteOffset: number, dtype: number, n: number, value: number): void;
  arange(dst: NativeStorage, byteOffset: number, dtype: number, n: number, start: number, step: number): void;
  cast(src: NativeStorage, srcOffset: number, srcDtype: number, dst: NativeStorage, dstOffset: number, dstDtype: number, n: number): void;
  copyStrided(
    src: NativeStorage, srcOffset: number, srcStrides: readonly number[],
    dst: NativeStorage, dstOffset: number, dstStrides: readonly number[],
    shape: readonly number[], elemSize: number,
  ): void;
  randomUniform(dst: NativeStorage, byteOffset: number, n: number, seed: bigint, offset: bigint, low: number, high: number): void;
  randomNormal(dst: NativeStorage, byteOffset: number, n: number, seed: bigint, offset: bigint, mean: number, std: number): void;
  gemm(
    transA: boolean, transB: boolean, m: number, n: number, k: number, alpha: number,
    a: NativeStorage, aOffset: number, lda: number, strideA: number,
    b: NativeStorage, bOffset: number, ldb: number, strideB: number,
    beta: number, c: NativeStorage, cOffset: number, ldc: number, strideC: number, batch: number,
  ): void;
  info(): NativeInfo;
  memory(): NativeMemory[];
  synchronize(deviceIndex: number): void;
  setNumThreads(n: number): void;
  /** Kernels added by later op families (see lib/ops). */
  [kernel: string]: unknown;
}

export const enum Binary { Add = 0, Sub = 1, Mul = 2, Div = 3 }
export const enum Unary {
  Neg = 0, Exp = 1, Log = 2, Sqrt = 3, Tanh = 4, Relu = 5, Sigmoid = 6, Square = 7,
  Scale = 8, AddScalar = 9, PowScalar = 10, Gelu = 11, Abs = 12,
}

/**
 * The element-wise family's kernels (native/binding/elementwise.cc), with their op codes
 * (native/ops/elementwise.h). Declared at this level because both the ops (lib/ops) and the
 * autograd engine's gradient sums call them.
 */
export interface ElementwiseKernels {
  binary(
    op: Binary, a: NativeStorage, aOffset: number, aStrides: readonly number[], b: NativeStorage, bOffset: number,
    bStrides: readonly number[], out: NativeStorage, outOffset: number, shape: readonly number[],
  ): void;
  unary(op: Unary, x: NativeStorage, xOffset: number, out: NativeStorage, outOffset: number, n: number, alpha: number): void;
  unaryBackward(
    op: Unary, x: NativeStorage, xOffset: number, g: NativeStorage, gOffset: number, gx: NativeStorage, gxOffset: number, n: number, alpha: number,
  ): void;
  sumRows(x: NativeStorage, xOffset: number, out: NativeStorage, outOffset: number, rows: number, cols: number): void;
}
const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..");
const require = createRequire(import.meta.url);

function candidates(): string[] {
  // Relative to the package root, or absolute (resolve, not join: benches run from a compiled copy).
  const release = join(resolve(root, process.env.LOWRANK_BUILD_DIR ?? "build"), "Release");
  const wantCuda = process.env.LOWRANK_DEVICE !== "cpu";
  return [...(wantCuda ? [join(release, "lowrank_cuda.node")] : []), join(release, "lowrank.node")];
}

function load(): { addon: NativeAddon; path: string } {
  const paths = candidates().filter((p) => existsSync(p));
  if (paths.length === 0) {
    throw new Error(
      `lowrank: the native addon is not built (looked for ${candidates().join(", ")}). ` +
        `Run "npm install" (or "npm run build:native") in ${root}; it needs CMake and a C++17 compiler ` +
        `("npm run build:gyp" builds the CPU backend with node-gyp instead).`,
    );
  }
  if (process.platform !== "linux" && process.platform !== "darwin" && process.platform !== "win32") {
    throw new Error(`lowrank: unsupported platform ${process.platform}`);
  }
  let lastError: unknown;
  for (const path of paths) {
    try {
      const addon = require(path) as NativeAddon;
      // LOWRANK_PROFILE=1: every native call is timed (lib/profile.ts); otherwise the addon as is.
      return { addon: PROFILING ? profileAddon(addon) : addon, path };
    } catch (err) {
      lastError = err;
      if (path.endsWith("lowrank_cuda.node")) {
        process.emitWarning(
          `lowrank: the CUDA build could not be loaded (${(err as Error).message.split("\n")[0]}); ` +
            `falling back to the CPU backend. Check the NVIDIA driver and the CUDA/cuBLAS libraries, ` +
            `or set LOWRANK_DEVICE=cpu to silence this.`,
          "LowrankWarning",
        );
      }
    }
  }
  throw new Error(
    `lowrank: the native addon at ${paths[paths.length - 1]} failed to load: ${(lastError as Error).message}. ` +
      `It may be built for another platform or Node ABI: rebuild with "npm run build:native".`,
  );
}

let loaded: { addon: NativeAddon; path: string } | undefined;

/** The addon, loaded on first use. */
export function native(): NativeAddon {
  loaded ??= load();
  return loaded.addon;
}

/** The addon typed as an op family's kernel interface (each family declares its own, in lib/ops). */
export function kernels<T>(): T {
  return native() as unknown as T;
}

/** Path of the addon file that was loaded. */
export function nativePath(): string {
  native();
  return loaded!.path;
}
