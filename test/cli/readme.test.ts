// Every lowrank command the README shows runs as written against the bundled model and data, in
// the README's order (later commands use what earlier ones wrote, e.g. runs/demo). `npx lowrank`
// and `npm run demo` are the package's bin and demo script: here they run the CLI bundled from
// the current sources (`node <bundle>`). Two liberties taken: LOWRANK_MAX_STEPS (a documented
// setting) caps the CLI's training steps so the commands run in about a minute, and the chat
// model the README names from the Hugging Face cache is test/fixtures/chat-tiny, in a temporary
// cache (HF_HUB_CACHE) under that name. The TypeScript
// examples run as written too (importing the sources for "lowrank"), and print what their
// comments say.
import { spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildCli, cliEnv } from "./helpers.js";

const ROOT = resolve(import.meta.dirname, "../..");
const MAX_STEPS = "30";
/** The Hugging Face model the README's chat example names; chat-tiny stands in for it. */
const CHAT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct";

/** Splits a command line into words as a POSIX shell would for the quoting the README uses. */
export function shellWords(line: string): string[] {
  const words: string[] = [];
  const re = /"((?:[^"\\]|\\.)*)"|'([^']*)'|([^\s"']+)|(\s+)/g;
  let word: string | null = null;
  for (const m of line.matchAll(re)) {
    if (m[4] !== undefined) {
      if (word !== null) words.push(word);
      word = null;
    } else {
      word = (word ?? "") + (m[1] !== undefined ? m[1].replace(/\\(.)/g, "$1") : (m[2] ?? m[3]!));
    }
  }
  if (word !== null) words.push(word);
  return words;
}

/**
 * The README's commands that start `npx lowrank <something>` or `npm run demo`: indented and
 * fenced code lines (a `\` continues a line, `#` starts a comment, `&&` chains commands) and
 * inline code spans; spans with placeholders (`<command>`) and bare `npx lowrank` are prose.
 */
export function readmeCommands(text: string): string[] {
  const found: string[] = [];
  const take = (cmd: string) => {
    for (const part of cmd.split("&&").map((p) => p.trim())) {
      if (/^(npx lowrank \S|npm run demo\b)/.test(part) && !/[<>[\]|]/.test(part)) found.push(part);
    }
  };
  let fenced = false;
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    let line = lines[i]!;
    if (/^```/.test(line)) {
      fenced = !fenced;
      continue;
    }
    const code = fenced || /^ {4}\S/.test(line);
    if (code) {
      while (line.trimEnd().endsWith("\\") && i + 1 < lines.length) line = line.trimEnd().slice(0, -1) + " " + lines[++i]!.trim();
      take(line.replace(/\s#\s.*$/, "").trim());
    } else {
      for (const m of line.matchAll(/`([^`]+)`/g)) take(m[1]!);
    }
  }
  return [...new Set(found)];
}

let cli: Awaited<ReturnType<typeof buildCli>>;
let cwd: string;
beforeAll(async () => {
  cli = await buildCli();
  cwd = mkdtempSync(join(tmpdir(), "lowrank-readme-"));
  symlinkSync(join(ROOT, "data"), join(cwd, "data"));
  const repo = join(cwd, "hf-cache", `models--${CHAT_MODEL.replace("/", "--")}`), hash = "0".repeat(40);
  mkdirSync(join(repo, "refs"), { recursive: true });
  writeFileSync(join(repo, "refs", "main"), hash);
  cpSync(join(ROOT, "test/fixtures/chat-tiny"), join(repo, "snapshots", hash), { recursive: true });
});
afterAll(() => {
  cli?.cleanup();
  if (cwd) rmSync(cwd, { recursive: true, force: true });
});

/** The README's ```ts blocks that import "lowrank" (indented ones inside list items included). */
export function readmeSnippets(text: string): string[] {
  return [...text.matchAll(/^( *)```ts\n([\s\S]*?)^\1```/gm)]
    .map((m) => m[2]!.split("\n").map((l) => l.slice(m[1]!.length)).join("\n"))
    .filter((code) => code.includes('from "lowrank"'));
}

describe("the README's TypeScript examples", () => {
  it("run as written against the bundled model and print what their comments say", { timeout: 600_000 }, async () => {
    const snippets = readmeSnippets(readFileSync(join(ROOT, "README.md"), "utf8"));
    expect(snippets.length).toBeGreaterThanOrEqual(3);
    const dir = mkdtempSync(join(ROOT, ".readme-snippets-"));
    const logged: string[] = [];
    const log = console.log;
    const home = process.cwd();
    try {
      console.log = (...args: unknown[]) => logged.push(args.map(String).join(" "));
      process.chdir(cwd); // the examples' relative paths: data/demo/... and their outputs
      for (const [i, code] of snippets.entries()) {
        const file = join(dir, `snippet-${i}.ts`);
        writeFileSync(file, code.replaceAll('from "lowrank"', `from ${JSON.stringify(join(ROOT, "lib/index.ts"))}`));
        await import(file);
      }
    } finally {
      process.chdir(home);
      console.log = log;
      rmSync(dir, { recursive: true, force: true });
    }
    // what the comments promise
    const text = readFileSync(join(ROOT, "README.md"), "utf8");
    for (const m of text.matchAll(/printTrainableParameters\(\); \/\/ (.*)$/gm)) expect(logged, logged.join("\n")).toContain(m[1]);
    expect(logged).toContainEqual(expect.stringMatching(/^completed \d+\.\d+ runs\/lib$/));
    expect(logged).toContain('"head" eos'); // generateText's answer and stop reason
    expect(logged).toContainEqual(expect.stringMatching(/^stopped runs\/abortable\/checkpoints\/step-\d+$/)); // fineTune aborted by its signal
    for (const path of ["runs/lib/adapter_model.safetensors", "runs/code/adapter/adapter_config.json", "runs/code/merged/model.safetensors", "runs/trainer/checkpoints/step-300"]) {
      expect(existsSync(join(cwd, path)), path).toBe(true);
    }
  });
});

describe("the README's commands", () => {
  const commands = readmeCommands(readFileSync(join(ROOT, "README.md"), "utf8"));

  it("are found: the demo, info, help and every documented command", () => {
    for (const sub of ["train", "merge", "generate", "params", "svd", "sweep", "info"]) {
      expect(commands.some((c) => c.startsWith(`npx lowrank ${sub} `) || c === `npx lowrank ${sub}`), sub).toBe(true);
    }
    expect(commands).toContain("npm run demo");
    expect(shellWords(`a "b c;d" 'e f' g\\ h"i"`)).toEqual(["a", "b c;d", "e f", "g\\", "hi"]);
  });

  it("run as written against the bundled model, each exiting 0", { timeout: 600_000 }, () => {
    for (const command of commands) {
      const words = shellWords(command);
      const args = words[0] === "npx" ? words.slice(2) : ["demo", ...words.slice(3).filter((w, i) => !(i === 0 && w === "--"))];
      const env = cliEnv({ LOWRANK_MAX_STEPS: MAX_STEPS, HF_HUB_CACHE: join(cwd, "hf-cache") });
      const r = spawnSync(process.execPath, [cli.main, ...args], { cwd, env, encoding: "utf8", timeout: 300_000 });
      expect(r.status, `${command}\n${r.stderr}`).toBe(0);
      expect(r.stdout.length, command).toBeGreaterThan(0);
      // without --template, train and generate use the template the model ships, and say so
      // (the chat model's commands: its chat template)
      const chat = /--model (HuggingFaceTB|runs\/chat)/.test(command);
      if (/^npx lowrank (train|generate) /.test(command) && !chat) expect(r.stdout + r.stderr).toContain("prompt template: data/demo/model/template.txt (shipped with the model");
      if (/^npx lowrank (train|generate) /.test(command) && chat) expect(r.stdout + r.stderr).toMatch(/chat template: .*chat_template\.jinja \(shipped with the model/);
    }
    // what the commands wrote, where the README says
    for (const path of [
      "demo-output/adapter/adapter_model.safetensors", "runs/demo/adapter_model.safetensors", "runs/demo/metrics.jsonl", "runs/demo-merged/model.safetensors",
      "runs/sweep/summary.json", "runs/sweep/loss-curves.png", "runs/chat/adapter_model.safetensors", "runs/chat-merged/model.safetensors", "runs/chat-merged/chat_template.jinja",
    ]) {
      expect(existsSync(join(cwd, path)), path).toBe(true);
    }
    // svd --out PREFIX: one chart pair per module type
    expect(readdirSync(join(cwd, "runs/demo")).filter((f) => /^svd-spectrum.*\.svg$/.test(f)).length).toBeGreaterThan(0);
    expect(readdirSync(join(cwd, "runs")).filter((f) => /^svd-merged-spectrum.*\.svg$/.test(f)).length).toBeGreaterThan(0);
  });
});
