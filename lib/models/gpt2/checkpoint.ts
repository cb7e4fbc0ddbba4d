// Hugging Face checkpoints for GPT-2: config.json + model.safetensors (or shards listed in
// model.safetensors.index.json), keys with or without the "transformer." prefix, F32/F16/BF16.
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { writeJsonAtomic } from "../../io/atomic.js";
import { readSafetensors, readShardedSafetensors, SAFETENSORS_INDEX_FILE, toTensor, writeSafetensors, type SafetensorsFile } from "../../io/safetensors.js";
import type { DeviceLike } from "../../tensor/device.js";
import type { DType } from "../../tensor/dtype.js";
import type { Generator } from "../../tensor/random.js";
import { formatShape, noGrad, type Tensor } from "../../tensor/tensor.js";
import type { Module } from "../../nn/module.js";
import { GPT2Config } from "./config.js";

export interface LoadOptions {
  device?: DeviceLike;
  /** Compute dtype of the weights; float32 (the default) on every backend. */
  dtype?: DType;
  /** Dropout stream for training (the weights come from the file). */
  generator?: Generator;
}

/**
 * The parameter a checkpoint key holds, with transformers' "transformer." prefix (files saved from
 * GPT2Model lack it), or null for keys that are not parameters: the tied lm_head (a copy of wte)
 * and the causal-mask buffers older checkpoints carry (h.N.attn.bias, h.N.attn.masked_bias).
 */
export function checkpointParamName(key: string): string | null {
  if (key === "lm_head.weight" || /(^|\.)h\.\d+\.attn\.(masked_)?bias$/.test(key)) return null;
  return key.startsWith("transformer.") ? key : `transformer.${key}`;
}

function readConfig(dir: string): GPT2Config {
  const path = join(dir, "config.json");
  if (!existsSync(dir)) throw new Error(`GPT2LMHeadModel.fromPretrained: model directory ${dir} does not exist`);
  if (!existsSync(path)) throw new Error(`GPT2LMHeadModel.fromPretrained: ${path} is missing; a Hugging Face GPT-2 checkpoint has config.json and model.safetensors`);
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, "utf8"));
  } catch (err) {
    throw new Error(`GPT2LMHeadModel.fromPretrained: ${path} is not valid JSON (${(err as Error).message})`);
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) throw new Error(`GPT2LMHeadModel.fromPretrained: ${path} must hold a JSON object`);
  try {
    return GPT2Config.fromHF(json as Record<string, unknown>);
  } catch (err) {
    throw new Error(`GPT2LMHeadModel.fromPretrained: ${path}: ${(err as Error).message}`, { cause: err });
  }
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

/**
 * Loads a GPT-2 checkpoint directory in Hugging Face layout, in eval mode (as transformers does),
 * into the model `create` builds for its config (GPT2LMHeadModel.fromPretrained passes its
 * constructor; this file does not import the model, which imports it).
 */
export function loadGPT2<M extends Module>(dir: string, opts: LoadOptions, create: (config: GPT2Config) => M): M {
  if (opts.dtype && opts.dtype !== "float32") {
    throw new Error(`GPT2LMHeadModel.fromPretrained: dtype "${opts.dtype}" is not supported for compute yet; load as float32 (the default)`);
  }
  const config = readConfig(dir);
  const file = readCheckpointFile(dir);
  let model: M;
  try {
    model = create(config);
  } catch (err) {
    // e.g. sizes in config.json that no memory holds: say which folder's config
    throw new Error(`GPT2LMHeadModel.fromPretrained(${dir}): ${(err as Error).message}`, { cause: err });
  }
  const expected = new Map(model.namedParameters().map(([k, t]) => [k, t]));
  const source = new Map<string, string>(); // parameter name -> key in the file
  const unexpected: string[] = [];
  for (const key of file.names) {
    const name = checkpointParamName(key);
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
    throw new Error(`GPT2LMHeadModel.fromPretrained(${dir}): the weights do not fit config.json: ${parts.join(" | ")}`);
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
    throw new Error(`GPT2LMHeadModel.fromPretrained(${dir}): ${(err as Error).message}`, { cause: err });
  } finally {
    Object.values(state).forEach((t) => t.dispose());
  }
  return model.eval();
}

/** Writes config.json and model.safetensors (transformers' key names, lm_head left tied) atomically. */
export function saveGPT2(model: Module & { readonly config: GPT2Config }, dir: string): void {
  mkdirSync(dir, { recursive: true });
  writeJsonAtomic(join(dir, "config.json"), model.config.toHF());
  writeSafetensors(join(dir, "model.safetensors"), Object.fromEntries(model.namedParameters()), { format: "pt" });
}
