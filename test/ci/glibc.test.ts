// The check .ci/run applies to the prebuilt addon (scripts/check-glibc.mjs), shown to fail on an
// addon that links libstdc++ dynamically: the locally built one in build/Release, whose GLIBCXX
// and CXXABI versions and libstdc++.so.6 it must name. (The prebuilt addon itself is checked by
// npm run build:prebuilt and by .ci/run.) And the README states the versions the check enforces.
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { nativePath } from "../../lib/native/index.js";

const ROOT = resolve(import.meta.dirname, "../..");

describe.runIf(process.platform === "linux")("glibc check of the prebuilt addon", () => {
  it("names what a dynamically linked C++ runtime needs, and fails", () => {
    const addon = nativePath();
    const r = spawnSync(process.execPath, [join(ROOT, "scripts/check-glibc.mjs"), addon], { encoding: "utf8" });
    expect(r.status, r.stdout + r.stderr).toBe(1);
    expect(r.stdout).toContain(`${addon}: needs GLIBC_`);
    expect(r.stdout).toMatch(/problem: needs GLIBCXX_3\.4\.\d+ \(libstdc\+\+ must be linked in: CMake option LOWRANK_PORTABLE\)/);
    expect(r.stdout).toMatch(/problem: links libstdc\+\+\.so\.6, which is neither glibc nor libgcc_s/);
  });
});

describe("the README's install section", () => {
  it("states the glibc and libgcc_s versions scripts/check-glibc.mjs enforces", () => {
    const script = readFileSync(join(ROOT, "scripts/check-glibc.mjs"), "utf8");
    const glibc = /export const GLIBC_BASELINE = "([\d.]+)"/.exec(script)![1]!;
    const gcc = /export const GCC_BASELINE = "([\d.]+)"/.exec(script)![1]!;
    const readme = readFileSync(join(ROOT, "README.md"), "utf8").replace(/\s+/g, " ");
    expect(readme).toContain(`**glibc ${glibc} or newer**`);
    expect(readme).toContain(`\`GLIBC_${glibc}\``);
    expect(readme).toContain(`\`GCC_${gcc}\``);
  });
});
