// AutoModelForCausalLM: the model class a checkpoint folder's config.json names by model_type.
import { readConfigJson, type LoadOptions } from "./checkpoint.js";
import { resolveModelDir } from "./hub.js";
import { GPT2LMHeadModel } from "./gpt2/model.js";
import { LLAMA_MODEL_TYPES } from "./llama/config.js";
import { LlamaForCausalLM } from "./llama/model.js";

export type CausalLM = GPT2LMHeadModel | LlamaForCausalLM;

export const AUTO_MODEL_TYPES = ["gpt2", ...LLAMA_MODEL_TYPES] as const;

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
