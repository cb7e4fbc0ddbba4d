// Hugging Face checkpoints for GPT-2: config.json + model.safetensors (or shards listed in
// model.safetensors.index.json), keys with or without the "transformer." prefix, F32/F16/BF16.
import type { Module } from "../../nn/module.js";
import { loadCheckpoint, type LoadOptions } from "../checkpoint.js";
import { GPT2Config } from "./config.js";

export { readCheckpointFile, type LoadOptions } from "../checkpoint.js";

/**
 * The parameter a checkpoint key holds, with transformers' "transformer." prefix (files saved from
 * GPT2Model lack it), or null for keys that are not parameters: the tied lm_head (a copy of wte)
 * and the causal-mask buffers older checkpoints carry (h.N.attn.bias, h.N.attn.masked_bias).
 */
export function checkpointParamName(key: string): string | null {
  if (key === "lm_head.weight" || /(^|\.)h\.\d+\.attn\.(masked_)?bias$/.test(key)) return null;
  return key.startsWith("transformer.") ? key : `transformer.${key}`;
}

/**
 * Loads a GPT-2 checkpoint directory in Hugging Face layout, in eval mode (as transformers does),
 * into the model `create` builds for its config (GPT2LMHeadModel.fromPretrained passes its
 * constructor; this file does not import the model, which imports it).
 */
export function loadGPT2<M extends Module>(dir: string, opts: LoadOptions, create: (config: GPT2Config) => M): M {
  return loadCheckpoint(dir, opts, {
    what: "GPT2LMHeadModel.fromPretrained",
    family: "GPT-2",
    parseConfig: (json) => GPT2Config.fromHF(json),
    paramName: () => checkpointParamName,
    create,
  });
}
