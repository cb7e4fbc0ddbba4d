// What the lowrank commands share: exit codes, one-line errors, option parsers, and loading a
// model, tokenizer or prompt template from what the user typed, with messages that name the flag.
import { accessSync, constants, existsSync, readFileSync, statSync } from "node:fs";
import { extname, join, resolve, sep } from "node:path";
import { Command, CommanderError, InvalidArgumentError } from "commander";
import { existingAncestor, explainFsError, fsReason, isFsError, type FsError } from "../io/fs-errors.js";
import { AutoModelForCausalLM, type CausalLM } from "../models/auto.js";
import { AutoTokenizer, type AnyTokenizer } from "../models/auto-tokenizer.js";
import { readChatTemplateFile } from "../models/chat-template.js";
import { isRepoId, resolveModelDir } from "../models/hub.js";
import { PROFILE_GPU, PROFILING, profileEntries, profileReport } from "../profile.js";
import { cudaAvailable, parseDevice } from "../tensor/device.js";
import type { Generator } from "../tensor/random.js";
import { ALPACA_TEMPLATE, readTemplateFile, resolveTemplate, type TemplateSpec } from "../train/template.js";

/** Exit codes of every command: 0 ok, 1 runtime error, 2 usage error, 130 interrupted (Ctrl-C). */
export const EXIT = { ok: 0, error: 1, usage: 2, interrupted: 130 } as const;

/** A wrong command line (bad flag value or combination): exit code 2. */
export class UsageError extends Error {}

/**
 * A command with lowrank's conventions: commander's own errors (unknown command or option, missing
 * value, no command at all) exit with the usage code 2 rather than commander's 1, and point at
 * --help. `help` is how to ask for it (default `lowrank NAME --help`).
 */
export function newCommand(name: string, help = `lowrank ${name} --help`): Command {
  return new Command(name)
    .showHelpAfterError(`(run "${help}" for usage)`)
    .exitOverride((err: CommanderError) => {
      process.exit(err.exitCode === 0 ? EXIT.ok : EXIT.usage);
    });
}

/**
 * Wraps a command's action: errors print as one line `lowrank <name>: <message>` on stderr and set
 * the exit code (2 for UsageError, 1 otherwise). The process then ends on its own, so stdout is
 * flushed first.
 */
export function runAction<A extends unknown[]>(name: string, fn: (...args: A) => Promise<number | void>): (...args: A) => Promise<void> {
  return async (...args: A) => {
    try {
      process.exitCode = (await fn(...args)) ?? EXIT.ok;
    } catch (err) {
      const usage = err instanceof UsageError;
      const command = args.at(-1);
      const message = isFsError(err) && command instanceof Command ? fsErrorMessage(err, command) : err instanceof Error ? err.message : String(err);
      console.error(`lowrank ${name}: ${message}`);
      if (usage) console.error(`(run "lowrank ${name} --help" for usage)`);
      process.exitCode = usage ? EXIT.usage : EXIT.error;
    } finally {
      // LOWRANK_PROFILE: where this run's native time went, on stderr so stdout stays the command's output.
      if (PROFILING && profileEntries().length > 0) {
        const what = PROFILE_GPU !== null ? "GPU time (CUDA events) of the native calls" : "wall-clock time in native calls";
        console.error(`\nprofile of lowrank ${name} (LOWRANK_PROFILE): ${what}, the whole run\n${profileReport(1, 0.002, "run")}`);
      }
    }
  };
}

/**
 * A file system error in words, with the flag whose path it concerns and the fix: "--out runs/x:
 * cannot create the folder runs/x: runs is a file, not a folder (ENOTDIR); choose another --out".
 */
function fsErrorMessage(err: FsError, command: Command): string {
  const path = err.path === undefined ? undefined : resolve(err.path);
  // node's own "ENOTDIR: not a directory, mkdir 'x'" is explained; a message lowrank wrote is kept
  const text = err.message.startsWith(`${err.code}:`) ? explainFsError(err) : err.message;
  const opts = command.opts() as Record<string, unknown>;
  // the flag whose value is the path, a folder that holds it, or a path inside it (mkdir -p fails at an ancestor)
  const related = (value: string) => path !== undefined && (path === resolve(value) || path.startsWith(resolve(value) + sep) || resolve(value).startsWith(path + sep));
  const flag = command.options
    .map((o) => ({ o, value: opts[o.attributeName()] }))
    .filter((f): f is { o: (typeof command.options)[number]; value: string } => typeof f.value === "string" && related(f.value))
    .sort((a, b) => b.value.length - a.value.length)[0];
  return flag ? `${flag.o.long} ${flag.value}: ${text}; choose another ${flag.o.long}` : text;
}

/**
 * Refuses an output folder that cannot be created or written, before any work is done: `dir`
 * must be a folder or not exist yet under a folder that can be written.
 */
export function checkOutputDir(flag: string, dir: string): void {
  const fail = (code: string, path = dir) => new Error(`${flag} ${dir}: cannot write there: ${fsReason(code, path)} (${code}); choose another ${flag}`);
  if (existsSync(dir)) {
    if (!statSync(dir).isDirectory()) throw fail("EEXIST");
  }
  const folder = existsSync(dir) ? dir : existingAncestor(dir);
  if (folder === undefined) return;
  if (!statSync(folder).isDirectory()) throw fail("ENOTDIR");
  try {
    accessSync(folder, constants.W_OK);
  } catch (err) {
    if (isFsError(err)) throw fail(err.code, folder);
    throw err;
  }
}

// ---- option parsers (commander reports their errors with the flag and the value) --------------

export function intAtLeast(min: number): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!/^[+]?\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < min) throw new InvalidArgumentError(`expected an integer >= ${min}.`);
    return n;
  };
}

export function numberIn(lo: number, hi: number, opts: { loOpen?: boolean; hiOpen?: boolean } = {}): (value: string) => number {
  const range = `${opts.loOpen ? "(" : "["}${lo}, ${hi}${opts.hiOpen ? ")" : "]"}`;
  return (value) => {
    const n = Number(value);
    const ok = value.trim() !== "" && Number.isFinite(n) && (opts.loOpen ? n > lo : n >= lo) && (opts.hiOpen ? n < hi : n <= hi);
    if (!ok) throw new InvalidArgumentError(`expected a number in ${range}.`);
    return n;
  };
}

export function oneOf<T extends string>(choices: readonly T[]): (value: string) => T {
  return (value) => {
    if (!(choices as readonly string[]).includes(value)) throw new InvalidArgumentError(`expected one of ${choices.join(", ")}.`);
    return value as T;
  };
}

/** The help line of every command's --device option. */
export const DEVICE_HELP = "cpu, cuda or cuda:N, the GPU of index N (default: cuda when a GPU is usable)";

/** --device's parser: "cpu", "cuda" or "cuda:N" (whether that device exists is resolveDevice's check). */
export function deviceName(value: string): string {
  if (!/^(cpu|cuda(:\d+)?)$/.test(value)) throw new InvalidArgumentError("expected cpu, cuda or cuda:N (N a GPU index, from 0).");
  return value;
}

// ---- resolving what the user named ------------------------------------------------------------

/**
 * "cpu", "cuda" or "cuda:N" (default: cuda when a GPU is usable, else cpu); refuses a GPU this
 * build or host does not have, naming how many there are.
 */
export function resolveDevice(spec: string | undefined): string {
  if (spec === undefined) return cudaAvailable() ? "cuda" : "cpu";
  if (spec === "cpu") return spec;
  if (!cudaAvailable()) {
    throw new UsageError(`--device ${spec}: no usable GPU (this build is CPU-only, or no NVIDIA GPU/driver is present); use --device cpu`);
  }
  try {
    parseDevice(spec, "--device");
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  return spec;
}

function requireDir(flag: string, dir: string): void {
  if (!existsSync(dir)) throw new Error(`${flag} ${dir}: no such directory`);
  if (!statSync(dir).isDirectory()) throw new Error(`${flag} ${dir}: not a directory`);
}

/**
 * The folder --model names: a folder, or a Hugging Face model name ("Qwen/Qwen2.5-0.5B") already in
 * the local Hugging Face cache (its snapshot folder; the error says where it looked).
 */
export function resolveModelFlag(spec: string, flag = "--model"): string {
  if (existsSync(spec) || !isRepoId(spec)) {
    requireDir(flag, spec);
    return spec;
  }
  return resolveModelDir(spec, flag);
}

/**
 * A causal LM checkpoint folder (config.json + safetensors) of any model type AutoModelForCausalLM
 * loads (gpt2, llama, mistral, qwen2, qwen3), with errors that name --model. `dir` is a folder
 * (resolveModelFlag gives it).
 */
export async function loadModel(dir: string, opts: { device: string; generator?: Generator; dtype?: "float32" | "bfloat16" }): Promise<CausalLM> {
  requireDir("--model", dir);
  try {
    return await AutoModelForCausalLM.fromPretrained(dir, { device: opts.device, generator: opts.generator, dtype: opts.dtype });
  } catch (err) {
    throw new Error(`--model ${dir}: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * The tokenizer stored with the model, as AutoTokenizer picks it: GPT-2's own BPE for GPT-2
 * folders, tokenizer.json through PreTrainedTokenizer for the others.
 */
export function loadTokenizer(dir: string, model: CausalLM): AnyTokenizer {
  // A folder with tokenizer.model alone gets AutoTokenizer's own advice (convert it to tokenizer.json).
  if (!["tokenizer.json", "vocab.json", "tokenizer.model"].some((f) => existsSync(join(dir, f)))) {
    throw new Error(`--model ${dir}: no tokenizer (tokenizer.json, or vocab.json + merges.txt); copy the base model's tokenizer files into it`);
  }
  let tokenizer: AnyTokenizer;
  try {
    tokenizer = AutoTokenizer.fromPretrained(dir);
  } catch (err) {
    throw new Error(`--model ${dir}: ${(err as Error).message}`, { cause: err });
  }
  if (tokenizer.vocabSize > model.config.vocabSize) {
    throw new Error(`--model ${dir}: the tokenizer has ${tokenizer.vocabSize} ids but the model only ${model.config.vocabSize} embeddings; the files belong to different models`);
  }
  return tokenizer;
}

/** --chat-template FILE: a .jinja file, or a JSON file with a "chat_template" field; its text. */
export function loadChatTemplate(path: string): string {
  if (!existsSync(path)) throw new UsageError(`--chat-template ${path}: no such file`);
  try {
    return readChatTemplateFile(path);
  } catch (err) {
    throw new UsageError(`--chat-template ${path}: ${(err as Error).message}`);
  }
}

/**
 * --template: "alpaca" (Stanford Alpaca's prompts), or a file: JSON {"withInput", "withoutInput"}
 * (.json) or a text file used for every example, with {instruction} and {input} placeholders.
 */
export function loadTemplate(spec: string): TemplateSpec {
  if (spec === "alpaca") return ALPACA_TEMPLATE;
  if (!existsSync(spec)) throw new UsageError(`--template ${spec}: not "alpaca" and no such file`);
  try {
    const template = readTemplateFile(spec);
    resolveTemplate(template);
    return template;
  } catch (err) {
    throw new UsageError(`--template ${spec}: ${(err as Error).message}`);
  }
}

/** `'a b'` for arguments that need quoting in a shell, for the resume hint. */
export function shellQuote(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`;
}
