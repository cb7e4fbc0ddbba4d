import { readFileSync } from "node:fs";
import { totalmem } from "node:os";
import { join } from "node:path";
import { native, nativePath, PACKAGE_ROOT } from "./native/index.js";
import { cudaAvailable, cudaDescription, parseDevice, type DeviceLike } from "./tensor/device.js";

export interface BuildInfo {
  version: string;
  /** The SIMD level the CPU kernels dispatch to on this host. */
  simd: string;
  threads: number;
  cuda: boolean;
  gpus: string[];
  cudaRuntime?: string;
  cublas?: string;
  addon: string;
}

/** What this build and host offer. */
export function info(): BuildInfo {
  const i = native().info();
  return {
    version: i.version, simd: i.simd, threads: i.threads, cuda: i.cudaBuilt, gpus: i.gpus,
    cudaRuntime: i.cudaRuntime, cublas: i.cublas, addon: nativePath(),
  };
}

/** The package's version from package.json, without loading the addon (for `lowrank --version`). */
export function packageVersion(): string {
  return (JSON.parse(readFileSync(join(PACKAGE_ROOT, "package.json"), "utf8")) as { version: string }).version;
}

/** Sets the number of CPU threads the kernels use (default: all cores, or LOWRANK_NUM_THREADS). */
export function setNumThreads(n: number): void {
  native().setNumThreads(n);
}

/**
 * Waits until queued work on a CUDA device ("cuda", "cuda:N", or a Device) has finished; "cpu"
 * returns at once. Without an argument: the first GPU when there is one, else nothing to wait for.
 */
export function synchronize(device?: DeviceLike): void {
  if (device === undefined && !cudaAvailable()) return;
  const d = parseDevice(device ?? "cuda:0", "synchronize");
  if (d.type === "cuda") native().synchronize(d.index);
}

/**
 * The memory of a device in bytes: the host's RAM for "cpu" (the container's limit when it is
 * lower), the GPU's total memory for "cuda:N" (from the addon's device description).
 */
export function deviceMemory(device: DeviceLike): number {
  const d = parseDevice(device);
  if (d.type === "cpu") {
    const limit = process.constrainedMemory?.() ?? 0; // 0 (or a huge number) when there is no limit
    return limit > 0 ? Math.min(totalmem(), limit) : totalmem();
  }
  const m = /(\d+) MiB\)$/.exec(cudaDescription(d) ?? "");
  return m ? Number(m[1]) * 2 ** 20 : Infinity;
}

/** 11300000000 → "11.3 GB" (decimal units, as disks and `ls -h --si` count). */
export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes)) return `${bytes} bytes`;
  const units = ["bytes", "kB", "MB", "GB", "TB", "PB", "EB"];
  let i = 0;
  while (bytes >= 1000 && i < units.length - 1) bytes /= 1000, i++;
  return i === 0 ? `${bytes} bytes` : `${bytes >= 100 ? bytes.toFixed(0) : bytes.toPrecision(3)} ${units[i]}`;
}

/**
 * Refuses, before anything is allocated, what cannot fit on `device`: an allocation the size of
 * the whole memory would end in std::bad_alloc, the OOM killer or a CUDA error that names nothing.
 * `what` names what needs the bytes, `fix` what to change.
 */
export function checkFitsInMemory(bytes: number, device: DeviceLike, what: string, fix: string): void {
  const total = deviceMemory(device);
  if (bytes > total) {
    throw new Error(`${what} needs ${formatBytes(bytes)}, more than the ${formatBytes(total)} of memory on ${parseDevice(device).name}; ${fix}`);
  }
}
