// Where the addon loader (lib/native/index.ts) looks, in order: the source build in build/Release
// (CUDA, then CPU), then the prebuilt addon shipped in the package, prebuilds/<platform>-<arch>/.
// Checked on a package laid out as npm installs it (package.json at the root, the CLI one folder
// below), run as a child so each layout gets a fresh loader.
import { spawnSync } from "node:child_process";
import { copyFileSync, cpSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { nativePath } from "../../lib/native/index.js";
import { buildCli } from "../cli/helpers.js";

const ROOT = resolve(import.meta.dirname, "../..");
const CPU_ADDON = nativePath().replace(/lowrank_cuda\.node$/, "lowrank.node");
const PLATFORM = `${process.platform}-${process.arch}`;
const dirs: string[] = [];
let cli: { main: string; cleanup: () => void };
beforeAll(async () => {
  cli = await buildCli();
});
afterAll(() => {
  cli?.cleanup();
  dirs.forEach((d) => rmSync(d, { recursive: true, force: true }));
});

/** A package folder with the CLI bundle in dist/ and an addon at each of `addons` (relative paths). */
function pkg(addons: string[]): string {
  const dir = mkdtempSync(join(tmpdir(), "lowrank-loader-"));
  dirs.push(dir);
  writeFileSync(join(dir, "package.json"), JSON.stringify({ name: "lowrank", version: "0.0.0", type: "module" }));
  symlinkSync(join(ROOT, "node_modules"), join(dir, "node_modules"));
  cpSync(resolve(cli.main, ".."), join(dir, "dist"), { recursive: true });
  for (const a of addons) {
    mkdirSync(resolve(dir, a, ".."), { recursive: true });
    copyFileSync(CPU_ADDON, join(dir, a));
  }
  return dir;
}

function info(dir: string) {
  const env: NodeJS.ProcessEnv = { ...process.env, LOWRANK_NUM_THREADS: "1" };
  delete env.LOWRANK_BUILD_DIR;
  delete env.LOWRANK_DEVICE;
  delete env.LOWRANK_EXPECT_CUDA;
  const r = spawnSync(process.execPath, [join(dir, "dist", "main.js"), "info", "--json"], { cwd: dir, env, encoding: "utf8" });
  return { status: r.status, addon: r.status === 0 ? (JSON.parse(r.stdout) as { addon: string }).addon : undefined, stderr: r.stderr };
}

describe("addon loader", () => {
  it("loads the prebuilt addon when there is no source build", () => {
    const dir = pkg([`prebuilds/${PLATFORM}/lowrank.node`]);
    const r = info(dir);
    expect(r.stderr).toBe("");
    expect(r.addon).toBe(join(dir, "prebuilds", PLATFORM, "lowrank.node"));
  });

  it("prefers a source build in build/Release over the prebuilt addon", () => {
    const dir = pkg(["build/Release/lowrank.node", `prebuilds/${PLATFORM}/lowrank.node`]);
    expect(info(dir).addon).toBe(join(dir, "build", "Release", "lowrank.node"));
  });

  it("falls back to the prebuilt addon when the source build does not load", () => {
    const dir = pkg([`prebuilds/${PLATFORM}/lowrank.node`]);
    mkdirSync(join(dir, "build", "Release"), { recursive: true });
    writeFileSync(join(dir, "build", "Release", "lowrank.node"), "not a shared library");
    const r = info(dir);
    expect(r.addon).toBe(join(dir, "prebuilds", PLATFORM, "lowrank.node"));
    expect(r.stderr).toMatch(/LowrankWarning: lowrank: \S+build\/Release\/lowrank\.node could not be loaded \(.*(invalid ELF header|file too short)\); trying \S+prebuilds\/\S+\/lowrank\.node/);
  });

  it("lists every place it tried when none has an addon", () => {
    const dir = pkg([]);
    const r = info(dir);
    expect(r.status).toBe(1);
    const release = join(dir, "build", "Release");
    expect(r.stderr.trim()).toBe(
      `lowrank info: no native addon could be loaded; tried ${join(release, "lowrank_cuda.node")} (not there); ` +
        `${join(release, "lowrank.node")} (not there); ${join(dir, "prebuilds", PLATFORM, "lowrank.node")} (not there). ` +
        `Run "npm rebuild lowrank" (in the repository: "npm run build:native") to build it from source: ` +
        `it needs CMake 3.18+ and a C++17 compiler, or a C++17 compiler alone (node-gyp then builds the CPU backend).`,
    );
  });
});
