#!/usr/bin/env node
// package.json "install" (npm install, npm ci, npm rebuild): makes sure lowrank has a native addon
// that loads, compiling only when it must.
//  1. The prebuilt CPU addon shipped in the package, prebuilds/<platform>-<arch>/lowrank.node,
//     loads on this host: nothing is compiled. Unless LOWRANK_CUDA=1 (build the CUDA backend from
//     source), LOWRANK_BUILD_FROM_SOURCE=1, or build/ holds an earlier source build, which the loader
//     (lib/native/index.ts) prefers and which is therefore brought up to date.
//  2. Otherwise a build from source into build/: cmake-js (CMakeLists.txt: the CPU backend, plus
//     CUDA where nvcc and cuBLAS are found) when CMake is on PATH; node-gyp (binding.gyp: the CPU
//     backend) when only a C++ compiler is.
//  3. Neither can build: the install fails, saying what to install.
import { spawnSync } from "node:child_process";
import { accessSync, constants, existsSync } from "node:fs";
import { createRequire } from "node:module";
import { delimiter, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(import.meta.url);
const say = (line) => console.log(`lowrank: ${line}`);
const fail = (line) => {
  console.error(`lowrank: ${line}`);
  process.exit(1);
};

/** The full path of an executable on PATH, or undefined. */
function onPath(name) {
  for (const dir of (process.env.PATH ?? "").split(delimiter).filter(Boolean)) {
    for (const ext of process.platform === "win32" ? [".exe", ".cmd", ""] : [""]) {
      try {
        accessSync(join(dir, name + ext), constants.X_OK);
        return join(dir, name + ext);
      } catch {}
    }
  }
  return undefined;
}

/** Runs node on `script` with `args` in the package root, output shown; true when it succeeded. */
function runNode(script, args) {
  return spawnSync(process.execPath, [script, ...args], { cwd: root, stdio: "inherit" }).status === 0;
}

// The loader's path for the prebuilt addon (prebuiltPath in lib/native/index.ts).
const prebuilt = join(root, "prebuilds", `${process.platform}-${process.arch}`, "lowrank.node");
let prebuiltError;
if (!existsSync(prebuilt)) prebuiltError = `no prebuilt addon for ${process.platform}-${process.arch}`;
else {
  try {
    require(prebuilt);
  } catch (err) {
    prebuiltError = `the prebuilt addon ${prebuilt} does not load here: ${err.message.split("\n")[0]}`;
  }
}
const nvcc = process.env.CUDACXX || onPath("nvcc") || (existsSync("/usr/local/cuda/bin/nvcc") ? "/usr/local/cuda/bin/nvcc" : undefined);
const sourceBuild = existsSync(join(root, "build", "Release", "lowrank.node"));
const reason =
  prebuiltError ??
  (process.env.LOWRANK_CUDA === "1" ? "LOWRANK_CUDA=1: building the CUDA backend from source"
    : process.env.LOWRANK_BUILD_FROM_SOURCE === "1" ? "LOWRANK_BUILD_FROM_SOURCE=1"
    : sourceBuild ? "updating the earlier source build in build/"
    : undefined);
if (reason === undefined) {
  say(`using the prebuilt CPU addon ${prebuilt}`);
  if (nvcc && process.env.LOWRANK_CUDA !== "0") say(`nvcc found (${nvcc}): "LOWRANK_CUDA=1 npm rebuild lowrank" builds the CUDA backend`);
  process.exit(0);
}
say(`${reason}; building the addon from source`);

const cmake = onPath("cmake");
const cxx = process.env.CXX || onPath("c++") || onPath("g++") || onPath("clang++");
if (cmake) {
  say(`cmake-js (CMake: ${cmake})`);
  if (runNode(join(dirname(require.resolve("cmake-js/package.json")), "bin", "cmake-js"), ["compile", "--out", "build"])) process.exit(0);
  if (process.env.LOWRANK_CUDA === "1") fail(`LOWRANK_CUDA=1 but the CMake build failed (above); it needs nvcc and cuBLAS from the CUDA toolkit`);
  if (!cxx) fail(`the CMake build failed (above) and there is no C++ compiler for node-gyp; install g++ or clang++ (C++17), then "npm rebuild lowrank"`);
  say("the CMake build failed (above); trying node-gyp");
} else if (process.env.LOWRANK_CUDA === "1") {
  fail(`LOWRANK_CUDA=1 needs CMake 3.18+ on PATH (node-gyp builds the CPU backend only); install CMake, then "LOWRANK_CUDA=1 npm rebuild lowrank"`);
}
if (cxx) {
  // npm hands its own node-gyp to install scripts (npm_config_node_gyp); a checkout has it in devDependencies.
  let nodeGyp = process.env.npm_config_node_gyp;
  try {
    nodeGyp ||= require.resolve("node-gyp/bin/node-gyp.js");
  } catch {
    fail(`node-gyp is not available to build with ${cxx}: install it ("npm install -g node-gyp") or CMake 3.18+, then "npm rebuild lowrank"`);
  }
  say(`node-gyp, CPU backend only (compiler: ${cxx}${cmake ? "" : "; no CMake on PATH"})`);
  if (runNode(nodeGyp, ["rebuild"])) process.exit(0);
  fail(`the node-gyp build failed (above)${prebuiltError ? ` and ${prebuiltError}` : ""}`);
}
fail(
  `${prebuiltError ?? reason}, and nothing here can build one: no CMake and no C++ compiler on PATH. ` +
    `Install a C++17 compiler (g++ or clang++; with CMake 3.18+ too for the CUDA backend), then run "npm rebuild lowrank".`,
);
