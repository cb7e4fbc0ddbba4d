// Loading a Hugging Face checkpoint folder (config.json + model.safetensors, or the shards that
// model.safetensors.index.json lists) into a model, shared by the model families: each names its
// config parser and how file keys map to its parameter names.
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { setImmediate as yieldToEventLoop } from "node:timers/promises";
import { writeFileAtomicAsync, writeJsonAtomic, writeJsonAtomicAsync } from "../io/atomic.js";
import {
  readSafetensors, readSafetensorsAsync, readShardedSafetensors, readShardedSafetensorsAsync, SAFETENSORS_INDEX_FILE, serializeSafetensors, toTensor,
  writeSafetensors, type SafetensorsFile,
} from "../io/safetensors.js";
import type { DeviceLike } from "../tensor/device.js";
import type { DType } from "../tensor/dtype.js";
import type { Generator as RandomGenerator } from "../tensor/random.js";
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
  generator?: RandomGenerator;
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

/** The file holding a checkpoint folder's weights: the shard index, else model.safetensors. */
function checkpointWeights(dir: string): { sharded: boolean; path: string } {
  if (existsSync(join(dir, SAFETENSORS_INDEX_FILE))) return { sharded: true, path: join(dir, SAFETENSORS_INDEX_FILE) };
  const single = join(dir, "model.safetensors");
  if (existsSync(single)) return { sharded: false, path: single };
  throw new Error(
    `no weights in ${dir}: expected model.safetensors or ${SAFETENSORS_INDEX_FILE} ` +
      `(PyTorch .bin checkpoints are not read; re-save with save_pretrained(safe_serialization=True))`,
  );
}

/** The weights of a checkpoint folder: model.safetensors, or the shards model.safetensors.index.json lists. */
export function readCheckpointFile(dir: string): SafetensorsFile {
  const { sharded, path } = checkpointWeights(dir);
  return sharded ? readShardedSafetensors(dir) : readSafetensors(path);
}

/** The Promise form of readCheckpointFile: the reads run off the main thread. */
export async function readCheckpointFileAsync(dir: string): Promise<SafetensorsFile> {
  const { sharded, path } = checkpointWeights(dir);
  return sharded ? readShardedSafetensorsAsync(dir) : readSafetensorsAsync(path);
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
 * What a load asks of its driver: the weights of a folder read (it is given the file back), or a
 * pause between two tensors (the Promise form yields to the event loop there; the blocking form
 * goes straight on).
 */
type LoadStep = { read: string } | { pause: true };

/**
 * Loads a checkpoint folder in Hugging Face layout, or a model name in the local Hugging Face cache
 * (see hub.ts), into the model `family.create` builds for its config, in eval mode as transformers' from_pretrained returns it. Every parameter must come from
 * the file with its shape, and every key of the file must be used: the errors list what is missing,
 * unexpected or mis-shaped. Written once as a generator of LoadSteps for both forms below.
 */
function* checkpointLoad<C, M extends Module>(nameOrPath: string, opts: LoadOptions, family: CheckpointFamily<C, M>): Generator<LoadStep, M, SafetensorsFile | undefined> {
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
  const file = (yield { read: dir })!;
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
    // noGrad per tensor, never across a pause: other code runs during a pause and must keep its autograd.
    for (const [name, key] of source) {
      // dtype float32: a tensor stored as integers is refused by name instead of cast into a weight
      state[name] = noGrad(() => toTensor({ ...file.get(key), name: key }, { device: opts.device, dtype: "float32" }));
      yield { pause: true }; // converting one tensor (F16 decoding, a copy to the device) is the longest stretch of main-thread work
    }
    noGrad(() => model.loadStateDict(state, { strict: true }));
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

/** checkpointLoad with blocking reads. */
export function loadCheckpoint<C, M extends Module>(nameOrPath: string, opts: LoadOptions, family: CheckpointFamily<C, M>): M {
  const load = checkpointLoad(nameOrPath, opts, family);
  let step = load.next();
  while (!step.done) step = load.next("read" in step.value ? readCheckpointFile(step.value.read) : undefined);
  return step.value;
}

/**
 * checkpointLoad off the main thread where it matters: the weights are read with fs/promises (libuv's
 * thread pool), and the event loop runs between the tensors' conversions.
 */
export async function loadCheckpointAsync<C, M extends Module>(nameOrPath: string, opts: LoadOptions, family: CheckpointFamily<C, M>): Promise<M> {
  const load = checkpointLoad(nameOrPath, opts, family);
  let step = load.next();
  while (!step.done) {
    if ("read" in step.value) {
      step = load.next(await readCheckpointFileAsync(step.value.read));
    } else {
      await yieldToEventLoop();
      step = load.next();
    }
  }
  return step.value;
}

/** A model that saves as transformers' save_pretrained does: its config has toHF(). */
export type SavableModel = Module & { readonly config: { toHF(): Record<string, unknown> } };

/**
 * Writes a model as transformers' save_pretrained does: config.json (config.toHF()) and
 * model.safetensors with the parameters under their transformers names, metadata format "pt". A
 * tied head is not a parameter of its own, so it is not written (transformers re-ties it on load).
 * Both files are written atomically (a temporary renamed into place).
 */
export function saveCheckpoint(model: SavableModel, dir: string): void {
  mkdirSync(dir, { recursive: true });
  writeJsonAtomic(join(dir, "config.json"), model.config.toHF());
  writeSafetensors(join(dir, "model.safetensors"), Object.fromEntries(model.namedParameters()), { format: "pt" });
}

/**
 * The Promise form of saveCheckpoint: the weights are copied to the host when it is called (what
 * is written is the model as it was then), and the disk writes run off the main thread.
 */
export async function saveCheckpointAsync(model: SavableModel, dir: string): Promise<void> {
  const config = model.config.toHF();
  const weights = serializeSafetensors(Object.fromEntries(model.namedParameters()), { format: "pt" });
  await mkdir(dir, { recursive: true });
  await writeJsonAtomicAsync(join(dir, "config.json"), config);
  await writeFileAtomicAsync(join(dir, "model.safetensors"), weights);
}
