#!/usr/bin/env node
// npm run build:prebuilt (and prepack, so a packed tarball always carries a binary of the current
// sources): builds the CPU addon portably (CMake option LOWRANK_PORTABLE: the C++ runtime linked
// in, no CUDA) in build-prebuilt/ and copies it to prebuilds/<platform>-<arch>/lowrank.node, where
// the loader (lib/native/index.ts) and the install script (scripts/install.mjs) look for it. On
// Linux it then checks the glibc symbol versions the binary needs (scripts/check-glibc.mjs).
// The build is incremental: a second run with unchanged sources only re-links nothing.
import { spawnSync } from "node:child_process";
import { copyFileSync, mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { checkGlibc, formatRequirements } from "./check-glibc.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const cmakeJs = join(dirname(createRequire(import.meta.url).resolve("cmake-js/package.json")), "bin/cmake-js");
const outDir = join(root, "build-prebuilt");
const run = spawnSync(process.execPath, [cmakeJs, "compile", "--out", outDir, "--CDLOWRANK_PORTABLE=ON"], {
  cwd: root, stdio: "inherit", env: { ...process.env, LOWRANK_CUDA: "0" },
});
if (run.status !== 0) process.exit(run.status ?? 1);

const target = join(root, "prebuilds", `${process.platform}-${process.arch}`, "lowrank.node");
mkdirSync(dirname(target), { recursive: true });
copyFileSync(join(outDir, "Release", "lowrank.node"), target);
console.log(`prebuilt addon: ${relative(root, target)}`);
if (process.platform === "linux") {
  const check = checkGlibc(target);
  console.log(formatRequirements(check));
  if (check.problems.length > 0) process.exit(1);
}
