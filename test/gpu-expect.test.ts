// LOWRANK_EXPECT_CUDA=1 (set by test/gpu/device-run.sh on the GPU machine): a GPU test run whose
// CUDA build is missing or fails to load must fail with the reason, not pass with every test
// skipped. Checked here by running vitest on a GPU test file against a build folder that has only
// the CPU addon, or a broken CUDA addon.
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { nativePath } from "../lib/native/index.js";

const ROOT = resolve(import.meta.dirname, "..");
// the CPU addon of the build this process uses (a CUDA build folder has both)
const CPU_ADDON = nativePath().replace(/lowrank_cuda\.node$/, "lowrank.node");
const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

/** A build folder holding the CPU addon, and a CUDA addon if given (bytes, or a file to link). */
function buildDir(cudaAddon?: string | { link: string }): string {
  const dir = mkdtempSync(join(tmpdir(), "lowrank-build-"));
  dirs.push(dir);
  mkdirSync(join(dir, "Release"));
  symlinkSync(CPU_ADDON, join(dir, "Release", "lowrank.node"));
  if (typeof cudaAddon === "string") writeFileSync(join(dir, "Release", "lowrank_cuda.node"), cudaAddon);
  else if (cudaAddon) symlinkSync(cudaAddon.link, join(dir, "Release", "lowrank_cuda.node"));
  return dir;
}

function vitestGpu(build: string, expectCuda: boolean): { status: number | null; output: string } {
  const env: NodeJS.ProcessEnv = { ...process.env, LOWRANK_BUILD_DIR: build, NO_COLOR: "1" };
  delete env.LOWRANK_DEVICE;
  delete env.VITEST; // a fresh vitest, not a worker of this one
  if (expectCuda) env.LOWRANK_EXPECT_CUDA = "1";
  else delete env.LOWRANK_EXPECT_CUDA;
  const r = spawnSync(process.execPath, [join(ROOT, "node_modules/vitest/vitest.mjs"), "run", "test/gpu/tensor.test.ts"], {
    cwd: ROOT, env, encoding: "utf8", timeout: 90_000,
  });
  return { status: r.status, output: r.stdout + r.stderr };
}

describe("GPU test runs with LOWRANK_EXPECT_CUDA=1", () => {
  it("fail when there is no CUDA build, saying so (without the variable they pass, all skipped)", () => {
    const build = buildDir();
    const skipped = vitestGpu(build, false);
    expect(skipped.status, skipped.output).toBe(0);
    expect(skipped.output).toMatch(/skipped/);
    const r = vitestGpu(build, true);
    expect(r.status, r.output).toBe(1);
    expect(r.output).toContain(`LOWRANK_EXPECT_CUDA=1 but there is no CUDA build to load (no lowrank_cuda.node in ${join(build, "Release")})`);
  });

  it("fail when the CUDA build does not load, with the loader's error", () => {
    const r = vitestGpu(buildDir("not a shared object"), true);
    expect(r.status, r.output).toBe(1);
    expect(r.output).toMatch(/LOWRANK_EXPECT_CUDA=1 but the CUDA build at \S+lowrank_cuda\.node failed to load: .*(invalid ELF header|file too short)/);
  });

  it("fail when the addon under the CUDA name has no CUDA (test/helpers.ts checks what loaded)", () => {
    // the CPU addon under lowrank_cuda.node: it loads, but reports no CUDA and no GPU
    const r = vitestGpu(buildDir({ link: CPU_ADDON }), true);
    expect(r.status, r.output).toBe(1);
    expect(r.output).toMatch(/LOWRANK_EXPECT_CUDA=1 but (the addon \S+lowrank_cuda\.node was built without CUDA|the CUDA build sees no GPU)/);
  });
});
