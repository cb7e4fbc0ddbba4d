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

/** The class a checkpoint's config.json names by model_type, and the folder it is in. */
function causalLMClass(nameOrPath: string, opts: LoadOptions): { dir: string; cls: typeof GPT2LMHeadModel | typeof LlamaForCausalLM } {
  // resolved once here, so the class gets the snapshot folder itself
  const dir = resolveModelDir(nameOrPath, "AutoModelForCausalLM.fromPretrained", opts.revision);
  const json = readConfigJson(dir, "AutoModelForCausalLM.fromPretrained", "causal LM");
  const type = json.model_type;
  if (type === "gpt2") return { dir, cls: GPT2LMHeadModel };
  if ((LLAMA_MODEL_TYPES as readonly unknown[]).includes(type)) return { dir, cls: LlamaForCausalLM };
  throw new Error(
    `AutoModelForCausalLM.fromPretrained: ${dir}/config.json has model_type ${JSON.stringify(type) ?? "(none)"}; lowrank loads ${AUTO_MODEL_TYPES.join(", ")}`,
  );
}

export const AutoModelForCausalLM = {
  /**
   * Loads a checkpoint folder (config.json + safetensors), or a Hugging Face model name such as
   * "Qwen/Qwen2.5-0.5B" already in the local Hugging Face cache (at opts.revision), as the class
   * its model_type names: gpt2 -> GPT2LMHeadModel; llama, mistral, qwen2, qwen3 -> LlamaForCausalLM. In
   * eval mode. The weights are read off the main thread; fromPretrainedSync blocks instead.
   */
  fromPretrained(nameOrPath: string, opts: LoadOptions = {}): Promise<CausalLM> {
    try {
      const { dir, cls } = causalLMClass(nameOrPath, opts);
      return cls.fromPretrained(dir, opts);
    } catch (err) {
      return Promise.reject(err);
    }
  },

  /** fromPretrained, blocking the thread until the model is loaded. */
  fromPretrainedSync(nameOrPath: string, opts: LoadOptions = {}): CausalLM {
    const { dir, cls } = causalLMClass(nameOrPath, opts);
    return cls.fromPretrainedSync(dir, opts);
  },
};
