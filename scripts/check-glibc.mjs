#!/usr/bin/env node
// What a Linux addon needs from the host's C and C++ runtimes, read with binutils (objdump -T for
// the versioned symbols, readelf -d for the libraries), checked against what the prebuilt binary
// promises (README, "Install"): glibc GLIBC_BASELINE or newer, libgcc_s.so.1 (every glibc system
// has it) with symbols no newer than GCC_BASELINE, and no libstdc++: no GLIBCXX/CXXABI symbol.
//   node scripts/check-glibc.mjs prebuilds/linux-x64/lowrank.node   (exit 1 on a problem)
import { execFileSync } from "node:child_process";
import { pathToFileURL } from "node:url";

/** The oldest glibc the prebuilt linux-x64 addon loads on; the README states the same version. */
export const GLIBC_BASELINE = "2.18";
/** The newest libgcc_s symbol version allowed (GCC 4.2, 2007). */
export const GCC_BASELINE = "4.2.0";

/** Only these shared libraries may be needed: glibc's own and libgcc_s. */
const ALLOWED_LIBS = /^(libc|libm|libpthread|libdl|librt|ld-linux-x86-64|libgcc_s)\.so\.\d+$/;

const newer = (a, b) => {
  const [x, y] = [a.split(".").map(Number), b.split(".").map(Number)];
  for (let i = 0; i < Math.max(x.length, y.length); i++) if ((x[i] ?? 0) !== (y[i] ?? 0)) return (x[i] ?? 0) > (y[i] ?? 0);
  return false;
};

/**
 * The symbol versions (name -> highest version per library family) and shared libraries `file`
 * needs, and the problems found against the baseline.
 */
export function checkGlibc(file) {
  const symbols = execFileSync("objdump", ["-T", file], { encoding: "utf8" });
  const versions = new Map(); // "GLIBC" -> ["2.2.5", ...]
  for (const m of symbols.matchAll(/\(([A-Z_]+?)_(\d+(?:\.\d+)*)\)/g)) {
    const list = versions.get(m[1]) ?? [];
    if (!list.includes(m[2])) list.push(m[2]);
    versions.set(m[1], list);
  }
  const needed = [...execFileSync("readelf", ["-d", file], { encoding: "utf8" }).matchAll(/\(NEEDED\)\s+Shared library: \[(.+?)\]/g)].map((m) => m[1]);
  const problems = [];
  for (const [family, list] of versions) {
    list.sort((a, b) => (newer(a, b) ? 1 : newer(b, a) ? -1 : 0));
    const baseline = { GLIBC: GLIBC_BASELINE, GCC: GCC_BASELINE }[family];
    if (baseline === undefined) problems.push(`needs ${family}_${list.at(-1)} (libstdc++ must be linked in: CMake option LOWRANK_PORTABLE)`);
    else if (newer(list.at(-1), baseline)) problems.push(`needs ${family}_${list.at(-1)}, newer than the baseline ${family}_${baseline}`);
  }
  for (const lib of needed) if (!ALLOWED_LIBS.test(lib)) problems.push(`links ${lib}, which is neither glibc nor libgcc_s`);
  return { file, glibc: versions.get("GLIBC")?.at(-1), versions: Object.fromEntries(versions), needed, problems };
}

/** One line per fact, then the problems. */
export function formatRequirements(c) {
  const families = Object.entries(c.versions).map(([f, l]) => `${f} ${l.join(", ")}`).join("; ");
  return [
    `${c.file}: needs GLIBC_${c.glibc} (baseline GLIBC_${GLIBC_BASELINE}, GCC_${GCC_BASELINE}); versions: ${families}; libraries: ${c.needed.join(", ")}`,
    ...c.problems.map((p) => `  problem: ${p}`),
  ].join("\n");
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  if (process.argv.length !== 3) {
    console.error("usage: node scripts/check-glibc.mjs <addon.node>");
    process.exit(2);
  }
  const c = checkGlibc(process.argv[2]);
  console.log(formatRequirements(c));
  process.exit(c.problems.length > 0 ? 1 : 0);
}
