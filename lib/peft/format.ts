// PEFT's on-disk adapter format, as PEFT 0.21 reads and writes it: file and folder names, the
// tensor keys of adapter_model.safetensors, byte-exact adapter_config.json text (Python's
// json.dumps), and the print_trainable_parameters line. Python PEFT must load what we save and
// we what it saves, so every rule here mirrors PEFT's code (see
// /work/shared/reference/peft-lora-reference.md §2 and §3) rather than what would be natural in JS.
import { join } from "node:path";

/** The adapter's configuration file (`peft/utils/constants.py::CONFIG_NAME`). */
export const ADAPTER_CONFIG_NAME = "adapter_config.json";
/** The adapter's weights, safetensors (`SAFETENSORS_WEIGHTS_NAME`). */
export const ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors";
/** The pickled-weights file PEFT writes with safe_serialization=False; lowrank cannot read pickles. */
export const ADAPTER_PICKLE_WEIGHTS_NAME = "adapter_model.bin";
/** The adapter name PEFT uses when none is given; it is saved at the top of the folder. */
export const DEFAULT_ADAPTER_NAME = "default";
/** Every tensor key in a LoRA adapter file starts with this (PeftModel → LoraModel → base model). */
export const PEFT_KEY_PREFIX = "base_model.model.";

/**
 * Throws unless `name` can name an adapter. PEFT keeps adapters in torch ModuleDicts, whose keys
 * cannot contain "."; and the name becomes a sub-folder when saving, so path separators and
 * relative segments are refused too.
 */
export function validateAdapterName(name: string): void {
  if (typeof name !== "string" || name.length === 0) {
    throw new Error(`Adapter name must be a non-empty string; got ${JSON.stringify(name)}.`);
  }
  if (name.includes(".") || name.includes("/") || name.includes("\\")) {
    throw new Error(
      `Adapter name ${JSON.stringify(name)} contains "." or a path separator. PEFT stores adapters in ` +
        `ModuleDicts (no "." allowed) and saves a non-default adapter in <dir>/<name>/; pick a plain name ` +
        `such as ${JSON.stringify(name.replace(/[./\\]+/g, "_"))}.`,
    );
  }
}

/**
 * Where an adapter lives inside a save folder: PEFT's save_pretrained writes the "default"
 * adapter directly into `saveDir` and any other adapter into `saveDir/<name>/`, and
 * from_pretrained(..., subfolder) reads it back from there.
 */
export function adapterPaths(
  saveDir: string,
  adapterName: string = DEFAULT_ADAPTER_NAME,
): { dir: string; config: string; weights: string } {
  validateAdapterName(adapterName);
  const dir = adapterName === DEFAULT_ADAPTER_NAME ? saveDir : join(saveDir, adapterName);
  return { dir, config: join(dir, ADAPTER_CONFIG_NAME), weights: join(dir, ADAPTER_WEIGHTS_NAME) };
}

// ---------------------------------------------------------------------------------------------
// Tensor keys
// ---------------------------------------------------------------------------------------------

/**
 * The tensors a LoRA layer saves. Linear/Conv1D layers hold lora_A and lora_B as nn.Linear
 * modules (keys end in .weight / .bias); Embedding layers hold bare parameters (no suffix); DoRA's
 * magnitude is saved without its in-memory ".weight" (PEFT strips it for format stability).
 */
export type LoraTensorName =
  | "lora_A"
  | "lora_B"
  | "lora_B.bias"
  | "lora_embedding_A"
  | "lora_embedding_B"
  | "lora_magnitude_vector";

const SAVED_SUFFIX: Record<LoraTensorName, string> = {
  lora_A: "lora_A.weight",
  lora_B: "lora_B.weight",
  "lora_B.bias": "lora_B.bias",
  lora_embedding_A: "lora_embedding_A",
  lora_embedding_B: "lora_embedding_B",
  lora_magnitude_vector: "lora_magnitude_vector",
};

/** The parameter segments that start a LoRA tensor's part of a key. */
const LORA_SEGMENTS = new Set(["lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B", "lora_magnitude_vector"]);

function checkModulePath(modulePath: string, what: string): void {
  if (modulePath.length === 0 || modulePath.split(".").some((s) => s.length === 0)) {
    throw new Error(`${what}: module path ${JSON.stringify(modulePath)} is empty or has an empty segment.`);
  }
}

/**
 * The key of one LoRA tensor in adapter_model.safetensors, e.g.
 * adapterStateKey("transformer.h.0.attn.c_attn", "lora_A") →
 * "base_model.model.transformer.h.0.attn.c_attn.lora_A.weight". The adapter name is never part of
 * a saved key (PEFT strips it on save and re-inserts it on load).
 */
export function adapterStateKey(modulePath: string, tensor: LoraTensorName): string {
  checkModulePath(modulePath, "adapterStateKey");
  const suffix = SAVED_SUFFIX[tensor];
  if (suffix === undefined) {
    throw new Error(
      `adapterStateKey: unknown LoRA tensor ${JSON.stringify(tensor)}; expected one of ` +
        `${Object.keys(SAVED_SUFFIX).join(", ")}.`,
    );
  }
  return `${PEFT_KEY_PREFIX}${modulePath}.${suffix}`;
}

/** A parsed adapter-file key. */
export type ParsedAdapterKey =
  | {
      kind: "lora";
      /** The wrapped module, relative to the base model, e.g. "transformer.h.0.attn.c_attn". */
      modulePath: string;
      tensor: LoraTensorName;
      /** Set when the key carried an adapter name (`lora_A.default.weight`), as raw state dicts do. */
      adapterName?: string;
    }
  | {
      /**
       * A non-LoRA tensor PEFT also saves: biases (bias="all" / "lora_only"), modules_to_save
       * copies, or full embedding matrices (save_embedding_layers).
       */
      kind: "base";
      /** The key without the prefix, as written, e.g. "transformer.wte.base_layer.weight". */
      path: string;
      /** The same parameter in the unwrapped base model (".base_layer" segments removed). */
      baseParam: string;
    };

/**
 * Parses a key of adapter_model.safetensors. Also accepts keys that still contain an adapter name
 * (`…lora_A.default.weight`, `…lora_embedding_A.default`, `…lora_magnitude_vector.default.weight`),
 * which PEFT never saves but which appear when a model's state dict is saved by hand; PEFT itself
 * loads those only under the adapter name they carry.
 */
export function parseAdapterStateKey(key: string): ParsedAdapterKey {
  if (!key.startsWith(PEFT_KEY_PREFIX)) {
    throw new Error(
      `Adapter key ${JSON.stringify(key)} does not start with "${PEFT_KEY_PREFIX}", the prefix PEFT gives every ` +
        `tensor of a LoRA adapter. This file was not saved by PEFT's save_pretrained (a raw state dict or a ` +
        `loralib checkpoint?); re-save it with PEFT, or add the prefix to its keys.`,
    );
  }
  const rest = key.slice(PEFT_KEY_PREFIX.length);
  const segments = rest.split(".");
  if (segments.some((s) => s.length === 0)) {
    throw new Error(`Adapter key ${JSON.stringify(key)} has an empty path segment.`);
  }
  // The LoRA part starts at the last LoRA parameter segment: module names never contain one,
  // while nothing after the LoRA part may contain another.
  let at = -1;
  for (let i = segments.length - 1; i >= 0; i--) {
    if (LORA_SEGMENTS.has(segments[i]!)) {
      at = i;
      break;
    }
  }
  if (at === -1) {
    const stray = segments.find((s) => s.startsWith("lora_"));
    if (stray !== undefined) {
      throw new Error(
        `Adapter key ${JSON.stringify(key)} has the LoRA-like segment "${stray}", which is not one of ` +
          `${[...LORA_SEGMENTS].join(", ")}. It may come from another PEFT method or a newer LoRA variant ` +
          `that lowrank does not implement.`,
      );
    }
    return { kind: "base", path: rest, baseParam: segments.filter((s) => s !== "base_layer").join(".") };
  }
  if (at === 0) {
    throw new Error(`Adapter key ${JSON.stringify(key)} has no module path before "${segments[0]}".`);
  }
  const modulePath = segments.slice(0, at).join(".");
  const head = segments[at]!;
  const tail = segments.slice(at + 1);
  const parsed = parseLoraTail(head, tail);
  if (parsed === undefined) {
    const expected =
      head === "lora_A" || head === "lora_B"
        ? `"${head}.weight"${head === "lora_B" ? ' or "lora_B.bias"' : ""} (optionally "${head}.<adapter>.weight")`
        : head === "lora_magnitude_vector"
          ? `"lora_magnitude_vector" (optionally "lora_magnitude_vector.<adapter>.weight")`
          : `"${head}" (optionally "${head}.<adapter>")`;
    throw new Error(
      `Adapter key ${JSON.stringify(key)} ends in "${[head, ...tail].join(".")}", which is not a LoRA tensor ` +
        `PEFT writes; expected ${expected}.`,
    );
  }
  return { kind: "lora", modulePath, ...parsed };
}

function parseLoraTail(
  head: string,
  tail: string[],
): { tensor: LoraTensorName; adapterName?: string } | undefined {
  const named = (tensor: LoraTensorName, adapterName: string | undefined) =>
    adapterName === undefined ? { tensor } : { tensor, adapterName };
  switch (head) {
    case "lora_A":
    case "lora_B": {
      // lora_X.weight | lora_X.<name>.weight (and .bias for lora_B, present with lora_bias=True)
      const last = tail[tail.length - 1];
      if (tail.length < 1 || tail.length > 2) return undefined;
      if (last === "weight") return named(head, tail.length === 2 ? tail[0] : undefined);
      if (last === "bias" && head === "lora_B") return named("lora_B.bias", tail.length === 2 ? tail[0] : undefined);
      return undefined;
    }
    case "lora_embedding_A":
    case "lora_embedding_B":
      // bare parameters: lora_embedding_X | lora_embedding_X.<name>
      if (tail.length === 0) return named(head, undefined);
      if (tail.length === 1) return named(head, tail[0]);
      return undefined;
    case "lora_magnitude_vector":
      // saved: lora_magnitude_vector; in memory: lora_magnitude_vector.<name>.weight (a DoraLayer
      // since PEFT 0.12) or lora_magnitude_vector.<name> (the older ParameterDict)
      if (tail.length === 0) return named(head, undefined);
      if (tail.length === 1) return named(head, tail[0]);
      if (tail.length === 2 && tail[1] === "weight") return named(head, tail[0]);
      return undefined;
    default:
      return undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// Python's json.dumps, byte for byte
// ---------------------------------------------------------------------------------------------

/**
 * Marks a number that Python holds as a float, so it is written as one ("0.0", "1e-05") even
 * when its value is integral. Plain JS numbers are written as ints when integral.
 */
export class PyFloat {
  constructor(readonly value: number) {}
}

/** A value json.dumps can write: JSON values, with PyFloat for Python floats. */
export type PyJson = null | boolean | number | string | PyFloat | readonly PyJson[] | { readonly [key: string]: PyJson };

/**
 * `repr(float)` as json.dumps writes it: the shortest digits that round-trip (JS and Python
 * agree on those), but Python's layout: fixed notation with a ".0" for 1e-4 <= |x| < 1e16,
 * otherwise "1e-05" / "1.5e+16" (two exponent digits at least). NaN and ±Infinity are written as
 * json.dumps does by default (allow_nan=True).
 */
export function pythonFloatRepr(x: number): string {
  if (Number.isNaN(x)) return "NaN";
  if (x === Infinity) return "Infinity";
  if (x === -Infinity) return "-Infinity";
  const sign = x < 0 || Object.is(x, -0) ? "-" : "";
  if (x === 0) return `${sign}0.0`;
  const [mantissa, expText] = Math.abs(x).toExponential().split("e") as [string, string];
  const digits = mantissa.replace(".", "");
  const exp = Number(expText);
  if (exp < -4 || exp >= 16) {
    const m = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    const e = Math.abs(exp).toString().padStart(2, "0");
    return `${sign}${m}e${exp < 0 ? "-" : "+"}${e}`;
  }
  if (exp < 0) return `${sign}0.${"0".repeat(-exp - 1)}${digits}`;
  const intPart = digits.slice(0, exp + 1).padEnd(exp + 1, "0");
  const frac = digits.slice(exp + 1);
  return `${sign}${intPart}.${frac.length > 0 ? frac : "0"}`;
}

/**
 * A JSON string literal as json.dumps writes it with ensure_ascii=True (the default): every
 * character outside printable ASCII becomes \uXXXX (UTF-16 units, so astral characters become
 * surrogate pairs), with the short forms \" \\ \n \r \t \b \f.
 */
export function pythonJsonString(s: string): string {
  let out = '"';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    const ch = s[i]!;
    if (ch === '"') out += '\\"';
    else if (ch === "\\") out += "\\\\";
    else if (ch === "\n") out += "\\n";
    else if (ch === "\r") out += "\\r";
    else if (ch === "\t") out += "\\t";
    else if (ch === "\b") out += "\\b";
    else if (ch === "\f") out += "\\f";
    else if (c < 0x20 || c > 0x7e) out += `\\u${c.toString(16).padStart(4, "0")}`;
    else out += ch;
  }
  return out + '"';
}

/** Python compares str by code point; JS's default sort compares UTF-16 units. */
function compareCodePoints(a: string, b: string): number {
  const x = [...a], y = [...b];
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    const d = x[i]!.codePointAt(0)! - y[i]!.codePointAt(0)!;
    if (d !== 0) return d;
  }
  return x.length - y.length;
}

/**
 * `json.dumps(value, indent=2, sort_keys=True)`, the way PEFT writes adapter_config.json
 * (no trailing newline). Integral JS numbers are written as Python ints, others and PyFloat as
 * Python floats.
 */
export function pythonJsonDumps(value: PyJson, indent = 2): string {
  const write = (v: PyJson, level: number): string => {
    if (v === null) return "null";
    if (v === true) return "true";
    if (v === false) return "false";
    if (typeof v === "string") return pythonJsonString(v);
    if (v instanceof PyFloat) return pythonFloatRepr(v.value);
    if (typeof v === "number") {
      // BigInt keeps every digit of large integers, which Number#toString would put in e-notation
      return Number.isInteger(v) ? BigInt(v).toString() : pythonFloatRepr(v);
    }
    const inner = " ".repeat(indent * (level + 1));
    const outer = " ".repeat(indent * level);
    if (Array.isArray(v)) {
      if (v.length === 0) return "[]";
      return `[\n${v.map((x) => inner + write(x, level + 1)).join(",\n")}\n${outer}]`;
    }
    const obj = v as { readonly [key: string]: PyJson };
    const keys = Object.keys(obj).sort(compareCodePoints);
    if (keys.length === 0) return "{}";
    return `{\n${keys.map((k) => `${inner}${pythonJsonString(k)}: ${write(obj[k]!, level + 1)}`).join(",\n")}\n${outer}}`;
  };
  return write(value, 0);
}

// ---------------------------------------------------------------------------------------------
// print_trainable_parameters
// ---------------------------------------------------------------------------------------------

/** `f"{n:,d}"`: an integer with comma thousands separators. */
export function formatThousands(n: number): string {
  if (!Number.isSafeInteger(n)) throw new Error(`formatThousands: ${n} is not a safe integer.`);
  return n.toString().replace(/\B(?=(\d{3})+(?!\d))/g, ",");
}

/**
 * `f"{x:.{digits}f}"`: Python rounds the exact binary value of x to `digits` decimals, ties to
 * even. Number#toFixed also rounds the exact value but sends ties up (1/32 = 0.03125 → "0.0313",
 * Python "0.0312"), so the rounding is done here exactly with BigInt.
 */
export function formatFixed(x: number, digits: number): string {
  if (!Number.isInteger(digits) || digits < 0 || digits > 100) {
    throw new Error(`formatFixed: digits must be an integer in [0, 100]; got ${digits}.`);
  }
  if (Number.isNaN(x)) return "nan";
  if (!Number.isFinite(x)) return x > 0 ? "inf" : "-inf";
  const sign = x < 0 || Object.is(x, -0) ? "-" : "";
  // |x| = mant * 2^exp exactly, from the IEEE-754 fields
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, Math.abs(x));
  const bits = view.getBigUint64(0);
  const biased = Number((bits >> 52n) & 0x7ffn);
  const fraction = bits & ((1n << 52n) - 1n);
  const mant = biased === 0 ? fraction : fraction | (1n << 52n);
  const exp = (biased === 0 ? 1 : biased) - 1075;
  const scaled = mant * 10n ** BigInt(digits);
  let q: bigint;
  if (exp >= 0) {
    q = scaled << BigInt(exp);
  } else {
    const den = 1n << BigInt(-exp);
    q = scaled / den;
    const twice = 2n * (scaled % den);
    if (twice > den || (twice === den && q % 2n === 1n)) q += 1n;
  }
  const s = q.toString().padStart(digits + 1, "0");
  return digits === 0 ? `${sign}${s}` : `${sign}${s.slice(0, -digits)}.${s.slice(-digits)}`;
}

/**
 * PEFT's print_trainable_parameters line (peft_model.py, `.4f` since v0.11):
 * `trainable params: 294,912 || all params: 124,734,720 || trainable%: 0.2364`.
 * `all` counts every parameter, LoRA included. Python computes 100*t/a from exact ints with one
 * correctly rounded division, which IEEE division reproduces while 100*t stays below 2^53.
 */
export function formatTrainableParameters(trainable: number, all: number): string {
  if (!Number.isSafeInteger(trainable) || !Number.isSafeInteger(all) || trainable < 0 || all < 0) {
    throw new Error(
      `formatTrainableParameters: counts must be non-negative integers; got trainable=${trainable}, all=${all}.`,
    );
  }
  if (all === 0) {
    throw new Error("formatTrainableParameters: the model has no parameters (all=0), so no percentage exists.");
  }
  if (trainable > all) {
    throw new Error(
      `formatTrainableParameters: trainable=${trainable} exceeds all=${all}; "all" must include the trainable ` +
        `parameters (PEFT counts LoRA parameters in both).`,
    );
  }
  if (!Number.isSafeInteger(100 * trainable)) {
    throw new Error(`formatTrainableParameters: trainable=${trainable} is too large to compute 100*t/a exactly.`);
  }
  return (
    `trainable params: ${formatThousands(trainable)} || all params: ${formatThousands(all)} || ` +
    `trainable%: ${formatFixed((100 * trainable) / all, 4)}`
  );
}

// ---------------------------------------------------------------------------------------------
// Python regular expressions
// ---------------------------------------------------------------------------------------------

/** A Python `re` pattern translated to JS: the source (to embed in a larger pattern) and its flags. */
export interface TranslatedPattern {
  source: string;
  /** JS flags from a leading inline-flag group such as "(?i)"; "" when there is none. */
  flags: string;
}

/**
 * Translates a Python `re` pattern (as adapter_config.json stores them: target_modules,
 * exclude_modules, rank_pattern keys, layers_pattern, modules_to_save) into JS RegExp syntax.
 * Rewritten: (?P<name>…) → (?<name>…), (?P=name) → \k<name>, \A → ^, \Z → $, (?#…) removed,
 * a leading "]" in a class, {,n} → {0,n}, and leading global flags (?i) (?m) (?s) (?a) (?u).
 * Refused with an explanation: verbose (?x), locale (?L), scoped flags (?i:…), atomic groups,
 * possessive quantifiers and conditionals, which JS lacks. Module names are ASCII, so Python's
 * Unicode-aware \w \d \s behave like JS's ASCII ones here.
 */
export function translatePythonRegex(pattern: string, what: string): TranslatedPattern {
  const refuse = (reason: string): never => {
    throw new Error(
      `${what}: the regular expression ${JSON.stringify(pattern)} uses ${reason}, which lowrank cannot ` +
        `translate to JavaScript. Rewrite it without that construct (plain groups, classes and quantifiers work).`,
    );
  };
  let flags = "";
  let i = 0;
  const global = /^\(\?([aiLmsux]+)\)/.exec(pattern);
  if (global) {
    for (const f of global[1]!) {
      if (f === "x") refuse("the verbose flag (?x)");
      if (f === "L") refuse("the locale flag (?L)");
      if ((f === "i" || f === "m" || f === "s") && !flags.includes(f)) flags += f;
    }
    i = global[0].length;
  }
  let out = "";
  let inClass = false;
  while (i < pattern.length) {
    const ch = pattern[i]!;
    if (ch === "\\") {
      const next = pattern[i + 1];
      if (next === undefined) refuse("a trailing backslash");
      if (!inClass && next === "A") out += "^";
      else if (!inClass && next === "Z") out += "$";
      else out += ch + next;
      i += 2;
      continue;
    }
    if (inClass) {
      if (ch === "]") inClass = false;
      out += ch;
      i++;
      continue;
    }
    if (ch === "[") {
      inClass = true;
      out += ch;
      i++;
      if (pattern[i] === "^") {
        out += "^";
        i++;
      }
      // Python reads a "]" right after "[" or "[^" as a literal; JS would close an empty class
      if (pattern[i] === "]") {
        out += "\\]";
        i++;
      }
      continue;
    }
    if (ch === "(" && pattern[i + 1] === "?") {
      const rest = pattern.slice(i + 2);
      if (rest.startsWith("P<")) {
        out += "(?<";
        i += 4;
      } else if (rest.startsWith("P=")) {
        const end = pattern.indexOf(")", i);
        if (end === -1) refuse("an unterminated (?P=name)");
        out += `\\k<${pattern.slice(i + 4, end)}>`;
        i = end + 1;
      } else if (rest.startsWith("#")) {
        const end = pattern.indexOf(")", i);
        if (end === -1) refuse("an unterminated comment (?#");
        i = end + 1;
      } else if (rest.startsWith(">")) {
        refuse("an atomic group (?>…)");
      } else if (rest.startsWith("(")) {
        refuse("a conditional group (?(…)…)");
      } else if (/^[aiLmsux-]+[:)]/.test(rest)) {
        refuse("inline flags that are not at the start of the pattern, or scoped flags (?i:…)");
      } else {
        // (?: (?= (?! (?<= (?<! (?<name> are the same in both
        out += "(?";
        i += 2;
      }
      continue;
    }
    if ((ch === "*" || ch === "+" || ch === "?" || ch === "}") && pattern[i + 1] === "+") {
      refuse("a possessive quantifier");
    }
    if (ch === "{") {
      const m = /^\{,(\d+)\}/.exec(pattern.slice(i));
      if (m) {
        out += `{0,${m[1]}}`;
        i += m[0].length;
        continue;
      }
    }
    out += ch;
    i++;
  }
  if (inClass) refuse("an unterminated character class");
  return { source: out, flags };
}

/**
 * Compiles a translated Python pattern embedded in `template` (which receives the JS source).
 * Callers whose Python code wraps the user's pattern (PEFT's rf"(.*\.)?({key})$") pass
 * `allowFlags: false`: Python rejects global flags that are not at the very start.
 */
export function compilePythonRegex(
  pattern: string,
  what: string,
  template: (source: string) => string,
  allowFlags: boolean,
): RegExp {
  const { source, flags } = translatePythonRegex(pattern, what);
  if (flags && !allowFlags) {
    throw new Error(
      `${what}: ${JSON.stringify(pattern)} starts with inline flags, but PEFT embeds this pattern inside a larger ` +
        `one, where Python refuses global flags ("global flags not at the start of the expression"). Remove them.`,
    );
  }
  try {
    return new RegExp(template(source), flags);
  } catch (err) {
    throw new Error(`${what}: ${JSON.stringify(pattern)} is not a valid regular expression: ${(err as Error).message}`, {
      cause: err,
    });
  }
}
