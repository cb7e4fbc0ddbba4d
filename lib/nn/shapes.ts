// A model's modules described by name, kind and size, without the modules themselves: what LoRA
// target matching (lib/peft/targets.ts) and parameter counts work on, so that a model's module
// tree can be written down from its config (lib/models/gpt2/shapes.ts) at no memory cost.

/** What a module is, as far as LoRA cares: nn.Linear, GPT-2's Conv1D (weight in×out), nn.Embedding, or anything else. */
export type ModuleKind = "linear" | "conv1d" | "embedding" | "other";

/** One entry of the base model's named_modules(), without the root. */
export interface ModuleInfo {
  /** Full dotted name relative to the base model, e.g. "transformer.h.0.attn.c_attn". */
  name: string;
  kind: ModuleKind;
  /** The model's output embedding (lm_head): "all-linear" leaves it out. */
  isOutputHead?: boolean;
  /** Another module sharing this module's weight (GPT-2 ties lm_head and transformer.wte). */
  tiedWith?: string;
}

/** A module with the shape LoRA needs: in/out features for linear and Conv1D, table size for embeddings. */
export interface ModuleShape extends ModuleInfo {
  inFeatures?: number;
  outFeatures?: number;
  numEmbeddings?: number;
  embeddingDim?: number;
}
