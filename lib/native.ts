// Loads the native addon once. Prefers the CUDA build (build/Release/lowrank_cuda.node) and falls
// back to the CPU build with a warning when CUDA cannot be loaded on this host.
// LOWRANK_DEVICE=cpu skips the CUDA build entirely; LOWRANK_BUILD_DIR points at another cmake-js
// output folder (default: build). LOWRANK_EXPECT_CUDA=1 (set by test/gpu/device-run.sh) turns the
// fallback into an error, so a GPU run whose CUDA build is missing or broken fails instead of
// skipping every GPU test.
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { checkNativeEnvironment } from "./env.js";
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

const here = dirname(fileURLToPath(import.meta.url));
/** The package root: where package.json and the build folder are (from dist/ or from lib/). */
export const PACKAGE_ROOT = join(here, "..");
const root = PACKAGE_ROOT;
const require = createRequire(import.meta.url);

/**
 * The addon is missing or cannot be loaded on this host. Only what computes needs it: the CLI
 * prints this message without a stack trace, and commands that read shapes alone still run.
 */
export class NativeAddonError extends Error {}

function candidates(): string[] {
  // Relative to the package root, or absolute (resolve, not join: benches run from a compiled copy).
  const release = join(resolve(root, process.env.LOWRANK_BUILD_DIR ?? "build"), "Release");
  const wantCuda = process.env.LOWRANK_DEVICE !== "cpu";
  return [...(wantCuda ? [join(release, "lowrank_cuda.node")] : []), join(release, "lowrank.node")];
}

function load(): { addon: NativeAddon; path: string } {
  checkNativeEnvironment(); // before the addon reads the variables with atoi and strcmp
  const paths = candidates().filter((p) => existsSync(p));
  const expectCuda = process.env.LOWRANK_EXPECT_CUDA === "1";
  if (expectCuda && !paths[0]?.endsWith("lowrank_cuda.node")) {
    throw new Error(
      `lowrank: LOWRANK_EXPECT_CUDA=1 but there is no CUDA build to load ` +
        `(${process.env.LOWRANK_DEVICE === "cpu" ? "LOWRANK_DEVICE=cpu skips it" : `no lowrank_cuda.node in ${dirname(candidates().at(-1)!)}`}). ` +
        `Build it with "LOWRANK_CUDA=1 npm run build:native" on a host with the CUDA toolkit.`,
    );
  }
  if (paths.length === 0) {
    throw new NativeAddonError(
      `the native addon is not built (looked for ${candidates().join(", ")}). ` +
        `Run "npm install" (or "npm run build:native") in ${root}; it needs CMake and a C++17 compiler ` +
        `("npm run build:gyp" builds the CPU backend with node-gyp instead).`,
    );
  }
  if (process.platform !== "linux" && process.platform !== "darwin" && process.platform !== "win32") {
    throw new NativeAddonError(`unsupported platform ${process.platform}`);
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
        if (expectCuda) {
          throw new Error(`lowrank: LOWRANK_EXPECT_CUDA=1 but the CUDA build at ${path} failed to load: ${(err as Error).message}`);
        }
        process.emitWarning(
          `lowrank: the CUDA build could not be loaded (${(err as Error).message.split("\n")[0]}); ` +
            `falling back to the CPU backend. Check the NVIDIA driver and the CUDA/cuBLAS libraries, ` +
            `or set LOWRANK_DEVICE=cpu to silence this.`,
          "LowrankWarning",
        );
      }
    }
  }
  throw new NativeAddonError(
    `the native addon at ${paths[paths.length - 1]} failed to load: ${(lastError as Error).message}. ` +
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
