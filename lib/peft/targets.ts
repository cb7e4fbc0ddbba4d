// Which modules get LoRA: PEFT's target matching (tuners_utils.py::inject_adapter and
// check_target_module_exists, PEFT 0.21), on plain inputs (module names and a type tag per module)
// so it needs no model code. The result also carries the config as PEFT holds it after
// injection, which is what save_pretrained writes: the default or expanded target_modules and
// fan_in_fan_out forced by layer type. test/fixtures/make_target_fixtures.py records what PEFT
// itself does for the cases the tests check.
import { DEFAULT_TARGET_MODULES, compileLayersPattern, emitLowrankWarning, type LoraConfig, type WarningHandler } from "./config.js";
import { compilePythonRegex } from "../io/pyregex.js";
import type { ModuleInfo, ModuleKind, ModuleShape } from "../nn/shapes.js";

export interface TargetOptions {
  /** config.json's model_type, for the default targets when config.targetModules is null (e.g. "gpt2"). */
  modelType?: string;
  /** Where warnings go (default: process.emitWarning with type "LowrankWarning"). */
  onWarning?: WarningHandler;
}

export interface InjectionPlan {
  /** The modules to wrap, in the order the model lists them. */
  targets: string[];
  /** The config as PEFT holds (and saves) it after injection. */
  config: LoraConfig;
}

const SUPPORTED_KINDS: ReadonlySet<ModuleKind> = new Set(["linear", "conv1d", "embedding"]);
/** PEFT's SEQ_CLS_HEAD_NAMES: classification heads "all-linear" skips when the model has no output embedding. */
const SEQ_CLS_HEAD_NAMES = ["score", "classifier"];
/** PEFT's MIN_TARGET_MODULES_FOR_OPTIMIZATION: longer target lists are condensed to suffixes. */
const MIN_TARGET_MODULES_FOR_OPTIMIZATION = 20;

const show = (v: unknown) => JSON.stringify(v);

/** Python's list-of-str ordering (code point order per element, then length). */
function compareStringLists(a: readonly string[], b: readonly string[]): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    if (a[i] !== b[i]) return a[i]! < b[i]! ? -1 : 1;
  }
  return a.length - b.length;
}

/** "a.b.c" → ["c", "b.c", "a.b.c"]: the name's dotted suffixes, shortest first. */
function suffixesOf(name: string): string[] {
  const parts = name.split(".");
  return parts.map((_, i) => parts.slice(i).join(".")).reverse();
}

/**
 * PEFT's _find_minimal_target_modules: the smallest set of suffixes that still selects every
 * target and no other module. PEFT applies it to target lists of 20 or more entries before
 * matching (and then saves the condensed set), e.g. "all-linear" on GPT-2 124M saves
 * ["c_attn", "c_fc", "c_proj"].
 */
export function findMinimalTargetModules(targetModules: readonly string[], otherModuleNames: readonly string[]): string[] {
  const targets = [...new Set(targetModules)];
  const otherSuffixes = new Set(otherModuleNames.flatMap(suffixesOf));
  const required: string[] = [];
  const entries = targets.map((t) => [t, suffixesOf(t)] as const).sort((x, y) => compareStringLists(x[1], y[1]));
  for (const [item, suffixes] of entries) {
    for (const suffix of suffixes) {
      if (required.includes(suffix) || otherSuffixes.has(suffix)) continue;
      if (!required.some((req) => item.endsWith("." + req))) {
        required.push(suffix);
        break;
      }
    }
  }
  return required.length > 0 ? required : targets;
}

/** targetModules given as a string: PEFT full-matches it against each module's whole name. */
export function targetModulesRegex(pattern: string): RegExp {
  return compilePythonRegex(pattern, "targetModules", (s) => `^(?:${s})$`, true);
}

/** A compiled view of the config's matching rules, mirroring check_target_module_exists. */
class Matcher {
  private readonly targetRegex: RegExp | undefined;
  private readonly targetList: ReadonlySet<string> | undefined;
  private readonly excludeRegex: RegExp | undefined;
  private readonly excludeList: readonly string[] | undefined;
  private readonly saveRegexes: RegExp[];
  private readonly layerIndexes: number | readonly number[] | null;
  private readonly layerRegexes: RegExp[];

  constructor(config: LoraConfig, targetModules: readonly string[] | string) {
    if (typeof targetModules === "string") {
      this.targetRegex = targetModulesRegex(targetModules);
    } else {
      this.targetList = new Set(targetModules);
    }
    const ex = config.excludeModules;
    if (typeof ex === "string") this.excludeRegex = compilePythonRegex(ex, "excludeModules", (s) => `^(?:${s})$`, true);
    else if (ex !== null && ex.length > 0) this.excludeList = ex;
    this.saveRegexes = (config.modulesToSave ?? []).map((m) =>
      compilePythonRegex(m, "modulesToSave entry", (s) => `^(^|.*\\.)${s}($|\\..*)`, false),
    );
    const idx = config.layersToTransform;
    // PEFT: an empty list means "all layers"
    this.layerIndexes = Array.isArray(idx) && idx.length === 0 ? null : idx;
    const pattern = config.layersPattern;
    const patterns = pattern === null || pattern.length === 0 ? [] : typeof pattern === "string" ? [pattern] : pattern;
    // without a pattern, the first numbered segment after at least two others is the layer index
    this.layerRegexes = patterns.length === 0 ? [/^.*?\.[^.]*\.(?<idx>\d+)\./] : patterns.map(compileLayersPattern);
  }

  /** Whether the module is (inside) one of modulesToSave. */
  isSaved(name: string): boolean {
    return this.saveRegexes.some((re) => re.test(name));
  }

  /** "excluded" (by exclude_modules or modules_to_save), true (targeted) or false (not matched). */
  check(name: string): "excluded" | boolean {
    if (this.excludeRegex?.test(name)) return "excluded";
    if (this.excludeList && this.excludeList.some((e) => name === e || name.endsWith("." + e))) return "excluded";
    // adapters never go inside modules that are trained in full
    if (this.isSaved(name)) return "excluded";
    if (this.targetRegex) return this.targetRegex.test(name);
    // an exact full name is taken as is, without the layer filter (PEFT's order of checks)
    if (this.targetList!.has(name)) return true;
    const found = [...this.targetList!].some((t) => name.endsWith("." + t));
    if (!found || this.layerIndexes === null) return found;
    return this.layerMatches(name);
  }

  private layerMatches(name: string): boolean {
    let match: RegExpExecArray | null = null;
    for (const re of this.layerRegexes) {
      match = re.exec(name);
      if (match) break;
    }
    if (!match) return false;
    const index = Number(match.groups!.idx);
    return typeof this.layerIndexes === "number" ? index === this.layerIndexes : this.layerIndexes!.includes(index);
  }
}

/** The config's targets before matching: the architecture default, or "all-linear" expanded. */
function resolveTargetModules(modules: readonly ModuleInfo[], config: LoraConfig, options: TargetOptions): readonly string[] | string {
  let target = config.targetModules;
  if (target === null) {
    const known = Object.keys(DEFAULT_TARGET_MODULES);
    const fallback = options.modelType === undefined ? undefined : DEFAULT_TARGET_MODULES[options.modelType];
    if (fallback === undefined) {
      throw new Error(
        `LoraConfig.targetModules is null and ${options.modelType === undefined ? "no model type was given" : `model type ${show(options.modelType)} has no default`}, ` +
          `so there is nothing to target. Set targetModules (e.g. ["c_attn"] or "all-linear"); defaults exist for: ${known.join(", ")}.`,
      );
    }
    target = fallback;
  }
  if (typeof target === "string" && target.toLowerCase() === "all-linear") {
    const head = modules.find((m) => m.isOutputHead);
    const skip = new Set<string>();
    if (head) skip.add(head.name);
    else if (config.taskType === "SEQ_CLS") {
      const cls = SEQ_CLS_HEAD_NAMES.find((n) => modules.some((m) => m.name === n));
      if (cls) skip.add(cls);
    }
    target = modules.filter((m) => (m.kind === "linear" || m.kind === "conv1d") && !skip.has(m.name)).map((m) => m.name);
    if (target.length === 0) {
      throw new Error('targetModules "all-linear" found no linear or Conv1D module (other than the output head) in the model.');
    }
  }
  if (typeof target !== "string" && target.length >= MIN_TARGET_MODULES_FOR_OPTIMIZATION) {
    const listed = new Set(target);
    const suffixes = target.map((t) => "." + t);
    const others = modules.map((m) => m.name).filter((n) => !listed.has(n) && !suffixes.some((s) => n.endsWith(s)));
    const condensed = findMinimalTargetModules(target, others);
    if (condensed.length < listed.size) target = condensed;
  }
  return target;
}

function availableSummary(modules: readonly ModuleInfo[]): string {
  const wrappable = modules.filter((m) => SUPPORTED_KINDS.has(m.kind));
  if (wrappable.length === 0) return " The model has no linear, Conv1D or embedding modules.";
  const leaves = [...new Set(wrappable.map((m) => m.name.split(".").pop()!))];
  const shown = leaves.slice(0, 12).join(", ") + (leaves.length > 12 ? `, … (${leaves.length - 12} more)` : "");
  return (
    ` Modules LoRA can wrap here, by last name: ${shown}; e.g. ${show(wrappable[0]!.name)}. A list entry matches a ` +
    `module named exactly so or ending in "." + entry; a string is a regex that must match the whole name.`
  );
}

function layerNotes(config: LoraConfig): string {
  let s = "";
  if (config.layersToTransform !== null) s += ` Note: You specified 'layers_to_transform': ${show(config.layersToTransform)}.`;
  if (config.layersPattern !== null) s += ` You also specified 'layers_pattern': ${show(config.layersPattern)}.`;
  return s;
}

/**
 * Decides which modules get LoRA, as PEFT's get_peft_model would for the same model and config,
 * and returns them with the config as PEFT holds it afterwards. Throws (PEFT's wording, with the
 * modules that could be targeted) when nothing matches or when a non-linear/Conv1D/embedding
 * module is selected; warns as PEFT does about unused exclude_modules and pattern keys, about
 * fan_in_fan_out being forced, and about modules with tied weights in the adapter.
 */
export function planInjection(modules: readonly ModuleInfo[], config: LoraConfig, options: TargetOptions = {}): InjectionPlan {
  const warn = options.onWarning ?? emitLowrankWarning;
  const seen = new Set<string>();
  for (const m of modules) {
    if (typeof m.name !== "string" || m.name.length === 0) {
      throw new Error(`planInjection: module names must be non-empty strings (leave the root module out); got ${show(m.name)}.`);
    }
    if (seen.has(m.name)) throw new Error(`planInjection: module ${show(m.name)} is listed twice.`);
    if (!["linear", "conv1d", "embedding", "other"].includes(m.kind)) {
      throw new Error(`planInjection: module ${show(m.name)} has kind ${show(m.kind)}; expected linear, conv1d, embedding or other.`);
    }
    seen.add(m.name);
  }

  const targetModules = resolveTargetModules(modules, config, options);
  const matcher = new Matcher(config, targetModules);
  const targets: ModuleInfo[] = [];
  let excluded = 0, unmatched = 0;
  for (const m of modules) {
    const r = matcher.check(m.name);
    if (r === "excluded") excluded++;
    else if (r) targets.push(m);
    else unmatched++;
  }

  if (targets.length === 0) {
    if (excluded > 0 && unmatched === 0) {
      throw new Error(
        "All modules were excluded. This is likely unintended. Check your `target_modules`, `exclude_modules` and " +
          "`modules_to_save` configuration.",
      );
    }
    if (excluded === 0 && unmatched > 0) {
      throw new Error(
        `Target modules ${show(targetModules)} not found in the base model. Please check the target modules and try again.` +
          layerNotes(config) +
          availableSummary(modules),
      );
    }
    throw new Error(
      "No modules were targeted for adaptation. This might be caused by a combination of mismatched target modules and " +
        "excluded modules. Please check your `target_modules` and `exclude_modules` configuration. You may also have " +
        "only targeted modules that are marked to be saved (`modules_to_save`)." +
        layerNotes(config) +
        availableSummary(modules),
    );
  }

  const unsupported = targets.filter((m) => !SUPPORTED_KINDS.has(m.kind));
  if (unsupported.length > 0) {
    const list = unsupported.slice(0, 5).map((m) => `${show(m.name)} (${m.kind})`).join(", ");
    throw new Error(
      `targetModules ${show(targetModules)} selects ${unsupported.length === 1 ? "a module" : `${unsupported.length} modules`} ` +
        `LoRA cannot wrap: ${list}${unsupported.length > 5 ? ", …" : ""}. Only linear, Conv1D and embedding modules are ` +
        `supported; narrow targetModules to those (a regex must match whole names, e.g. ".*\\\\.mlp\\\\.c_fc" rather than ".*\\\\.mlp\\\\..*").`,
    );
  }
  if (config.loraBias) {
    const emb = targets.find((m) => m.kind === "embedding");
    if (emb) {
      throw new Error(
        `loraBias=true is not supported for embedding layers (PEFT refuses it too), and ${show(emb.name)} is one; ` +
          "set loraBias=false or leave embeddings out of targetModules.",
      );
    }
  }

  // PEFT's dispatch_default forces fan_in_fan_out per layer type and writes it back into the
  // config, one module after the other, so the saved value reflects the last switch.
  let fanInFanOut = config.fanInFanOut;
  for (const m of targets) {
    if (m.kind === "linear" && fanInFanOut) {
      warn("fan_in_fan_out is set to True but the target module is `torch.nn.Linear`. Setting fan_in_fan_out to False.");
      fanInFanOut = false;
    } else if (m.kind === "conv1d" && !fanInFanOut) {
      warn(
        "fan_in_fan_out is set to False but the target module is `Conv1D`. Setting fan_in_fan_out to True. " +
          "(GPT-2's Conv1D stores weights in×out; set fanInFanOut: true to silence this.)",
      );
      fanInFanOut = true;
    }
  }

  // PEFT warns by name (lm_head, embed_tokens); the tie itself is the hazard, whatever the name
  const tied = modules.filter((m) => m.tiedWith !== undefined && (targets.includes(m) || matcher.isSaved(m.name)));
  if (tied.length > 0) {
    const pairs = tied.map((m) => `${show(m.name)} (tied with ${show(m.tiedWith)})`).join(", ");
    warn(
      `The adapter includes ${pairs}, which share${tied.length === 1 ? "s" : ""} its weight with another module ` +
        "(tie_word_embeddings). Merging the adapter changes the shared weight, so the tied module changes too, and " +
        "PEFT's ensure_weight_tying is not implemented in lowrank. Target other modules unless this is intended.",
    );
  }

  const ex = config.excludeModules;
  if (ex !== null && ex.length > 0 && excluded === 0) {
    warn(`You have passed exclude_modules=${show(ex)} but no modules were excluded. Please check that exclude_modules was set correctly.`);
  }
  const names = targets.map((m) => m.name);
  for (const [field, pattern] of [["rank_pattern", config.rankPattern], ["alpha_pattern", config.alphaPattern]] as const) {
    const unused = Object.keys(pattern)
      .filter((key) => !names.some((n) => compilePythonRegex(key, field, (s) => `^(.*\\.)?(${s})$`, false).test(n)))
      .sort();
    if (unused.length > 0) {
      warn(`The following ${field} keys did not match any targeted module and were ignored: ${show(unused)}.`);
    }
  }

  return { targets: names, config: config.with({ targetModules, fanInFanOut }) };
}

/** The names of the modules PEFT would wrap with LoRA for this config (see planInjection). */
export function selectTargets(modules: readonly ModuleInfo[], config: LoraConfig, options: TargetOptions = {}): string[] {
  return planInjection(modules, config, options).targets;
}

export interface LoraParameterCount {
  /** All LoRA parameters: lora_A/B (or embedding A/B), lora_B biases, DoRA magnitudes. */
  total: number;
  perModule: { name: string; r: number; params: number }[];
}

function dim(m: ModuleShape, field: "inFeatures" | "outFeatures" | "numEmbeddings" | "embeddingDim"): number {
  const v = m[field];
  if (typeof v !== "number" || !Number.isInteger(v) || v <= 0) {
    throw new Error(`countLoraParameters: module ${show(m.name)} (${m.kind}) needs a positive integer ${field}; got ${show(v)}.`);
  }
  return v;
}

/**
 * The LoRA parameters get_peft_model would add, from shapes alone (no weights): per targeted
 * module r·(in + out) for linear/Conv1D, r·(rows + dim) for embeddings, plus out (dim) for
 * loraBias and for DoRA's magnitude. GPT-2 124M, r=8 on c_attn: 12 × 8·(768 + 2304) = 294,912.
 * Biases trained with bias="all"/"lora_only" and modulesToSave copies are not LoRA parameters and
 * are not counted here.
 */
export function countLoraParameters(modules: readonly ModuleShape[], config: LoraConfig, options: TargetOptions = {}): LoraParameterCount {
  const plan = planInjection(modules, config, options);
  const byName = new Map(modules.map((m) => [m.name, m]));
  const perModule = plan.targets.map((name) => {
    const m = byName.get(name)!;
    const r = plan.config.rankFor(name);
    let params: number;
    if (m.kind === "embedding") {
      const d = dim(m, "embeddingDim");
      params = r * (dim(m, "numEmbeddings") + d) + (plan.config.useDora ? d : 0);
    } else {
      const out = dim(m, "outFeatures");
      params = r * (dim(m, "inFeatures") + out) + (plan.config.loraBias ? out : 0) + (plan.config.useDora ? out : 0);
    }
    return { name, r, params };
  });
  return { total: perModule.reduce((s, p) => s + p.params, 0), perModule };
}
