// AutoModelForCausalLM: the model class a checkpoint folder's config.json names by model_type.
import { readConfigJson, type LoadOptions } from "./checkpoint.js";
import { resolveModelDir } from "./hub.js";
import { GPT2LMHeadModel } from "./gpt2/model.js";
import { LLAMA_MODEL_TYPES } from "./llama/config.js";
import { LlamaForCausalLM } from "./llama/model.js";

export type CausalLM = GPT2LMHeadModel | LlamaForCausalLM;

export const AUTO_MODEL_TYPES = ["gpt2", ...LLAMA_MODEL_TYPES] as const;

/** config.json's model_type of a loaded model ("gpt2", "llama", "qwen3", ...). */
export function modelTypeOf(model: CausalLM): string {
  return model instanceof GPT2LMHeadModel ? "gpt2" : model.config.modelType;
}

/**
 * The longest sequence the model was made for: GPT-2's n_positions (its position table ends
 * there), the Llama family's max_position_embeddings (RoPE has no table, but the model was
 * trained up to it).
 */
export function contextLength(model: CausalLM): number {
  return model instanceof GPT2LMHeadModel ? model.config.nPositions : model.config.maxPositionEmbeddings;
}

export const AutoModelForCausalLM = {
  /**
   * Loads a checkpoint folder (config.json + safetensors), or a Hugging Face model name such as
   * "Qwen/Qwen2.5-0.5B" already in the local Hugging Face cache (at opts.revision), as the class
   * its model_type names: gpt2 -> GPT2LMHeadModel; llama, mistral, qwen2, qwen3 -> LlamaForCausalLM. In eval mode.
   */
  fromPretrained(nameOrPath: string, opts: LoadOptions = {}): CausalLM {
    // resolved once here, so the class below gets the snapshot folder itself
    const dir = resolveModelDir(nameOrPath, "AutoModelForCausalLM.fromPretrained", opts.revision);
    const json = readConfigJson(dir, "AutoModelForCausalLM.fromPretrained", "causal LM");
    const type = json.model_type;
    if (type === "gpt2") return GPT2LMHeadModel.fromPretrained(dir, opts);
    if ((LLAMA_MODEL_TYPES as readonly unknown[]).includes(type)) return LlamaForCausalLM.fromPretrained(dir, opts);
    throw new Error(
      `AutoModelForCausalLM.fromPretrained: ${dir}/config.json has model_type ${JSON.stringify(type) ?? "(none)"}; lowrank loads ${AUTO_MODEL_TYPES.join(", ")}`,
    );
  },
};
