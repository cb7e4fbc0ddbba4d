// --config FILE: a command's flags kept in a YAML or JSON file, as TRL, axolotl and mlx-lm users
// keep their runs. The keys are the command's long flags without the dashes, exactly as typed on
// the command line (kebab-case: `batch-size`, not `batchSize`), and the values are the flags'
// values typed (numbers, true/false, lists for the comma-separated flags). The valid keys come
// from the commander Command's own options, so a new flag is a new key with nothing else to edit.
// Flags typed on the command line win over the file, wherever --config stands among them.
import { existsSync, readFileSync, statSync } from "node:fs";
import { extname } from "node:path";
import { InvalidArgumentError, type Command, type Option } from "commander";
import { isMap, isNode, isScalar, LineCounter, parseDocument } from "yaml";
import { EXIT, UsageError } from "./common.js";

/** What commander records as the source of a value read from the config file. */
export const CONFIG_SOURCE = "config";

/** Flags whose value is a comma-separated list (`--ranks <list>`, `--target <names>`): a YAML/JSON list is joined with commas. */
const LIST_PLACEHOLDER = /<(list|names)>$/;

/** Options a config file cannot set: the file itself, and commander's own --help and --version. */
const NOT_KEYS = new Set(["--config", "--help", "--version"]);

/** One `key: value` of the file; `line` is 1-based, for YAML. */
interface ConfigEntry {
  key: string;
  value: unknown;
  line?: number;
}

/**
 * Adds `--config <file>` to `cmd`. Its values are applied when commander meets the flag, before
 * it checks required and conflicting options, so a required flag may come from the file; values
 * of flags already typed are kept, and flags typed after it replace the file's.
 */
export function withConfigFile(cmd: Command): Command {
  cmd.option("--config <file>", "read flags from a YAML (.yaml, .yml) or JSON (.json) file: keys are the long flag names (e.g. batch-size: 8); flags typed on the command line win");
  cmd.on("option:config", (file: string) => {
    try {
      applyConfigFile(cmd, file);
    } catch (err) {
      if (!(err instanceof UsageError)) throw err;
      cmd.error(`lowrank ${cmd.name()}: ${err.message}`, { exitCode: EXIT.usage, code: "lowrank.config" });
    }
  });
  return cmd;
}

/** The keys a config file may hold for `cmd`: its long flags without the dashes. */
export function configKeys(cmd: Command): string[] {
  return settable(cmd).map((o) => o.long!.slice(2));
}

function settable(cmd: Command): Option[] {
  return cmd.options.filter((o) => o.long !== undefined && !o.negate && !NOT_KEYS.has(o.long));
}

/**
 * Sets `cmd`'s option values from `file` (source "config"), except those typed on the command line.
 * A file applied after another (--config twice) replaces the earlier file's values.
 * Every value goes through the flag's own parser, so it is checked exactly as the typed flag is.
 * Throws UsageError naming the file (and line) and the key.
 */
export function applyConfigFile(cmd: Command, file: string): void {
  const entries = readConfigFile(file);
  const options = settable(cmd);
  const byKey = new Map(options.map((o) => [o.long!.slice(2), o]));
  for (const { key, value, line } of entries) {
    const where = line === undefined ? file : `${file}:${line}`;
    const option = byKey.get(key);
    if (option === undefined) throw new UsageError(`${where}: ${unknownKey(key, [...byKey.keys()], cmd.name())}`);
    // checked even when a typed flag overrides it: the file stays valid for the next run
    const parsed = parseValue(option, value, `${where}: ${key}`);
    const attribute = option.attributeName();
    if (parsed !== undefined && cmd.getOptionValueSource(attribute) !== "cli") cmd.setOptionValueWithSource(attribute, parsed, CONFIG_SOURCE);
  }
}

/** The file's entries in order; only a mapping of flag names to scalars or lists is accepted. */
function readConfigFile(file: string): ConfigEntry[] {
  const ext = extname(file).toLowerCase();
  if (![".yaml", ".yml", ".json"].includes(ext)) throw new UsageError(`--config ${file}: expected a .yaml, .yml or .json file`);
  if (!existsSync(file)) throw new UsageError(`--config ${file}: no such file`);
  if (statSync(file).isDirectory()) throw new UsageError(`--config ${file}: a folder, not a file`);
  const text = readFileSync(file, "utf8");
  return ext === ".json" ? jsonEntries(file, text) : yamlEntries(file, text);
}

const NOT_A_MAPPING = 'expected flag names and values, one "key: value" per line (e.g. "lr: 0.002")';

function yamlEntries(file: string, text: string): ConfigEntry[] {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false });
  const [error] = doc.errors;
  if (error) throw new UsageError(`${file}:${lines.linePos(error.pos[0]).line}: ${error.message}`);
  if (doc.contents === null) throw new UsageError(`${file}: the file is empty; ${NOT_A_MAPPING}`);
  if (!isMap(doc.contents)) throw new UsageError(`${file}: ${NOT_A_MAPPING}`);
  return doc.contents.items.map((pair) => {
    const line = isScalar(pair.key) && pair.key.range ? lines.linePos(pair.key.range[0]).line : undefined;
    const key = isScalar(pair.key) ? String(pair.key.value) : String(pair.key);
    const value: unknown = isNode(pair.value) ? pair.value.toJS(doc) : null;
    return { key, value, line };
  });
}

function jsonEntries(file: string, text: string): ConfigEntry[] {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (err) {
    // V8 names the offset ("... in JSON at position 14"): file:line like the YAML errors
    const at = /at position (\d+)/.exec((err as Error).message);
    const line = at ? text.slice(0, Number(at[1])).split("\n").length : undefined;
    throw new UsageError(`${line === undefined ? file : `${file}:${line}`}: invalid JSON: ${(err as Error).message}`);
  }
  if (typeof data !== "object" || data === null || Array.isArray(data)) throw new UsageError(`${file}: ${NOT_A_MAPPING.replace('"key: value" per line', '"key": value pair in an object')}`);
  return Object.entries(data).map(([key, value]) => ({ key, value }));
}

/**
 * A file value as the flag's value: true/false for a flag without a value (false: as if absent),
 * a string, number or (for list flags) list for a flag with one, passed to the flag's parser as
 * the text it would have been typed as. `what` is "FILE:LINE: key" for errors.
 */
function parseValue(option: Option, value: unknown, what: string): unknown {
  const isList = LIST_PLACEHOLDER.test(option.flags);
  if (option.isBoolean() || option.optional) {
    if (value === false) return undefined;
    if (value === true) return option.isBoolean() ? true : (option.presetArg ?? true);
    if (option.isBoolean()) throw new UsageError(`${what}: expected true or false, got ${show(value)}`);
  }
  let text: string;
  if (typeof value === "string") text = value;
  else if (typeof value === "number" && Number.isFinite(value)) text = String(value);
  else if (isList && Array.isArray(value) && value.length > 0 && value.every((v) => typeof v === "string" || typeof v === "number")) text = value.join(",");
  else {
    const expected = isList ? "a value or a list of values" : option.optional ? "true, false or a value" : "a value (a string or number)";
    throw new UsageError(`${what}: expected ${expected}, got ${show(value)}`);
  }
  if (!option.parseArg) return text;
  try {
    return option.parseArg(text, undefined as unknown);
  } catch (err) {
    if (err instanceof InvalidArgumentError) throw new UsageError(`${what}: ${show(value)} is invalid: ${err.message}`);
    throw err;
  }
}

function show(value: unknown): string {
  if (value === null) return "no value";
  if (Array.isArray(value)) return `a list ${JSON.stringify(value)}`;
  if (typeof value === "object") return `a mapping ${JSON.stringify(value)}`;
  return JSON.stringify(value);
}

/**
 * Why `key` is not a key: camelCase, snake_case or a leading "--" gets the right spelling,
 * a near miss a "did you mean", and always the list of valid keys.
 */
function unknownKey(key: string, valid: readonly string[], command: string): string {
  const list = `valid keys for lowrank ${command}: ${valid.join(", ")}`;
  if (key === "config") return `a config file cannot name another one (no "config" key); ${list}`;
  const kebab = key.replace(/^-+/, "").replace(/([a-z0-9])([A-Z])/g, "$1-$2").replace(/_/g, "-").toLowerCase();
  if (kebab !== key && valid.includes(kebab)) return `unknown key "${key}": keys are the flag names without "--", in kebab-case: write "${kebab}" (--${kebab})`;
  const near = valid
    .map((k) => ({ k, d: editDistance(kebab, k) }))
    .filter(({ k, d }) => d <= Math.max(1, Math.floor(k.length / 3)))
    .sort((a, b) => a.d - b.d)[0];
  return `unknown key "${key}"${near ? `; did you mean "${near.k}"?` : ""} (${list})`;
}

/** Edit distance counting a swap of two neighbours as one edit (optimal string alignment): "stpes" is 1 from "steps". */
function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      d[i]![j] = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i]![j] = Math.min(d[i]![j]!, d[i - 2]![j - 2]! + 1);
    }
  }
  return d[a.length]![b.length]!;
}
