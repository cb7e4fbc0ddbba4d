// Running the lowrank CLI in a child process, as a user would, on a tiny model that has a real
// tokenizer (test/fixtures/tiny-tokenizer, 400 ids).
import { spawn, type ChildProcess } from "node:child_process";
import { copyFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { build } from "vite";
import { afterAll, beforeAll } from "vitest";
import { Generator, GPT2Config, GPT2LMHeadModel } from "../../lib/index.js";

const ROOT = resolve(import.meta.dirname, "../..");
const TOKENIZER = join(ROOT, "test/fixtures/tiny-tokenizer");

/**
 * Bundles lib/cli/main.ts into one ES module with vite (about a second; node_modules stay
 * external) so a child `node` runs the current sources without a tsc build. The bundle sits one
 * folder below the repository root, where the addon loader looks for build folders.
 * Returns the script path and a cleanup function.
 */
export async function buildCli(): Promise<{ main: string; cleanup: () => void }> {
  const outDir = join(ROOT, `dist-cli-test-${process.pid}`);
  await build({
    configFile: false, logLevel: "silent", root: ROOT,
    build: { ssr: "lib/cli/main.ts", outDir, emptyOutDir: true, minify: false, target: "node20" },
  });
  return { main: join(outDir, "main.js"), cleanup: () => rmSync(outDir, { recursive: true, force: true }) };
}

/** A random-init GPT-2 (vocab 400, 2 layers, 32 wide) saved with the tiny tokenizer's files. */
export function makeTinyModel(dir: string, opts: { nPositions?: number } = {}): void {
  const config = new GPT2Config({ vocabSize: 400, nPositions: opts.nPositions ?? 128, nEmbd: 32, nLayer: 2, nHead: 2, bosTokenId: 0, eosTokenId: 0 });
  const model = new GPT2LMHeadModel(config, { generator: new Generator(1) });
  model.savePretrainedSync(dir);
  model.dispose();
  for (const f of readdirSync(TOKENIZER)) copyFileSync(join(TOKENIZER, f), join(dir, f));
}

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * The environment of a CLI child: this one without npm's variables (the tests may run under npm or
 * npx, which the CLI notices when it prints commands), plus `extra`.
 */
export function cliEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("npm_")));
  // One kernel thread keeps runs comparable across processes and leaves the other core to vitest.
  return { ...env, LOWRANK_NUM_THREADS: "1", ...extra };
}

/** The working directory of CLI children: the repository root. */
export const CLI_CWD = ROOT;

/** Starts `node <main> ...args`; `onStdout` sees the output as it arrives (for killing at the right moment). */
export function startCli(
  main: string, args: readonly string[], onStdout?: (text: string, child: ChildProcess) => void, env: NodeJS.ProcessEnv = {},
): { child: ChildProcess; done: Promise<CliResult> } {
  const child = spawn(process.execPath, [main, ...args], { cwd: ROOT, env: cliEnv(env), stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "", stderr = "";
  child.stdout!.setEncoding("utf8").on("data", (s: string) => {
    stdout += s;
    onStdout?.(stdout, child);
  });
  child.stderr!.setEncoding("utf8").on("data", (s: string) => (stderr += s));
  const done = new Promise<CliResult>((res, rej) => {
    child.on("error", rej);
    child.on("close", (code, signal) => res({ code, signal, stdout, stderr }));
  });
  return { child, done };
}

export function runCli(main: string, args: readonly string[], env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
  return startCli(main, args, undefined, env).done;
}

/** A prompt template that keeps examples short for the 400-id tokenizer. */
export const SHORT_TEMPLATE = "Q: {instruction} {input}\nA: ";

/** The first `n` examples of the demo set (a word-list task). */
export function demoLines(n: number): string {
  return readFileSync(join(ROOT, "data/demo/train.jsonl"), "utf8").split("\n").slice(0, n).join("\n") + "\n";
}

/**
 * For a test file of library training runs: before its tests, a temporary folder with a tiny model
 * (the short template in it) and 24 demo examples; removed after them. Read the paths inside tests.
 */
export function tinyTrainingFolder(prefix: string): { dir: string; model: string; data: string } {
  const paths = { dir: "", model: "", data: "" };
  beforeAll(() => {
    paths.dir = mkdtempSync(join(tmpdir(), prefix));
    paths.model = join(paths.dir, "model");
    makeTinyModel(paths.model);
    writeFileSync(join(paths.model, "template.txt"), SHORT_TEMPLATE);
    paths.data = join(paths.dir, "data.jsonl");
    writeFileSync(paths.data, demoLines(24));
  });
  afterAll(() => rmSync(paths.dir, { recursive: true, force: true }));
  return paths;
}

/**
 * A temporary workspace: the CLI bundle, a tiny model with a tokenizer, 40 demo examples and the
 * short template. Call cleanup() when done.
 */
export async function workspace(prefix: string) {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const cli = await buildCli();
  const model = join(dir, "model");
  makeTinyModel(model);
  const data = join(dir, "data.jsonl");
  writeFileSync(data, demoLines(40));
  const template = join(dir, "template.txt");
  writeFileSync(template, SHORT_TEMPLATE);
  return {
    dir, main: cli.main, model, data, template,
    cleanup: () => {
      cli.cleanup();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
