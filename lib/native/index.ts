// Loads the native addon once. Prefers the CUDA build (build/Release/lowrank_cuda.node) and falls
// back to the CPU build with a warning when CUDA cannot be loaded on this host.
// LOWRANK_DEVICE=cpu skips the CUDA build entirely; LOWRANK_BUILD_DIR points at another cmake-js
// output folder (default: build). LOWRANK_EXPECT_CUDA=1 (set by test/gpu/device-run.sh) turns the
// fallback into an error, so a GPU run whose CUDA build is missing or broken fails instead of
// skipping every GPU test.
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

function candidates(): string[] {
  // Relative to the package root, or absolute (resolve, not join: benches run from a compiled copy).
  const release = join(resolve(root, process.env.LOWRANK_BUILD_DIR ?? "build"), "Release");
  const wantCuda = process.env.LOWRANK_DEVICE !== "cpu";
  return [...(wantCuda ? [join(release, "lowrank_cuda.node")] : []), join(release, "lowrank.node")];
}

function load(): { addon: NativeAddon; path: string } {
  checkNativeEnvironment(); // before the addon reads the variables with atoi and strcmp
  const paths = candidates().filter((p) => existsSync(p));
  const expectCuda = process.env.LOWRANK_EXPECT_CUDA === "1";
  if (expectCuda && !paths[0]?.endsWith("lowrank_cuda.node")) {
    throw new Error(
      `lowrank: LOWRANK_EXPECT_CUDA=1 but there is no CUDA build to load ` +
        `(${process.env.LOWRANK_DEVICE === "cpu" ? "LOWRANK_DEVICE=cpu skips it" : `no lowrank_cuda.node in ${dirname(candidates().at(-1)!)}`}). ` +
        `Build it with "LOWRANK_CUDA=1 npm run build:native" on a host with the CUDA toolkit.`,
    );
  }
  if (paths.length === 0) {
    throw new NativeAddonError(
      `the native addon is not built (looked for ${candidates().join(", ")}). ` +
        `Run "npm install" (or "npm run build:native") in ${root}; it needs CMake and a C++17 compiler ` +
        `("npm run build:gyp" builds the CPU backend with node-gyp instead).`,
    );
  }
  if (process.platform !== "linux" && process.platform !== "darwin" && process.platform !== "win32") {
    throw new NativeAddonError(`unsupported platform ${process.platform}`);
  }
  let lastError: unknown;
  for (const path of paths) {
    try {
      const addon = require(path) as NativeAddon;
      // LOWRANK_PROFILE=1: every native call is timed (lib/profile.ts); otherwise the addon as is.
      return { addon: PROFILING ? profileAddon(addon) : addon, path };
    } catch (err) {
      lastError = err;
      if (path.endsWith("lowrank_cuda.node")) {
        if (expectCuda) {
          throw new Error(`lowrank: LOWRANK_EXPECT_CUDA=1 but the CUDA build at ${path} failed to load: ${(err as Error).message}`);
        }
        process.emitWarning(
          `lowrank: the CUDA build could not be loaded (${(err as Error).message.split("\n")[0]}); ` +
            `falling back to the CPU backend. Check the NVIDIA driver and the CUDA/cuBLAS libraries, ` +
            `or set LOWRANK_DEVICE=cpu to silence this.`,
          "LowrankWarning",
        );
      }
    }
  }
  throw new NativeAddonError(
    `the native addon at ${paths[paths.length - 1]} failed to load: ${(lastError as Error).message}. ` +
      `It may be built for another platform or Node ABI: rebuild with "npm run build:native".`,
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
