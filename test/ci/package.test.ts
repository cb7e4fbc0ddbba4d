// What `npm pack` puts in the tarball (package.json "files"): what a user runs and nothing else.
// Read with `npm pack --dry-run --json --ignore-scripts`, so it lists the tree as it is (dist/ from
// the last build); a real pack first runs prepack (npm run build:prebuilt) and prepare (npm run
// build), and .ci/run installs such a tarball on a PATH without CMake or a compiler.
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";

const ROOT = resolve(import.meta.dirname, "../..");
const PREBUILT = `prebuilds/${process.platform}-${process.arch}/lowrank.node`;
/** The packed tarball may not grow past this (the demo model is 3.5 MB of it). */
const MAX_PACKED_BYTES = 4_500_000;

interface Pack { size: number; unpackedSize: number; entryCount: number; files: { path: string }[] }
let pack: Pack;
let paths: string[];
beforeAll(() => {
  const r = spawnSync("npm", ["pack", "--dry-run", "--json", "--ignore-scripts"], { cwd: ROOT, encoding: "utf8" });
  expect(r.status, r.stderr).toBe(0);
  pack = (JSON.parse(r.stdout) as Pack[])[0]!;
  paths = pack.files.map((f) => f.path).sort();
});

describe("npm pack", () => {
  it("holds what the package runs: the compiled module, its bin, the install script, the demo's data, the native sources", () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as {
      main: string; types: string; bin: Record<string, string>; scripts: { install: string };
    };
    const required = [
      "package.json", "README.md", "LICENSE", pkg.main, pkg.types, ...Object.values(pkg.bin),
      pkg.scripts.install.replace(/^node /, ""),
      "CMakeLists.txt", "binding.gyp",
      "data/demo/model/model.safetensors", "data/demo/model/config.json", "data/demo/model/vocab.json",
      "data/demo/model/merges.txt", "data/demo/train.jsonl", "data/demo/eval.jsonl", "data/demo/train.yaml",
    ].map((p) => p.replace(/^\.\//, ""));
    expect(required.filter((p) => !paths.includes(p))).toEqual([]);
    // every native source the builds from source (cmake-js, node-gyp, CUDA) compile
    const native = execFileSync("git", ["ls-files", "native"], { cwd: ROOT, encoding: "utf8" }).trim().split("\n");
    expect(native.length).toBeGreaterThan(50);
    expect(native.filter((p) => !paths.includes(p))).toEqual([]);
    // every compiled module of lib/
    const modules = execFileSync("git", ["ls-files", "lib"], { cwd: ROOT, encoding: "utf8" }).trim().split("\n")
      .filter((p) => p.endsWith(".ts") && !p.endsWith(".d.ts")).map((p) => p.replace(/^lib\//, "dist/").replace(/\.ts$/, ".js"));
    expect(modules.filter((p) => !paths.includes(p))).toEqual([]);
  });

  it("holds the prebuilt addon for this platform when it has been built (npm run build:prebuilt; prepack builds it)", () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { scripts: { prepack: string } };
    expect(pkg.scripts.prepack).toBe("npm run build:prebuilt");
    expect(paths.includes(PREBUILT)).toBe(existsSync(join(ROOT, PREBUILT)));
  });

  it("holds nothing for developers only: no sources, tests, benches, source maps, dev data or scripts", () => {
    const forbidden = [
      /\.map$/, /(?<!\.d)\.ts$/, /^(lib|test|bench|dev|notes|build[^/]*|node_modules|\.ci)\//, /^scripts\/(?!install\.mjs$)/,
      /^data\/demo\/(base\.jsonl|check_learnable\.py|README\.md)$/, /^tsconfig/, /^vitest/, /^ARCHITECTURE\.md$/, /\.py$/,
    ];
    expect(paths.filter((p) => forbidden.some((f) => f.test(p)))).toEqual([]);
    // a compiled module must not point at a source map that is not shipped
    const mapped = paths.filter((p) => p.endsWith(".js") && readFileSync(join(ROOT, p), "utf8").includes("sourceMappingURL"));
    expect(mapped).toEqual([]);
  });

  it(`stays under ${MAX_PACKED_BYTES / 1e6} MB packed`, () => {
    expect(pack.size).toBeLessThanOrEqual(MAX_PACKED_BYTES);
  });
});
