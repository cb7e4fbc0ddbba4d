// Loads the native addon once, from the first of these that loads:
//   1. <LOWRANK_BUILD_DIR or build>/Release/lowrank_cuda.node: CPU + CUDA, built from source (falls
//      back with a warning when CUDA cannot be loaded on this host; LOWRANK_DEVICE=cpu skips it);
//   2. <LOWRANK_BUILD_DIR or build>/Release/lowrank.node: the CPU build from source;
//   3. prebuilds/<platform>-<arch>/lowrank.node: the portable CPU build shipped in the package
//      (npm run build:prebuilt), node-gyp-build's layout. Not tried when LOWRANK_BUILD_DIR is set:
//      a folder named on purpose is the one meant, and a silent fallback would hide its absence.
// LOWRANK_EXPECT_CUDA=1 (set by test/gpu/device-run.sh) turns the CUDA fallback into an error, so
// a GPU run whose CUDA build is missing or broken fails instead of skipping every GPU test.
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { checkNativeEnvironment } from "../env.js";
import { PROFILING, profileAddon } from "../profile.js";

export type * from "./addon.js";
import type { NativeAddon } from "./addon.js";

const here = dirname(fileURLToPath(import.meta.url));
/**
 * The package root, where package.json and the build folder are: the nearest folder above this
 * file that holds a package.json (this file runs from lib/native/, dist/native/ or a bundle one
 * level below the root; none of the folders in between has a package.json).
 */
export const PACKAGE_ROOT = findPackageRoot(here);

function findPackageRoot(start: string): string {
  for (let dir = start; ; dir = dirname(dir)) {
    if (existsSync(join(dir, "package.json"))) return dir;
    if (dirname(dir) === dir) return join(start, "../..");
  }
}
const root = PACKAGE_ROOT;
const require = createRequire(import.meta.url);

/**
 * The addon is missing or cannot be loaded on this host. Only what computes needs it: the CLI
 * prints this message without a stack trace, and commands that read shapes alone still run.
 */
export class NativeAddonError extends Error {}

/** Where the addon may be, in the order tried (see the header). */
function candidates(): string[] {
  // Relative to the package root, or absolute (resolve, not join: benches run from a compiled copy).
  const release = join(resolve(root, process.env.LOWRANK_BUILD_DIR ?? "build"), "Release");
  const wantCuda = process.env.LOWRANK_DEVICE !== "cpu";
  return [
    ...(wantCuda ? [join(release, "lowrank_cuda.node")] : []),
    join(release, "lowrank.node"),
    ...(process.env.LOWRANK_BUILD_DIR === undefined ? [prebuiltPath()] : []),
  ];
}

/** The prebuilt addon for this platform (scripts/install.mjs checks the same path before building). */
export function prebuiltPath(): string {
  return join(root, "prebuilds", `${process.platform}-${process.arch}`, "lowrank.node");
}

const isCuda = (path: string) => path.endsWith("lowrank_cuda.node");

function load(): { addon: NativeAddon; path: string } {
  checkNativeEnvironment(); // before the addon reads the variables with atoi and strcmp
  const all = candidates();
  const expectCuda = process.env.LOWRANK_EXPECT_CUDA === "1";
  if (expectCuda && process.env.LOWRANK_DEVICE === "cpu") {
    throw new Error(`lowrank: LOWRANK_EXPECT_CUDA=1 but LOWRANK_DEVICE=cpu skips the CUDA build`);
  }
  const tried: string[] = [];
  for (const [k, path] of all.entries()) {
    if (!existsSync(path)) {
      if (expectCuda && isCuda(path)) {
        throw new Error(
          `lowrank: LOWRANK_EXPECT_CUDA=1 but there is no CUDA build to load (no lowrank_cuda.node in ${dirname(path)}). ` +
            `Build it with "LOWRANK_CUDA=1 npm run build:native" on a host with the CUDA toolkit.`,
        );
      }
      tried.push(`${path} (not there)`);
      continue;
    }
    let addon: NativeAddon;
    try {
      addon = require(path) as NativeAddon;
    } catch (err) {
      const why = (err as Error).message.split("\n")[0];
      tried.push(`${path} (${why})`);
      if (isCuda(path)) {
        if (expectCuda) throw new Error(`lowrank: LOWRANK_EXPECT_CUDA=1 but the CUDA build at ${path} failed to load: ${why}`);
        process.emitWarning(
          `lowrank: the CUDA build could not be loaded (${why}); falling back to the CPU backend. ` +
            `Check the NVIDIA driver and the CUDA/cuBLAS libraries, or set LOWRANK_DEVICE=cpu to silence this.`,
          "LowrankWarning",
        );
      } else if (k + 1 < all.length) {
        // a broken source build would otherwise be replaced by the prebuilt addon without a word
        process.emitWarning(`lowrank: ${path} could not be loaded (${why}); trying ${all[k + 1]}`, "LowrankWarning");
      }
      continue;
    }
    // LOWRANK_PROFILE: every native call is timed (lib/profile.ts); otherwise the addon as is.
    return { addon: PROFILING ? profileAddon(addon) : addon, path };
  }
  throw new NativeAddonError(
    `no native addon could be loaded; tried ${tried.join("; ")}. ` +
      `Run "npm rebuild lowrank" (in the repository: "npm run build:native") to build it from source: ` +
      `it needs CMake 3.18+ and a C++17 compiler, or a C++17 compiler alone (node-gyp then builds the CPU backend).`,
  );
}

let loaded: { addon: NativeAddon; path: string } | undefined;

/** The addon, loaded on first use. */
export function native(): NativeAddon {
  loaded ??= load();
  return loaded.addon;
}

/** Path of the addon file that was loaded. */
export function nativePath(): string {
  native();
  return loaded!.path;
}
