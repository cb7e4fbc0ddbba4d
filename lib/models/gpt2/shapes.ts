// GPT-2's module tree and parameter count written down from its config, with the same names, kinds
// and order as GPT2LMHeadModel's namedModules() (test/analysis/params.test.ts checks them against a
// real instance), for parameter tables that build no model; and the released model sizes.
import type { ModuleShape } from "../../nn/shapes.js";
import { GPT2Config } from "./config.js";

/** The GPT-2 family released by OpenAI (transformers' gpt2, gpt2-medium, -large, -xl), and the tiny test model. */
export const GPT2_PRESETS = {
  "124m": { nEmbd: 768, nLayer: 12, nHead: 12 },
  "355m": { nEmbd: 1024, nLayer: 24, nHead: 16 },
  "774m": { nEmbd: 1280, nLayer: 36, nHead: 20 },
  "1558m": { nEmbd: 1600, nLayer: 48, nHead: 25 },
  // test/fixtures/gpt2-tiny: the model the PEFT fixtures were made on
  tiny: { vocabSize: 101, nPositions: 64, nEmbd: 64, nLayer: 2, nHead: 4 },
} as const;
export type GPT2Preset = keyof typeof GPT2_PRESETS;
export const GPT2_PRESET_NAMES = Object.keys(GPT2_PRESETS) as GPT2Preset[];

export function gpt2PresetConfig(name: GPT2Preset): GPT2Config {
  return new GPT2Config(GPT2_PRESETS[name]);
}

/**
 * GPT2LMHeadModel's named modules (root excluded) with the shapes LoRA needs. Conv1D(nf, nx)
 * maps nx inputs to nf outputs. A tied lm_head holds wte's weight.
 */
export function gpt2ModuleShapes(config: GPT2Config): ModuleShape[] {
  const C = config.nEmbd, I = config.innerDim;
  const conv = (name: string, inFeatures: number, outFeatures: number): ModuleShape => ({ name, kind: "conv1d", inFeatures, outFeatures });
  const other = (name: string): ModuleShape => ({ name, kind: "other" });
  const t = "transformer";
  const out: ModuleShape[] = [
    other(t),
    { name: `${t}.wte`, kind: "embedding", numEmbeddings: config.vocabSize, embeddingDim: C, ...(config.tieWordEmbeddings ? { tiedWith: "lm_head" } : {}) },
    { name: `${t}.wpe`, kind: "embedding", numEmbeddings: config.nPositions, embeddingDim: C },
    other(`${t}.drop`),
    other(`${t}.h`),
  ];
  for (let i = 0; i < config.nLayer; i++) {
    const h = `${t}.h.${i}`;
    out.push(
      other(h), other(`${h}.ln_1`), other(`${h}.attn`), conv(`${h}.attn.c_attn`, C, 3 * C), conv(`${h}.attn.c_proj`, C, C),
      other(`${h}.attn.resid_dropout`), other(`${h}.ln_2`), other(`${h}.mlp`), conv(`${h}.mlp.c_fc`, C, I), conv(`${h}.mlp.c_proj`, I, C),
      other(`${h}.mlp.dropout`),
    );
  }
  out.push(other(`${t}.ln_f`));
  out.push({ name: "lm_head", kind: "linear", inFeatures: C, outFeatures: config.vocabSize, isOutputHead: true, ...(config.tieWordEmbeddings ? { tiedWith: `${t}.wte` } : {}) });
  return out;
}

/** GPT-2's parameter count, the tied lm_head counted once (as PyTorch's model.parameters() does). */
export function gpt2ParameterCount(config: GPT2Config): number {
  return config.parameterCount;
}
