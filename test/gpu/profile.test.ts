// LOWRANK_PROFILE=cuda: every native call's GPU time from CUDA events (lib/profile.ts). The profiler
// is chosen when the addon loads, so the CLI runs in a child process: `lowrank bench` on the GPU,
// whose report (stderr) must give its GEMMs GPU times a real GPU can have.
import { spawnSync } from "node:child_process";
import { resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildCli } from "../cli/helpers.js";
import { hasCuda, noCudaReason } from "../helpers.js";

const ROOT = resolve(import.meta.dirname, "../..");
let cli: { main: string; cleanup: () => void };
beforeAll(async () => void (cli = await buildCli()));
afterAll(() => cli?.cleanup());

if (!hasCuda) describe("LOWRANK_PROFILE=cuda", () => it.skip(noCudaReason, () => {}));
describe.skipIf(!hasCuda)("LOWRANK_PROFILE=cuda", () => {
  it("reports GPU time per call: the bench's GEMMs at speeds between 1 TFLOP/s and 2.5 PFLOP/s", () => {
    const r = spawnSync(process.execPath, [cli.main, "bench", "--device", "cuda:0", "--dtype", "bfloat16", "--iters", "3", "--warmup", "1", "--repeat", "2"], {
      cwd: ROOT, encoding: "utf8", env: { ...process.env, LOWRANK_PROFILE: "cuda" },
    });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toContain("GPU time (CUDA events) of the native calls");
    expect(r.stderr).toMatch(/GPU ms\/run +share +host ms +calls +GFLOP\/s/);
    // "<GPU ms> <share>% <host ms> <calls> <GFLOP/s>  <phase> | gemm <m>x<n>x<k>..." rows; the
    // 4096-wide products are 0.27 TFLOP each: a GPU time from queueing alone (the host's few µs)
    // would put them at tens of PFLOP/s, a broken event pair at 0 or infinity.
    const gemms = [...r.stderr.matchAll(/^ +([\d.]+) +[\d.]+% +[\d.]+ +\d+ +([\d.]+)  .*\| gemm \d+x\d+x\d+/gm)];
    expect(gemms.length).toBeGreaterThan(0);
    for (const [, gpuMs, gflops] of gemms) {
      expect(Number(gpuMs)).toBeGreaterThan(0);
      expect(Number(gflops)).toBeGreaterThan(1e3);
      expect(Number(gflops)).toBeLessThan(2.5e6);
    }
    const total = /^ +([\d.]+) GPU ms\/run in native calls \(([\d.]+) ms on the host\)/m.exec(r.stderr);
    expect(total).not.toBeNull();
    expect(Number(total![1])).toBeGreaterThan(0);
  });
});
