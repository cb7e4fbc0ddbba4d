// Reading weight matrices straight from safetensors files as float64, one tensor at a time, for
// the spectra of `lowrank svd`: no model is built, so a checkpoint pair costs the files' bytes
// plus one matrix in flight, whatever the model.
import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { readSafetensors, toTensor, type SafetensorsEntry } from "../io/safetensors.js";
import { checkpointParamName, readCheckpointFile } from "../models/gpt2/checkpoint.js";
import { LLAMA_MODEL_TYPES, LlamaConfig } from "../models/llama/config.js";
import { llamaParamName } from "../models/llama/model.js";
import { matrix, type Matrix } from "../linalg/index.js";
import { ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME, parseAdapterStateKey } from "../peft/format.js";
import { LoraConfig, type WarningHandler } from "../peft/config.js";

/** Layer order: h.2 before h.10 (safetensors files list tensors in string order). */
export const byModuleOrder = new Intl.Collator("en", { numeric: true }).compare;

/** A tensor's values as float64 (F32, F16, BF16 and F64 files alike). */
export function entryValues(entry: SafetensorsEntry): Float64Array {
  const t = toTensor(entry);
  try {
    return Float64Array.from(t.dataSync());
  } finally {
    t.dispose();
  }
}

export function entryMatrix(entry: SafetensorsEntry): Matrix {
  if (entry.shape.length !== 2) throw new Error(`tensor "${entry.name}" has shape [${entry.shape.join(", ")}]; expected a matrix`);
  return matrix(entry.shape[0]!, entry.shape[1]!, entryValues(entry));
}

/**
 * How the checkpoint in `dir` names its parameters, by config.json's model_type, as its model's
 * fromPretrained reads them: the Llama family's keys as stored (less a tied lm_head's copy and
 * rotary buffers), GPT-2's with the "transformer." prefix (also for a folder without config.json),
 * less a tied head's copy.
 */
function paramNamer(dir: string): (key: string) => string | null {
  const path = join(dir, "config.json");
  if (!existsSync(path)) return (key) => checkpointParamName(key);
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(readFileSync(path, "utf8")) as Record<string, unknown>;
  } catch (err) {
    throw new Error(`${path} is not valid JSON: ${(err as Error).message}`, { cause: err });
  }
  // GPT-2 ties its head unless config.json says tie_word_embeddings false
  if (!(LLAMA_MODEL_TYPES as readonly unknown[]).includes(json.model_type)) return (key) => checkpointParamName(key, json.tie_word_embeddings !== false);
  const config = LlamaConfig.fromHF(json);
  return (key) => llamaParamName(config, key);
}

/**
 * The weights of a Hugging Face checkpoint folder (model.safetensors, or the shards its
 * model.safetensors.index.json lists), keyed by full parameter name as the model's
 * fromPretrained reads them (paramNamer): GPT-2 keys saved without "transformer." get it.
 */
export function readCheckpointWeights(dir: string): Map<string, SafetensorsEntry> {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new Error(`${dir}: no such directory`);
  const byName = new Map<string, SafetensorsEntry>();
  const paramName = paramNamer(dir);
  for (const e of readCheckpointFile(dir).entries) {
    const name = paramName(e.name);
    if (name !== null) byName.set(name, e);
  }
  return byName;
}

/** One adapted module of a saved adapter: ΔW = scaling·B·A (B out×r, A r×in; for embeddings ΔW is its transpose). */
export interface AdapterFactors {
  /** The module path in the base model, e.g. "transformer.h.0.attn.c_attn". */
  name: string;
  kind: "linear" | "embedding";
  a: Matrix;
  b: Matrix;
  scaling: number;
}

/**
 * The LoRA factors of every adapted module in a PEFT adapter folder (adapter_config.json for the
 * scaling per module, adapter_model.safetensors for A and B), in layer order.
 */
export function readAdapterFactors(dir: string, opts: { onWarning?: WarningHandler } = {}): { config: LoraConfig; factors: AdapterFactors[] } {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new Error(`${dir}: no such directory`);
  const configPath = join(dir, ADAPTER_CONFIG_NAME), weightsPath = join(dir, ADAPTER_WEIGHTS_NAME);
  for (const p of [configPath, weightsPath]) if (!existsSync(p)) throw new Error(`${dir}: no ${p.slice(dir.length + 1)} in it; is it a PEFT adapter folder?`);
  let config: LoraConfig;
  try {
    config = LoraConfig.fromJSON(JSON.parse(readFileSync(configPath, "utf8")), { onWarning: opts.onWarning });
  } catch (err) {
    throw new Error(`${configPath}: ${(err as Error).message}`, { cause: err });
  }
  const parts = new Map<string, { a?: SafetensorsEntry; b?: SafetensorsEntry; kind: AdapterFactors["kind"] }>();
  for (const entry of readSafetensors(weightsPath).entries) {
    const key = parseAdapterStateKey(entry.name);
    if (key.kind !== "lora") continue; // trained biases and modules_to_save copies are not low-rank updates
    const kind = key.tensor.startsWith("lora_embedding") ? "embedding" : "linear";
    const slot = parts.get(key.modulePath) ?? { kind };
    if (key.tensor === "lora_A" || key.tensor === "lora_embedding_A") slot.a = entry;
    else if (key.tensor === "lora_B" || key.tensor === "lora_embedding_B") slot.b = entry;
    parts.set(key.modulePath, slot);
  }
  const factors: AdapterFactors[] = [];
  for (const [name, { a, b, kind }] of [...parts].sort(([x], [y]) => byModuleOrder(x, y))) {
    if (!a || !b) throw new Error(`${weightsPath}: module ${name} has lora_${a ? "B" : "A"} missing; the file is incomplete`);
    factors.push({ name, kind, a: entryMatrix(a), b: entryMatrix(b), scaling: config.scalingFor(name) });
  }
  if (factors.length === 0) throw new Error(`${weightsPath}: holds no LoRA tensors (lora_A/lora_B)`);
  return { config, factors };
}
