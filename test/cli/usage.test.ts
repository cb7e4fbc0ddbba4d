// The command line's edges: what works without the native addon, and the exit code 2 for every
// kind of bad command line (README: 0 done, 1 error, 2 bad command line).
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildCli } from "./helpers.js";

const ROOT = resolve(import.meta.dirname, "../..");
let cli: { main: string; cleanup: () => void };
let tmp: string;
beforeAll(async () => {
  cli = await buildCli();
  tmp = mkdtempSync(join(tmpdir(), "lowrank-usage-"));
});
afterAll(() => {
  cli?.cleanup();
  rmSync(tmp, { recursive: true, force: true });
});

function run(args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, [cli.main, ...args], { cwd: ROOT, encoding: "utf8", env: { ...process.env, LOWRANK_NUM_THREADS: "1", ...env } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe("without the native addon", () => {
  // LOWRANK_BUILD_DIR (README) points the loader at a build folder: an empty one has no addon, one
  // with a broken file has an addon that cannot be loaded.
  const missing = () => ({ LOWRANK_BUILD_DIR: join(tmp, "no-build") });
  const broken = () => {
    const dir = join(tmp, "broken-build");
    mkdirSync(join(dir, "Release"), { recursive: true });
    writeFileSync(join(dir, "Release", "lowrank.node"), "not a shared library");
    return { LOWRANK_BUILD_DIR: dir, LOWRANK_DEVICE: "cpu" };
  };

  it("--help, --version and the shape-only params still work", () => {
    const env = missing();
    const help = run(["--help"], env);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^Usage: lowrank/);
    const version = run(["--version"], env);
    expect(version.code).toBe(0);
    expect(version.stdout.trim()).toBe((JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string }).version);
    const params = run(["params", "--config", "124m", "--ranks", "8", "--target", "c_attn", "--json"], env);
    expect(params.stderr).toBe("");
    expect(params.code).toBe(0);
    expect((JSON.parse(params.stdout) as { rows: { trainable: number }[] }).rows[0]!.trainable).toBe(294_912);
    for (const command of ["train", "merge", "generate", "svd", "sweep", "demo", "info"]) expect(run([command, "--help"], env).code).toBe(0);
  });

  it.each([
    ["missing", missing, /^lowrank (\w+): the native addon is not built \(looked for .*no-build.*\)\. Run "npm install"/],
    ["broken", broken, /^lowrank (\w+): the native addon at .*broken-build.*lowrank\.node failed to load: .*rebuild with "npm run build:native"/],
  ])("commands that compute say the addon is %s in one line and exit 1", (_, env, message) => {
    for (const args of [["info"], ["demo", "--steps", "1"], ["train", "--model", "m", "--data", "d.jsonl", "--out", join(tmp, "out")]]) {
      const r = run(args, env());
      expect(r.code).toBe(1);
      expect(r.stdout).toBe("");
      const lines = r.stderr.trimEnd().split("\n");
      expect(lines).toHaveLength(1); // no stack trace
      expect(lines[0]).toMatch(message);
      expect(message.exec(lines[0]!)![1]).toBe(args[0]);
    }
  });
});

describe("a bad command line exits 2 and points at --help", () => {
  it.each([
    [[], /^Usage: lowrank/],
    [["foo"], /^error: unknown command 'foo'/],
    [["--bogus"], /^error: unknown option '--bogus'/],
    [["params", "--bogus"], /^error: unknown option '--bogus'/],
    [["params", "--ranks"], /^error: option '--ranks <list>' argument missing/],
    [["params", "--ranks", "0"], /^error: option '--ranks <list>' argument '0' is invalid/],
    [["info", "--bogus"], /^error: unknown option '--bogus'/],
    [["help", "foo"], /^Usage: lowrank/],
  ])("%j", (args, message) => {
    const r = run(args);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe("");
    expect(r.stderr).toMatch(message);
    if (args.length > 0 && args[0] !== "help") expect(r.stderr.trimEnd().split("\n").pop()).toMatch(/^\(run "lowrank (params )?--help" for usage\)$/);
  });
});
