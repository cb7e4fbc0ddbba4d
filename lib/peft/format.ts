// PEFT's on-disk adapter format, as PEFT 0.21 reads and writes it: file and folder names, the
// tensor keys of adapter_model.safetensors, and the print_trainable_parameters line. Python PEFT
// must load what we save and we what it saves, so every rule here mirrors PEFT's code
// (peft/utils/save_and_load.py and peft/peft_model.py) rather than what would be natural in JS.
// The Python emulation it rests on lives in lib/io: json.dumps (pyjson.ts), f-string number
// formats (pyformat.ts) and `re` patterns (pyregex.ts).
import { join } from "node:path";
import { formatFixed, formatThousands } from "../io/pyformat.js";

/** The adapter's configuration file (`peft/utils/constants.py::CONFIG_NAME`). */
export const ADAPTER_CONFIG_NAME = "adapter_config.json";
/** The adapter's weights, safetensors (`SAFETENSORS_WEIGHTS_NAME`). */
export const ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors";
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
// print_trainable_parameters
// ---------------------------------------------------------------------------------------------

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
