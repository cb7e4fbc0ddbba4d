// Hugging Face checkpoints for GPT-2: config.json + model.safetensors (or shards listed in
// model.safetensors.index.json), keys with or without the "transformer." prefix, F32/F16/BF16.
import type { Module } from "../../nn/module.js";
import type { CheckpointFamily } from "../checkpoint.js";
import { GPT2Config } from "./config.js";

export { readCheckpointFile, type LoadOptions } from "../checkpoint.js";

/**
 * The parameter a checkpoint key holds, with transformers' "transformer." prefix (files saved from
 * GPT2Model lack it), or null for keys that are not parameters: a tied lm_head (a copy of wte)
 * and the causal-mask buffers older checkpoints carry (h.N.attn.bias, h.N.attn.masked_bias).
 */
export function checkpointParamName(key: string, tied = true): string | null {
  if (key === "lm_head.weight") return tied ? null : key;
  if (/(^|\.)h\.\d+\.attn\.(masked_)?bias$/.test(key)) return null;
  return key.startsWith("transformer.") ? key : `transformer.${key}`;
}

/**
 * How GPT-2 checkpoints load (for loadCheckpoint and loadCheckpointAsync), into the model `create`
 * builds for its config (GPT2LMHeadModel.fromPretrained passes its constructor; this file does not
 * import the model, which imports it).
 */
export function gpt2Checkpoint<M extends Module>(create: (config: GPT2Config) => M): CheckpointFamily<GPT2Config, M> {
  return {
    what: "GPT2LMHeadModel.fromPretrained",
    family: "GPT-2",
    parseConfig: (json) => GPT2Config.fromHF(json),
    paramName: (config) => (key) => checkpointParamName(key, config.tieWordEmbeddings),
    create,
  };
}
