// package.json "install" (scripts/install.mjs) decides whether to compile: not at all when the
// prebuilt addon loads, else cmake-js when CMake is on PATH, node-gyp when only a C++ compiler is,
// and a failure naming what to install when neither is. Run on a planted package folder whose
// cmake-js and node-gyp are stand-ins that log their arguments, with a PATH that holds only the
// stand-in cmake and c++ a case asks for.
import { spawnSync } from "node:child_process";
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { nativePath } from "../../lib/native/index.js";

const ROOT = resolve(import.meta.dirname, "../..");
const CPU_ADDON = nativePath().replace(/lowrank_cuda\.node$/, "lowrank.node");
const PREBUILT = join("prebuilds", `${process.platform}-${process.arch}`, "lowrank.node");
const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

interface Case {
  prebuilt?: "loads" | "broken";
  tools?: ("cmake" | "c++")[];
  cmakeJsFails?: boolean;
  /** build/Release/lowrank.node from an earlier build from source */
  sourceBuild?: boolean;
  env?: NodeJS.ProcessEnv;
}

/** Runs the install script in a planted package; returns its exit code, output and the builds it started. */
function install(c: Case) {
  const dir = mkdtempSync(join(tmpdir(), "lowrank-install-"));
  dirs.push(dir);
  mkdirSync(join(dir, "scripts"));
  copyFileSync(join(ROOT, "scripts/install.mjs"), join(dir, "scripts/install.mjs"));
  writeFileSync(join(dir, "package.json"), JSON.stringify({ name: "lowrank", version: "0.0.0" }));
  const log = join(dir, "builds.log");
  const standIn = (name: string, bin: string, status: number) => {
    mkdirSync(join(dir, "node_modules", name, "bin"), { recursive: true });
    writeFileSync(join(dir, "node_modules", name, "package.json"), JSON.stringify({ name }));
    writeFileSync(join(dir, "node_modules", name, "bin", bin),
      `require("fs").appendFileSync(${JSON.stringify(log)}, ${JSON.stringify(name)} + " " + process.argv.slice(2).join(" ") + "\\n"); process.exit(${status});\n`);
  };
  standIn("cmake-js", "cmake-js", c.cmakeJsFails ? 1 : 0);
  standIn("node-gyp", "node-gyp.js", 0);
  if (c.prebuilt) {
    mkdirSync(resolve(dir, PREBUILT, ".."), { recursive: true });
    if (c.prebuilt === "loads") copyFileSync(CPU_ADDON, join(dir, PREBUILT));
    else writeFileSync(join(dir, PREBUILT), "not a shared library");
  }
  if (c.sourceBuild) {
    mkdirSync(join(dir, "build", "Release"), { recursive: true });
    copyFileSync(CPU_ADDON, join(dir, "build", "Release", "lowrank.node"));
  }
  const bin = join(dir, "bin");
  mkdirSync(bin);
  for (const tool of c.tools ?? []) {
    writeFileSync(join(bin, tool), "#!/bin/sh\nexit 0\n");
    chmodSync(join(bin, tool), 0o755);
  }
  const env: NodeJS.ProcessEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("npm_") && !k.startsWith("LOWRANK_")));
  Object.assign(env, { PATH: bin, CXX: "", CUDACXX: "" }, c.env);
  const r = spawnSync(process.execPath, [join(dir, "scripts/install.mjs")], { cwd: dir, env, encoding: "utf8" });
  const builds = existsSync(log) ? readFileSync(log, "utf8").trim().split("\n") : [];
  return { status: r.status, output: r.stdout + r.stderr, builds };
}

describe("install script", () => {
  it("compiles nothing when the prebuilt addon loads, even with CMake and a compiler there", () => {
    const r = install({ prebuilt: "loads", tools: ["cmake", "c++"] });
    expect(r.status, r.output).toBe(0);
    expect(r.output).toContain(`lowrank: using the prebuilt CPU addon`);
    expect(r.builds).toEqual([]);
  });

  it("builds from source with cmake-js for the CUDA backend (LOWRANK_CUDA=1), without a prebuilt addon, or over a source build", () => {
    const cuda = install({ prebuilt: "loads", tools: ["cmake", "c++"], env: { LOWRANK_CUDA: "1" } });
    expect(cuda.status, cuda.output).toBe(0);
    expect(cuda.output).toContain("LOWRANK_CUDA=1: building the CUDA backend from source");
    expect(cuda.builds).toEqual(["cmake-js compile --out build"]);
    const none = install({ tools: ["cmake"] });
    expect(none.status, none.output).toBe(0);
    expect(none.output).toContain(`no prebuilt addon for ${process.platform}-${process.arch}; building the addon from source`);
    expect(none.builds).toEqual(["cmake-js compile --out build"]);
    // the loader prefers build/ over the prebuilt addon, so an earlier source build is kept current
    const earlier = install({ prebuilt: "loads", sourceBuild: true, tools: ["cmake"] });
    expect(earlier.output).toContain("updating the earlier source build in build/");
    expect(earlier.builds).toEqual(["cmake-js compile --out build"]);
  });

  it("builds the CPU backend with node-gyp when there is a compiler but no CMake, or the CMake build fails", () => {
    const broken = install({ prebuilt: "broken", tools: ["c++"] });
    expect(broken.status, broken.output).toBe(0);
    expect(broken.output).toMatch(/the prebuilt addon \S+ does not load here: .*(invalid ELF header|file too short)/);
    expect(broken.output).toMatch(/node-gyp, CPU backend only \(compiler: \S+\/c\+\+; no CMake on PATH\)/);
    expect(broken.builds).toEqual(["node-gyp rebuild"]);
    const failed = install({ tools: ["cmake", "c++"], cmakeJsFails: true });
    expect(failed.status, failed.output).toBe(0);
    expect(failed.output).toContain("the CMake build failed (above); trying node-gyp");
    expect(failed.builds).toEqual(["cmake-js compile --out build", "node-gyp rebuild"]);
  });

  it("fails saying what to install when nothing can build", () => {
    const r = install({ prebuilt: "broken" });
    expect(r.status).toBe(1);
    expect(r.builds).toEqual([]);
    expect(r.output).toMatch(/does not load here: .*, and nothing here can build one: no CMake and no C\+\+ compiler on PATH\. Install a C\+\+17 compiler \(g\+\+ or clang\+\+; with CMake 3\.18\+ too for the CUDA backend\), then run "npm rebuild lowrank"\./);
    const cuda = install({ prebuilt: "loads", tools: ["c++"], env: { LOWRANK_CUDA: "1" } });
    expect(cuda.status).toBe(1);
    expect(cuda.output).toContain("LOWRANK_CUDA=1 needs CMake 3.18+ on PATH (node-gyp builds the CPU backend only)");
    expect(cuda.builds).toEqual([]);
  });
});
