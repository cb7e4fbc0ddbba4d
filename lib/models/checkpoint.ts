// Loading a Hugging Face checkpoint folder (config.json + model.safetensors, or the shards that
// model.safetensors.index.json lists) into a model, shared by the model families: each names its
// config parser and how file keys map to its parameter names.
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { writeJsonAtomic } from "../io/atomic.js";
import { readSafetensors, readShardedSafetensors, SAFETENSORS_INDEX_FILE, toTensor, writeSafetensors, type SafetensorsFile } from "../io/safetensors.js";
import type { DeviceLike } from "../tensor/device.js";
import type { DType } from "../tensor/dtype.js";
import type { Generator } from "../tensor/random.js";
import { formatShape, noGrad, type Tensor } from "../tensor/tensor.js";
import { Conv1D, Embedding, Linear } from "../nn/layers.js";
import type { Module } from "../nn/module.js";
import { resolveModelDir } from "./hub.js";

export interface LoadOptions {
  device?: DeviceLike;
  /**
   * dtype of the frozen weight matrices: float32 (the default), or bfloat16 — the weights of every
   * Linear, Conv1D and Embedding are kept in bf16 (half the memory; bf16 tensor-core GEMMs on CUDA,
   * as autocast runs them) and frozen; biases and norms stay float32, as do LoRA adapters.
   */
  dtype?: DType;
  /** Dropout stream for training (the weights come from the file). */
  generator?: Generator;
  /**
   * For a Hugging Face model name resolved in the local cache: the branch, tag or commit hash of
   * its snapshot ("main" by default). Ignored for a folder path.
   */
  revision?: string;
}

/** config.json of a checkpoint folder as a JSON object, with errors that name the file. */
export function readConfigJson(dir: string, what: string, family: string): Record<string, unknown> {
  const path = join(dir, "config.json");
  if (!existsSync(dir)) throw new Error(`${what}: model directory ${dir} does not exist`);
  if (!existsSync(path)) throw new Error(`${what}: ${path} is missing; a Hugging Face ${family} checkpoint has config.json and model.safetensors`);
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, "utf8"));
  } catch (err) {
    throw new Error(`${what}: ${path} is not valid JSON (${(err as Error).message})`);
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) throw new Error(`${what}: ${path} must hold a JSON object`);
  return json as Record<string, unknown>;
}

/** The weights of a checkpoint folder: model.safetensors, or the shards model.safetensors.index.json lists. */
export function readCheckpointFile(dir: string): SafetensorsFile {
  if (existsSync(join(dir, SAFETENSORS_INDEX_FILE))) return readShardedSafetensors(dir);
  const single = join(dir, "model.safetensors");
  if (existsSync(single)) return readSafetensors(single);
  throw new Error(
    `no weights in ${dir}: expected model.safetensors or ${SAFETENSORS_INDEX_FILE} ` +
      `(PyTorch .bin checkpoints are not read; re-save with save_pretrained(safe_serialization=True))`,
  );
}

export interface CheckpointFamily<C, M extends Module> {
  /** "GPT2LMHeadModel.fromPretrained": the prefix of every error. */
  what: string;
  /** "GPT-2": named in the message for a folder without config.json. */
  family: string;
  parseConfig(json: Record<string, unknown>): C;
  /** For a config: the parameter a file key holds, or null for keys that hold none (tied copies, buffers). */
  paramName(config: C): (key: string) => string | null;
  create(config: C): M;
}

/**
 * Loads a checkpoint folder in Hugging Face layout, or a model name in the local Hugging Face cache
 * (see hub.ts), into the model `family.create` builds for its config, in eval mode as transformers' from_pretrained returns it. Every parameter must come from
 * the file with its shape, and every key of the file must be used: the errors list what is missing,
 * unexpected or mis-shaped.
 */
export function loadCheckpoint<C, M extends Module>(nameOrPath: string, opts: LoadOptions, family: CheckpointFamily<C, M>): M {
  const { what } = family;
  const dir = resolveModelDir(nameOrPath, what, opts.revision);
  if (opts.dtype && opts.dtype !== "float32" && opts.dtype !== "bfloat16") {
    throw new Error(`${what}: dtype must be "float32" (the default) or "bfloat16", got "${opts.dtype}"`);
  }
  const json = readConfigJson(dir, what, family.family);
  let config: C;
  try {
    config = family.parseConfig(json);
  } catch (err) {
    throw new Error(`${what}: ${join(dir, "config.json")}: ${(err as Error).message}`, { cause: err });
  }
  const file = readCheckpointFile(dir);
  let model: M;
  try {
    model = family.create(config);
  } catch (err) {
    // e.g. sizes in config.json that no memory holds: say which folder's config
    throw new Error(`${what}(${dir}): ${(err as Error).message}`, { cause: err });
  }
  const paramName = family.paramName(config);
  const expected = new Map(model.namedParameters().map(([k, t]) => [k, t]));
  const source = new Map<string, string>(); // parameter name -> key in the file
  const unexpected: string[] = [];
  for (const key of file.names) {
    const name = paramName(key);
    if (name === null) continue;
    if (expected.has(name)) source.set(name, key);
    else unexpected.push(key);
  }
  const missing = [...expected.keys()].filter((k) => !source.has(k));
  const misShaped: string[] = [];
  for (const [name, key] of source) {
    const entry = file.get(key);
    const want = expected.get(name)!.shape;
    if (entry.shape.length !== want.length || entry.shape.some((s, i) => s !== want[i])) {
      misShaped.push(`${key}: file has ${formatShape(entry.shape)}, model expects ${formatShape(want)}`);
    }
  }
  if (missing.length || unexpected.length || misShaped.length) {
    model.dispose();
    // the first few of each, so a config far off the weights gives a readable line
    const some = (list: string[], sep: string) => list.slice(0, 4).join(sep) + (list.length > 4 ? `${sep}and ${list.length - 4} more` : "");
    const parts = [
      missing.length ? `missing tensors: ${some(missing, ", ")}` : "",
      unexpected.length ? `unexpected tensors: ${some(unexpected, ", ")}` : "",
      misShaped.length ? `mis-shaped tensors: ${some(misShaped, "; ")}` : "",
    ].filter(Boolean);
    throw new Error(`${what}(${dir}): the weights do not fit config.json: ${parts.join(" | ")}`);
  }
  const state: Record<string, Tensor> = {};
  try {
    noGrad(() => {
      // dtype float32: a tensor stored as integers is refused by name instead of cast into a weight
      for (const [name, key] of source) state[name] = toTensor({ ...file.get(key), name: key }, { device: opts.device, dtype: "float32" });
      model.loadStateDict(state, { strict: true });
    });
  } catch (err) {
    model.dispose();
    throw new Error(`${what}(${dir}): ${(err as Error).message}`, { cause: err });
  } finally {
    Object.values(state).forEach((t) => t.dispose());
  }
  if (opts.dtype === "bfloat16") keepWeightsIn(model, "bfloat16");
  return model.eval();
}

/** Converts the weight matrices of a model's Linear, Conv1D and Embedding layers to `dtype`, frozen. */
export function keepWeightsIn(model: Module, dtype: DType): void {
  const device = model.parameters()[0]?.deviceInfo;
  if (!device) return;
  const layer = (m: Module): m is Linear | Conv1D | Embedding => m instanceof Linear || m instanceof Conv1D || m instanceof Embedding;
  model.to(device, dtype, (m, name) => name === "weight" && layer(m));
  for (const m of model.modules()) if (layer(m)) m.weight.requiresGrad = false;
}

/**
 * Writes a model as transformers' save_pretrained does: config.json (config.toHF()) and
 * model.safetensors with the parameters under their transformers names, metadata format "pt". A
 * tied head is not a parameter of its own, so it is not written (transformers re-ties it on load).
 */
export function saveCheckpoint(model: Module & { readonly config: { toHF(): Record<string, unknown> } }, dir: string): void {
  mkdirSync(dir, { recursive: true });
  writeJsonAtomic(join(dir, "config.json"), model.config.toHF());
  writeSafetensors(join(dir, "model.safetensors"), Object.fromEntries(model.namedParameters()), { format: "pt" });
}
