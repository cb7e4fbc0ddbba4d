// The LOWRANK_* variables the native addon reads when it loads, checked first: the C++ side reads
// them with atoi/strcmp and would silently take "abc" or "0" for the default, so a typo would go
// unnoticed. A value that means nothing is an error naming the variable, the value and what is
// allowed; a value that works but hurts (more threads than cores) is a warning.
import { availableParallelism } from "node:os";
import { profileGpuOf } from "./profile.js";

/** The thread counts setNumThreads accepts (native/binding/runtime.cc). */
export const MAX_THREADS = 1024;

/** LOWRANK_SIMD values: the instruction sets the CPU kernels can be capped to (native/cpu/simd.cc). */
export const SIMD_LEVELS = ["scalar", "avx2", "avx512", "avx512bf16"] as const;

/** An integer variable's value, or an Error naming it and the range. */
function integerIn(name: string, value: string, lo: number, hi: number, meaning: string): number {
  const n = Number(value);
  if (!/^\s*\d+\s*$/.test(value) || n < lo || n > hi) {
    throw new Error(`${name}=${JSON.stringify(value)} is not valid: expected an integer from ${lo} to ${hi} (${meaning}); unset it for the default`);
  }
  return n;
}

/**
 * Checks the LOWRANK_* variables the addon reads (LOWRANK_NUM_THREADS, LOWRANK_SIMD,
 * LOWRANK_CPU_CACHE_MB) and LOWRANK_PROFILE's GPU form; throws on a value that means nothing, warns through `warn` on one that works badly.
 */
export function checkNativeEnvironment(env: NodeJS.ProcessEnv = process.env, warn: (message: string) => void = (m) => process.emitWarning(m, "LowrankWarning")): void {
  const threads = env.LOWRANK_NUM_THREADS;
  if (threads !== undefined) {
    const cores = availableParallelism();
    const n = integerIn("LOWRANK_NUM_THREADS", threads, 1, MAX_THREADS, `CPU kernel threads; this host has ${cores} core${cores === 1 ? "" : "s"}`);
    if (n > cores) warn(`LOWRANK_NUM_THREADS=${n} is more than the ${cores} CPU core${cores === 1 ? "" : "s"} of this host: the extra threads only wait for a core; use at most ${cores}`);
  }
  const simd = env.LOWRANK_SIMD;
  if (simd !== undefined && !(SIMD_LEVELS as readonly string[]).includes(simd)) {
    throw new Error(`LOWRANK_SIMD=${JSON.stringify(simd)} is not valid: expected one of ${SIMD_LEVELS.join(", ")} (the most the CPU kernels may use); unset it for the best this CPU has`);
  }
  const cache = env.LOWRANK_CPU_CACHE_MB;
  if (cache !== undefined) integerIn("LOWRANK_CPU_CACHE_MB", cache, 0, 2 ** 31, "MB of freed CPU buffers kept for reuse, 0 for none");
  // Any other value turns the wall-clock profile on (lib/profile.ts); a mistyped GPU device would
  // otherwise fall back to it silently.
  const profile = env.LOWRANK_PROFILE;
  if (profile?.startsWith("cuda") && profileGpuOf(profile) === null) {
    throw new Error(`LOWRANK_PROFILE=${JSON.stringify(profile)} is not valid: expected cuda or cuda:N (GPU time on device N), or 1 for wall-clock time`);
  }
}
