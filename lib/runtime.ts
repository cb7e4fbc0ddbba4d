import { native, nativePath } from "./native.js";

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

/** Sets the number of CPU threads the kernels use (default: all cores, or LOWRANK_NUM_THREADS). */
export function setNumThreads(n: number): void {
  native().setNumThreads(n);
}

/**
 * Waits until queued work on a CUDA device has finished. Takes a device name or a Device (only its
 * name is read: lib/tensor sits above this file); "cpu" returns at once.
 */
export function synchronize(device: string | { readonly name: string } = "cuda:0"): void {
  const m = /^cuda:(\d+)$/.exec(typeof device === "string" ? device : device.name);
  if (m) native().synchronize(Number(m[1]));
}
