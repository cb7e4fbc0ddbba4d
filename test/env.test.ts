// The LOWRANK_* variables the native addon reads are checked before it loads: a value that means
// nothing is an error naming the variable, the value and the allowed range; too many threads warn.
import { availableParallelism } from "node:os";
import { describe, expect, it } from "vitest";
import { checkNativeEnvironment } from "../lib/env.js";

const cores = availableParallelism();
function check(env: Record<string, string>): string[] {
  const warnings: string[] = [];
  checkNativeEnvironment(env, (m) => warnings.push(m));
  return warnings;
}

describe("LOWRANK_* variables", () => {
  it("accepts what the addon understands, silently", () => {
    expect(check({})).toEqual([]);
    expect(check({ LOWRANK_NUM_THREADS: "1", LOWRANK_SIMD: "scalar", LOWRANK_CPU_CACHE_MB: "0" })).toEqual([]);
    expect(check({ LOWRANK_NUM_THREADS: String(cores), LOWRANK_SIMD: "avx2" })).toEqual([]);
    expect(check({ LOWRANK_SIMD: "avx512", LOWRANK_CPU_CACHE_MB: "4096" })).toEqual([]);
  });

  it.each(["abc", "0", "-2", "1.5", "", "1025", "8 threads"])("refuses LOWRANK_NUM_THREADS=%j, naming the range", (value) => {
    expect(() => check({ LOWRANK_NUM_THREADS: value })).toThrow(
      `LOWRANK_NUM_THREADS=${JSON.stringify(value)} is not valid: expected an integer from 1 to 1024 (CPU kernel threads; this host has ${cores} core${cores === 1 ? "" : "s"}); unset it for the default`,
    );
  });

  it("warns when LOWRANK_NUM_THREADS exceeds the cores", () => {
    expect(check({ LOWRANK_NUM_THREADS: "1000" })).toEqual([
      `LOWRANK_NUM_THREADS=1000 is more than the ${cores} CPU core${cores === 1 ? "" : "s"} of this host: the extra threads only wait for a core; use at most ${cores}`,
    ]);
  });

  it("refuses an unknown LOWRANK_SIMD and a bad LOWRANK_CPU_CACHE_MB", () => {
    expect(() => check({ LOWRANK_SIMD: "foo" })).toThrow('LOWRANK_SIMD="foo" is not valid: expected one of scalar, avx2, avx512, avx512bf16 (the most the CPU kernels may use); unset it for the best this CPU has');
    expect(() => check({ LOWRANK_SIMD: "AVX2" })).toThrow(/LOWRANK_SIMD="AVX2" is not valid/);
    expect(() => check({ LOWRANK_CPU_CACHE_MB: "lots" })).toThrow(/^LOWRANK_CPU_CACHE_MB="lots" is not valid: expected an integer from 0 to 2147483648/);
  });
});
