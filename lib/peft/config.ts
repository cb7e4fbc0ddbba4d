// LoraConfig: PEFT's LoraConfig with camelCase fields, the same defaults and validation as its
// __post_init__ (plus checks PEFT defers to layer creation, done here so mistakes surface when the
// config is made), and adapter_config.json exactly as PEFT 0.21 writes and reads it.
import { PyFloat, pythonJsonDumps, type PyJson } from "../io/pyjson.js";
import { compilePythonRegex } from "../io/pyregex.js";

/** PEFT's TaskType values (`peft/utils/peft_types.py`). */
export const TASK_TYPES = [
  "SEQ_CLS",
  "SEQ_2_SEQ_LM",
  "CAUSAL_LM",
  "TOKEN_CLS",
  "QUESTION_ANS",
  "FEATURE_EXTRACTION",
] as const;
export type TaskType = (typeof TASK_TYPES)[number];

export type LoraBias = "none" | "all" | "lora_only";

/**
 * How new adapter weights start: true = kaiming-uniform A, zero B (a no-op adapter); false =
 * nn.Linear's default init for both (not a no-op; for debugging); "gaussian" = A ~ N(0, 1/r), B = 0;
 * "pissa" / "pissa_niter_N" = top-r SVD (fast SVD with N iterations) of W; "olora" = QR of W. The
 * last two replace the base weight by W − s·B·A.
 */
export type InitLoraWeights = boolean | "gaussian" | "pissa" | `pissa_niter_${number}` | "olora";

/** The PEFT release whose adapter_config.json layout (keys, defaults) this module writes. */
export const PEFT_FORMAT_VERSION = "0.21.0";
/**
 * What lowrank writes as peft_version: the PEFT format version with a PEP 440 local label. PEFT
 * does not check peft_version when it loads a LoRA config (verified with PEFT 0.21, also for
 * "99.0.0" and unparseable strings); the only code that parses it (OFT's config) uses
 * packaging.version, which accepts this form and orders it as 0.21.0. Claiming a bare "0.21.0"
 * would say PEFT wrote the file.
 */
export const LOWRANK_PEFT_VERSION = `${PEFT_FORMAT_VERSION}+lowrank`;

/** `TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING` for the architectures lowrank implements. */
export const DEFAULT_TARGET_MODULES: Readonly<Record<string, readonly string[]>> = {
  gpt2: ["c_attn"],
  llama: ["q_proj", "v_proj"],
  mistral: ["q_proj", "v_proj"],
  qwen2: ["q_proj", "v_proj"],
  qwen3: ["q_proj", "v_proj"],
};

/** The options of `new LoraConfig(...)`: PEFT's LoraConfig arguments in camelCase, all optional. */
export interface LoraConfigInit {
  /** Rank (8). A positive integer. */
  r?: number;
  /** Scaling numerator (8): scaling = loraAlpha / r, or loraAlpha / sqrt(r) with useRslora. */
  loraAlpha?: number;
  /** Dropout on the adapter's input (0), in [0, 1). */
  loraDropout?: number;
  /**
   * Which modules get LoRA (null: the architecture's default, gpt2 → ["c_attn"],
   * llama/mistral/qwen2/qwen3 → ["q_proj", "v_proj"]). A list entry
   * matches a module named exactly so or ending in "." + entry; a string is a Python regex that
   * must match the whole module name; "all-linear" means every linear/Conv1D except the output head.
   */
  targetModules?: readonly string[] | string | null;
  /** Modules never targeted, matched by the same rules as targetModules (null). */
  excludeModules?: readonly string[] | string | null;
  /** The base layer stores its weight as (in, out), as GPT-2's Conv1D does (false; forced per layer type). */
  fanInFanOut?: boolean;
  /** Which biases are trained and saved ("none"). */
  bias?: LoraBias;
  /** Rank-stabilised scaling loraAlpha / sqrt(r) (false). */
  useRslora?: boolean;
  /** Modules trained in full and saved with the adapter (null). */
  modulesToSave?: readonly string[] | null;
  /** See InitLoraWeights (true). */
  initLoraWeights?: InitLoraWeights;
  /** Only layers with these indices (null: all layers). */
  layersToTransform?: number | readonly number[] | null;
  /** Name(s) of the ModuleList holding the layers, e.g. "h" (null: the first numbered segment). */
  layersPattern?: string | readonly string[] | null;
  /** Per-module rank overrides: key (a Python regex) → r; the first key matching the module's name suffix wins. */
  rankPattern?: Readonly<Record<string, number>>;
  /** Per-module alpha overrides, matched like rankPattern. */
  alphaPattern?: Readonly<Record<string, number>>;
  /** Weight-decomposed LoRA (false). */
  useDora?: boolean;
  /** A trainable bias on lora_B (false). */
  loraBias?: boolean;
  /** PEFT's task type (null); selects the PeftModel wrapper in Python. */
  taskType?: TaskType | null;
  /** Frozen adapter (false). Saved configs always say true. */
  inferenceMode?: boolean;
  /** The base model's name or path (null: filled from the model when saving). */
  baseModelNameOrPath?: string | null;
  /** The base model's revision (null). */
  revision?: string | null;
  /** PEFT's auto_mapping: {base_model_class, parent_library}, written when taskType is null (null). */
  autoMapping?: Readonly<Record<string, string>> | null;
  /** The version string saved as peft_version (LOWRANK_PEFT_VERSION; a loaded config keeps its own). */
  peftVersion?: string;
}

/** adapter_config.json's keys for the fields above (PEFT's dataclass field names). */
const JSON_KEYS = {
  r: "r",
  loraAlpha: "lora_alpha",
  loraDropout: "lora_dropout",
  targetModules: "target_modules",
  excludeModules: "exclude_modules",
  fanInFanOut: "fan_in_fan_out",
  bias: "bias",
  useRslora: "use_rslora",
  modulesToSave: "modules_to_save",
  initLoraWeights: "init_lora_weights",
  layersToTransform: "layers_to_transform",
  layersPattern: "layers_pattern",
  rankPattern: "rank_pattern",
  alphaPattern: "alpha_pattern",
  useDora: "use_dora",
  loraBias: "lora_bias",
  taskType: "task_type",
  inferenceMode: "inference_mode",
  baseModelNameOrPath: "base_model_name_or_path",
  revision: "revision",
  autoMapping: "auto_mapping",
  peftVersion: "peft_version",
} as const satisfies Record<keyof LoraConfigInit, string>;

type Field = keyof typeof JSON_KEYS;
const FIELDS = Object.keys(JSON_KEYS) as Field[];
const FIELD_BY_JSON_KEY = new Map<string, Field>(FIELDS.map((f) => [JSON_KEYS[f], f]));

/**
 * The other keys PEFT 0.21 writes, for LoRA variants lowrank does not implement, with the value
 * PEFT writes when the variant is off. toJSON writes these values; fromJSON accepts a file only
 * when they hold them (or when the key is inert, see below), since anything else changes what the
 * adapter computes.
 */
const UNIMPLEMENTED_KEYS: Readonly<Record<string, { off: PyJson; feature: string }>> = {
  alora_invocation_tokens: { off: null, feature: "activated LoRA (aLoRA)" },
  arrow_config: { off: null, feature: "Arrow routing" },
  ensure_weight_tying: { off: false, feature: "tied-adapter weight tying" },
  kasa_config: { off: null, feature: "KaSA" },
  layer_replication: { off: null, feature: "layer replication" },
  megatron_config: { off: null, feature: "Megatron parallel layers" },
  monteclora_config: { off: null, feature: "MonteCLoRA" },
  target_parameters: { off: null, feature: "LoRA on nn.Parameters (target_parameters)" },
  trainable_token_indices: { off: null, feature: "trainable token indices" },
  use_bdlora: { off: null, feature: "BD-LoRA" },
  use_qalora: { off: false, feature: "QALoRA" },
  velora_config: { off: null, feature: "VeLoRA" },
};

/** The "off" values of the unimplemented variants, as written by toJSON. */
const UNIMPLEMENTED_KEYS_OFF: Record<string, PyJson> = Object.fromEntries(
  Object.entries(UNIMPLEMENTED_KEYS).map(([k, v]) => [k, v.off]),
);

/** Keys whose value only matters when a feature that is off uses it; any value is accepted. */
const INERT_KEYS: Readonly<Record<string, PyJson>> = {
  megatron_core: "megatron.core", // the module megatron_config's layers come from
  qalora_group_size: 16, // only read with use_qalora
};

/**
 * Sub-configs of initialisations lowrank does not implement. They only steer how new weights are
 * initialised; PEFT itself warns and ignores them when init_lora_weights names another method.
 */
const INIT_SUBCONFIG_KEYS: Readonly<Record<string, PyJson>> = {
  corda_config: null,
  eva_config: null,
  loftq_config: {},
  lora_ga_config: null,
};

/** init_lora_weights values PEFT knows and lowrank does not implement, with what loading them means. */
const PEFT_ONLY_INITS: Readonly<Record<string, "weights-only" | "mutates-base">> = {
  eva: "weights-only",
  orthogonal: "weights-only",
  mica: "weights-only",
  corda: "mutates-base",
  loftq: "mutates-base",
  lora_ga: "mutates-base",
};

/** Where warnings go: process.emitWarning by default, replaceable per call for libraries and tests. */
export type WarningHandler = (message: string) => void;
export const emitLowrankWarning: WarningHandler = (message) => process.emitWarning(message, "LowrankWarning");

const showValue = (v: unknown): string => {
  if (typeof v === "string") return JSON.stringify(v);
  if (typeof v === "number" || typeof v === "boolean" || v === null || v === undefined) return String(v);
  try {
    return JSON.stringify(v);
  } catch {
    return String(v);
  }
};

function invalid(field: string, value: unknown, requirement: string): Error {
  return new Error(`LoraConfig: ${field} ${requirement}; got ${showValue(value)}.`);
}

const isPlainObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v) && Object.getPrototypeOf(v) === Object.prototype;

/** A list of module-name strings, deduplicated in first-seen order (PEFT keeps them as a set). */
function checkNameList(field: string, value: unknown, allowEmpty: boolean): string[] {
  if (!Array.isArray(value) || value.some((v) => typeof v !== "string" || v.length === 0)) {
    throw invalid(field, value, "must be a list of non-empty module names, a regex string, or null");
  }
  if (!allowEmpty && value.length === 0) {
    throw invalid(field, value, 'must name at least one module (or be null for the architecture default, or "all-linear")');
  }
  return [...new Set(value as string[])];
}

function checkNonNegativeIntList(field: string, value: unknown): number | number[] {
  const ok = (n: unknown) => typeof n === "number" && Number.isInteger(n) && n >= 0;
  if (ok(value)) return value as number;
  if (Array.isArray(value) && value.every(ok)) return [...(value as number[])];
  throw invalid(field, value, "must be a layer index or a list of layer indices (non-negative integers), or null");
}

function checkPattern(field: string, value: unknown, check: (n: number) => boolean, requirement: string): Record<string, number> {
  if (!isPlainObject(value)) throw invalid(field, value, "must be an object mapping module-name patterns to numbers");
  const out: Record<string, number> = {};
  for (const [key, v] of Object.entries(value)) {
    if (key.length === 0) throw invalid(field, value, "must not have an empty key");
    if (!check(v as number)) throw new Error(`LoraConfig: ${field}[${JSON.stringify(key)}] ${requirement}; got ${showValue(v)}.`);
    // compiled once here so a bad pattern fails now, not at injection
    compilePythonRegex(key, `LoraConfig: ${field} key`, (s) => `^(.*\\.)?(${s})$`, false);
    out[key] = v as number;
  }
  return out;
}

function checkInit(value: unknown): InitLoraWeights {
  if (typeof value === "boolean") return value;
  if (value === "gaussian" || value === "pissa" || value === "olora") return value;
  if (typeof value === "string" && /^pissa_niter_\d+$/.test(value)) return value as `pissa_niter_${number}`;
  if (typeof value === "string" && value in PEFT_ONLY_INITS) {
    throw invalid(
      "initLoraWeights",
      value,
      'names a PEFT initialisation lowrank does not implement; use true, false, "gaussian", "pissa", ' +
        '"pissa_niter_<iterations>" or "olora"',
    );
  }
  throw invalid(
    "initLoraWeights",
    value,
    'must be true, false, "gaussian", "pissa", "pissa_niter_<iterations>" (e.g. "pissa_niter_4") or "olora"',
  );
}

/**
 * PEFT's layer-index regex for one layers_pattern entry (check_target_module_exists):
 * re.match(rf"(?:^|.*?\.){pattern}\.(?P<idx>\d+)\.", name). The lazy ".*?" takes the first
 * numbered segment after the pattern, not a nested one (an MoE expert index, say).
 */
export function compileLayersPattern(pattern: string): RegExp {
  return compilePythonRegex(pattern, "LoraConfig: layersPattern", (s) => `^(?:^|.*?\\.)${s}\\.(?<idx>\\d+)\\.`, false);
}

/** A snake_case or misspelt option name → the camelCase field it probably means. */
function suggestField(key: string): Field | undefined {
  const byJson = FIELD_BY_JSON_KEY.get(key);
  if (byJson) return byJson;
  const lower = key.toLowerCase().replace(/_/g, "");
  return FIELDS.find((f) => f.toLowerCase() === lower);
}

/** PEFT's LoraConfig. Immutable: `with(changes)` returns a validated copy. */
export class LoraConfig {
  readonly peftType = "LORA" as const;
  readonly r: number = 8;
  readonly loraAlpha: number = 8;
  readonly loraDropout: number = 0;
  readonly targetModules: readonly string[] | string | null = null;
  readonly excludeModules: readonly string[] | string | null = null;
  readonly fanInFanOut: boolean = false;
  readonly bias: LoraBias = "none";
  readonly useRslora: boolean = false;
  readonly modulesToSave: readonly string[] | null = null;
  readonly initLoraWeights: InitLoraWeights = true;
  readonly layersToTransform: number | readonly number[] | null = null;
  readonly layersPattern: string | readonly string[] | null = null;
  readonly rankPattern: Readonly<Record<string, number>> = {};
  readonly alphaPattern: Readonly<Record<string, number>> = {};
  readonly useDora: boolean = false;
  readonly loraBias: boolean = false;
  readonly taskType: TaskType | null = null;
  readonly inferenceMode: boolean = false;
  readonly baseModelNameOrPath: string | null = null;
  readonly revision: string | null = null;
  readonly autoMapping: Readonly<Record<string, string>> | null = null;
  readonly peftVersion: string = LOWRANK_PEFT_VERSION;

  constructor(init: LoraConfigInit = {}) {
    if (!isPlainObject(init)) throw new Error(`LoraConfig: options must be a plain object; got ${showValue(init)}.`);
    for (const key of Object.keys(init)) {
      if (!(key in JSON_KEYS)) {
        const hint = suggestField(key);
        throw new Error(
          `LoraConfig: unknown option ${JSON.stringify(key)}` +
            (hint ? `; did you mean ${JSON.stringify(hint)}?` : `; known options: ${FIELDS.join(", ")}.`) +
            (hint && FIELD_BY_JSON_KEY.has(key) ? " (adapter_config.json's snake_case keys go through LoraConfig.fromJSON)" : ""),
        );
      }
    }
    const set = this as unknown as Record<Field, unknown>;
    for (const f of FIELDS) if (init[f] !== undefined) set[f] = init[f];
    this.validateAndNormalize(set);
    Object.freeze(this);
  }

  private validateAndNormalize(set: Record<Field, unknown>): void {
    const { r, loraAlpha, loraDropout } = this;
    if (typeof r !== "number" || !Number.isInteger(r) || r <= 0) {
      throw invalid("r", r, "must be a positive integer (the LoRA rank, e.g. 8)");
    }
    if (typeof loraAlpha !== "number" || !Number.isFinite(loraAlpha)) {
      throw invalid("loraAlpha", loraAlpha, "must be a finite number (e.g. 16 for scaling alpha/r = 2 at r=8)");
    }
    if (typeof loraDropout !== "number" || !(loraDropout >= 0 && loraDropout < 1)) {
      throw invalid("loraDropout", loraDropout, "must be a probability in [0, 1) (0 disables dropout)");
    }
    for (const f of ["fanInFanOut", "useRslora", "useDora", "loraBias", "inferenceMode"] as const) {
      if (typeof this[f] !== "boolean") throw invalid(f, this[f], "must be true or false");
    }
    if (!["none", "all", "lora_only"].includes(this.bias as string)) {
      throw invalid("bias", this.bias, 'must be "none", "all" or "lora_only"');
    }
    for (const f of ["targetModules", "excludeModules"] as const) {
      const v = this[f];
      if (typeof v === "string") {
        // a string is a regex (or "all-linear" for targets), matched against the whole name
        if (v.length === 0) throw invalid(f, v, "must not be an empty string");
        if (f === "excludeModules" || v.toLowerCase() !== "all-linear") {
          compilePythonRegex(v, `LoraConfig: ${f}`, (s) => `^(?:${s})$`, true);
        }
      } else if (v !== null) {
        set[f] = Object.freeze(checkNameList(f, v, f === "excludeModules"));
      }
    }
    if (this.modulesToSave !== null) {
      if (typeof this.modulesToSave === "string") {
        throw invalid("modulesToSave", this.modulesToSave, "must be a list of module names, not a single string");
      }
      set.modulesToSave = Object.freeze(checkNameList("modulesToSave", this.modulesToSave, true));
      for (const m of this.modulesToSave!) {
        compilePythonRegex(m, "LoraConfig: modulesToSave entry", (s) => `^(^|.*\\.)${s}($|\\..*)`, false);
      }
    }
    set.initLoraWeights = checkInit(this.initLoraWeights);
    if (this.layersToTransform !== null) {
      const v = checkNonNegativeIntList("layersToTransform", this.layersToTransform);
      set.layersToTransform = Array.isArray(v) ? Object.freeze(v) : v;
    }
    if (this.layersPattern !== null) {
      const p = this.layersPattern;
      const list = typeof p === "string" ? [p] : p;
      if (!Array.isArray(list) || list.some((s) => typeof s !== "string")) {
        throw invalid("layersPattern", p, 'must be a string or a list of strings naming the layer list (e.g. "h"), or null');
      }
      for (const s of list) compileLayersPattern(s);
      if (Array.isArray(p)) set.layersPattern = Object.freeze([...p]);
    }
    // PEFT's __post_init__ rules for layer selection
    if (typeof this.targetModules === "string" && this.layersToTransform !== null) {
      throw new Error(
        `LoraConfig: layersToTransform cannot be used when targetModules is a string (${showValue(this.targetModules)}): ` +
          "a regex already selects layers. Put the layer indices in the regex, or list module names in targetModules.",
      );
    }
    if (typeof this.targetModules === "string" && this.layersPattern !== null) {
      throw new Error(
        `LoraConfig: layersPattern cannot be used when targetModules is a string (${showValue(this.targetModules)}); ` +
          "drop layersPattern or list module names in targetModules.",
      );
    }
    if (this.layersPattern !== null && this.layersPattern.length > 0 && this.layersToTransform === null) {
      throw new Error(
        `LoraConfig: layersPattern ${showValue(this.layersPattern)} was given without layersToTransform; ` +
          "layersPattern only names where the layer index is, so also give the indices, e.g. layersToTransform: [0, 1].",
      );
    }
    set.rankPattern = Object.freeze(
      checkPattern("rankPattern", this.rankPattern, (n) => Number.isInteger(n) && n > 0, "must be a positive integer rank"),
    );
    set.alphaPattern = Object.freeze(
      checkPattern("alphaPattern", this.alphaPattern, (n) => typeof n === "number" && Number.isFinite(n), "must be a finite number"),
    );
    if (this.loraBias && typeof this.initLoraWeights !== "boolean") {
      throw new Error(
        `LoraConfig: loraBias=true is only supported with initLoraWeights true or false, got ` +
          `initLoraWeights=${showValue(this.initLoraWeights)}. Drop loraBias or use the default initialisation.`,
      );
    }
    if (this.loraBias && this.useDora) {
      throw new Error("LoraConfig: loraBias=true is not supported with DoRA; set useDora=false or loraBias=false.");
    }
    if (this.taskType !== null && !TASK_TYPES.includes(this.taskType)) {
      throw invalid("taskType", this.taskType, `must be one of ${TASK_TYPES.join(", ")}, or null`);
    }
    for (const f of ["baseModelNameOrPath", "revision"] as const) {
      if (this[f] !== null && typeof this[f] !== "string") throw invalid(f, this[f], "must be a string or null");
    }
    if (this.autoMapping !== null) {
      if (!isPlainObject(this.autoMapping) || Object.values(this.autoMapping).some((v) => typeof v !== "string")) {
        throw invalid("autoMapping", this.autoMapping, "must be an object of strings (base_model_class, parent_library) or null");
      }
      set.autoMapping = Object.freeze({ ...this.autoMapping });
    }
    if (typeof this.peftVersion !== "string" || this.peftVersion.length === 0) {
      throw invalid("peftVersion", this.peftVersion, "must be a non-empty version string");
    }
  }

  /** A copy with some fields changed, validated like a new config. */
  with(changes: LoraConfigInit): LoraConfig {
    const init: Record<string, unknown> = {};
    for (const f of FIELDS) init[f] = this[f];
    return new LoraConfig({ ...(init as LoraConfigInit), ...changes });
  }

  /** The key of `pattern` that applies to `moduleName` (PEFT's get_pattern_key: the first key k in
   * insertion order for which /^(.*\.)?(k)$/ matches), or undefined. */
  private patternKeyFor(pattern: Readonly<Record<string, number>>, moduleName: string): string | undefined {
    return Object.keys(pattern).find((key) =>
      compilePythonRegex(key, "LoraConfig pattern key", (s) => `^(.*\\.)?(${s})$`, false).test(moduleName),
    );
  }

  /** The rank of the module `moduleName` (its full name in the base model), honouring rankPattern. */
  rankFor(moduleName: string): number {
    const key = this.patternKeyFor(this.rankPattern, moduleName);
    return key === undefined ? this.r : this.rankPattern[key]!;
  }

  /** The alpha of the module `moduleName`, honouring alphaPattern. */
  alphaFor(moduleName: string): number {
    const key = this.patternKeyFor(this.alphaPattern, moduleName);
    return key === undefined ? this.loraAlpha : this.alphaPattern[key]!;
  }

  /** The LoRA scaling of module `moduleName`: alpha/r, or alpha/sqrt(r) with useRslora. */
  scalingFor(moduleName: string): number {
    const r = this.rankFor(moduleName);
    const alpha = this.alphaFor(moduleName);
    return this.useRslora ? alpha / Math.sqrt(r) : alpha / r;
  }

  /**
   * adapter_config.json's content as PEFT 0.21's save_pretrained writes it: all its keys in
   * snake_case, sorted, inference_mode true, with PEFT's values for the variants lowrank does not
   * implement. Lists keep their order (PEFT writes its sets in Python's arbitrary set order).
   */
  toJSON(): Record<string, PyJson> {
    return this.toPython((x) => x);
  }

  /** The exact text of adapter_config.json (Python's json.dumps(indent=2, sort_keys=True), no final newline). */
  toJSONString(): string {
    return pythonJsonDumps(this.toPython((x) => new PyFloat(x)));
  }

  private toPython(float: (x: number) => number | PyFloat): Record<string, PyJson> {
    const out: Record<string, PyJson> = {};
    for (const f of FIELDS) {
      const v = this[f] as PyJson;
      out[JSON_KEYS[f]] = v;
    }
    // lora_dropout is a Python float even when it is 0
    out.lora_dropout = float(this.loraDropout);
    out.inference_mode = true;
    out.peft_type = this.peftType;
    Object.assign(out, structuredClone({ ...UNIMPLEMENTED_KEYS_OFF, ...INERT_KEYS, ...INIT_SUBCONFIG_KEYS }));
    const sorted: Record<string, PyJson> = {};
    for (const k of Object.keys(out).sort()) sorted[k] = copyJson(out[k]!);
    return sorted;
  }

  /**
   * Reads adapter_config.json's content (already parsed). Accepts what PEFT writes, from old
   * versions (missing keys take their defaults) to newer ones (unknown keys are dropped with one
   * warning, as PEFT >= 0.14 does). Refuses configs of other PEFT methods and configs that turn on
   * LoRA variants lowrank does not implement, saying which.
   */
  static fromJSON(json: unknown, options: { onWarning?: WarningHandler } = {}): LoraConfig {
    const warn = options.onWarning ?? emitLowrankWarning;
    if (!isPlainObject(json)) {
      throw new Error(`LoraConfig.fromJSON: expected the object parsed from adapter_config.json; got ${showValue(json)}.`);
    }
    if (!("peft_type" in json)) {
      throw new Error(
        `LoraConfig.fromJSON: adapter_config.json has no "peft_type" key (keys: ${Object.keys(json).sort().join(", ") || "none"}); ` +
          'PEFT requires it. Add "peft_type": "LORA" if this is a LoRA adapter.',
      );
    }
    if (json.peft_type !== "LORA") {
      throw new Error(
        `LoraConfig.fromJSON: adapter_config.json is for the PEFT method ${showValue(json.peft_type)}; lowrank ` +
          'implements LoRA only (peft_type "LORA").',
      );
    }
    const init: Record<string, unknown> = {};
    const unknown: string[] = [];
    const ignoredSubconfigs: string[] = [];
    for (const [key, value] of Object.entries(json)) {
      if (key === "peft_type") continue;
      const field = FIELD_BY_JSON_KEY.get(key);
      if (field === "peftVersion" && value === null) {
        // PEFT fills a missing version with its own on load; lowrank does the same
      } else if (field !== undefined) {
        init[field] = value;
      } else if (key in UNIMPLEMENTED_KEYS) {
        const { off, feature } = UNIMPLEMENTED_KEYS[key]!;
        if (!jsonEqual(value, off)) {
          throw new Error(
            `LoraConfig.fromJSON: adapter_config.json sets ${key}=${showValue(value)}, which turns on ${feature}; ` +
              `lowrank does not implement it, so this adapter cannot be loaded faithfully (lowrank needs ${key}=${showValue(off)}).`,
          );
        }
      } else if (key in INIT_SUBCONFIG_KEYS) {
        if (!jsonEqual(value, INIT_SUBCONFIG_KEYS[key]!)) ignoredSubconfigs.push(key);
      } else if (key === "runtime_config") {
        warn("adapter_config.json contains a runtime_config key; it is ignored (runtime settings are never saved), as in PEFT.");
      } else if (!(key in INERT_KEYS)) {
        unknown.push(key);
      }
    }
    const init_ = init.initLoraWeights;
    if (typeof init_ === "string" && init_ in PEFT_ONLY_INITS) {
      const fix =
        PEFT_ONLY_INITS[init_] === "weights-only"
          ? 'It only decides how new weights start; the saved weights are complete, so set "init_lora_weights": true to load them.'
          : "That initialisation also modified the base model's weights, so the adapter only works on that modified base: " +
            "convert it to a plain LoRA with PEFT (save_pretrained(path_initial_model_for_weight_conversion=...)) first.";
      throw new Error(`LoraConfig.fromJSON: init_lora_weights ${showValue(init_)} is a PEFT initialisation lowrank does not implement. ${fix}`);
    }
    if (ignoredSubconfigs.length > 0) {
      warn(
        `adapter_config.json sets ${ignoredSubconfigs.sort().join(", ")}, used only by initialisations lowrank does not ` +
          `implement and not by init_lora_weights=${showValue(init_ ?? true)}; ignored (PEFT ignores them too).`,
      );
    }
    if (unknown.length > 0) {
      unknown.sort();
      const enable = json.enable_lora;
      const legacy =
        Array.isArray(enable) && enable.includes(false)
          ? ` enable_lora=${showValue(enable)} comes from PEFT <= 0.2 (loralib's MergedLinear): its lora_B covers only the ` +
            "enabled slices of the fused projection, which today's LoRA layout cannot represent; expect the tensor shapes to be refused."
          : "";
      warn(
        `adapter_config.json has keys lowrank's LoraConfig does not know: ${unknown.join(", ")}; they are ignored, as PEFT ` +
          `ignores unknown keys. They probably come from a newer PEFT version or another tool.${legacy}`,
      );
    }
    return new LoraConfig(init as LoraConfigInit);
  }
}

/** A deep copy of a JSON value with object keys sorted (json.dumps(sort_keys=True) sorts nested ones too). */
function copyJson(v: PyJson): PyJson {
  if (v === null || typeof v !== "object" || v instanceof PyFloat) return v;
  if (Array.isArray(v)) return v.map(copyJson);
  const obj = v as Record<string, PyJson>;
  const out: Record<string, PyJson> = {};
  for (const k of Object.keys(obj).sort()) out[k] = copyJson(obj[k]!);
  return out;
}

function jsonEqual(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}
