// `npm test` runs every test file, the GPU ones included: on a host without CUDA each test that
// needs a GPU is reported as skipped, with a test whose title gives the reason, rather than left
// out unseen.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { hasCuda, noCudaReason } from "./helpers.js";

const ROOT = resolve(import.meta.dirname, "..");
const VITEST = join(ROOT, "node_modules", ".bin", "vitest");
const gpuFiles = readdirSync(join(ROOT, "test/gpu")).filter((f) => f.endsWith(".test.ts")).sort();

describe("npm test", () => {
  it("collects every file under test/gpu", () => {
    const script = (JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { scripts: Record<string, string> }).scripts.test!;
    const args = script.match(/'[^']*'|\S+/g)!.map((a) => a.replace(/^'|'$/g, ""));
    expect(args.slice(0, 2)).toEqual(["vitest", "run"]);
    const listed = JSON.parse(execFileSync(VITEST, ["list", ...args.slice(2), "--filesOnly", "--json"], { cwd: ROOT, encoding: "utf8" })) as { file: string }[];
    const files = listed.map((f) => f.file);
    for (const f of gpuFiles) expect(files, f).toContain(join(ROOT, "test/gpu", f));
  });

  it.skipIf(hasCuda)("without CUDA, the GPU tests are skipped and each file says why", () => {
    const out = mkdtempSync(join(tmpdir(), "lowrank-suite-"));
    try {
      const report = join(out, "gpu.json");
      execFileSync(VITEST, ["run", "test/gpu", "--reporter=json", `--outputFile=${report}`], { cwd: ROOT, stdio: "ignore" });
      const results = (JSON.parse(readFileSync(report, "utf8")) as { testResults: { name: string; assertionResults: { status: string; title: string }[] }[] }).testResults;
      expect(results.map((r) => r.name.split("/").pop()).sort()).toEqual(gpuFiles);
      for (const r of results) {
        // Checks that need no GPU (the twin table's CPU side) run and pass; everything else is skipped.
        expect(r.assertionResults.filter((a) => a.status !== "skipped" && a.status !== "passed"), r.name).toEqual([]);
        expect(r.assertionResults.filter((a) => a.status === "skipped").map((a) => a.title), r.name).toContain(noCudaReason);
      }
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });
});
