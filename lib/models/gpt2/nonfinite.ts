// Naming what made a model's output NaN or infinite: the base model or which adapter, and the
// tensors (with their transformer layer) that hold NaN/Inf. generate(), `lowrank merge` and the
// Trainer call it once they see non-finite logits or losses, where the activations alone cannot
// tell where the NaN came in. It reads every weight: only for the error path.
import type { Tensor } from "../../tensor/tensor.js";

/** What is searched: a module tree (a model, a PeftModel), by its named parameters. */
export interface WithParameters {
  namedParameters(): [string, Tensor][];
}

export interface NonFiniteWeight {
  /** null for the base model's own weights, else the adapter's name. */
  adapter: string | null;
  /** The tensor's path in the base model with PEFT's wrapper segments removed (transformer.h.1.attn.c_attn.lora_B). */
  name: string;
  /** The transformer block (GPT-2 h.N, Llama layers.N) the tensor belongs to, or null (embeddings, final layer norm). */
  layer: number | null;
  nan: number;
  inf: number;
  size: number;
}

// PEFT's in-memory names: <module>.lora_B.<adapter>.weight, <module>.lora_magnitude_vector.<adapter>,
// <module>.modules_to_save.<adapter>.<param>; the base weights sit under base_layer / original_module.
const ADAPTER_TENSOR = /^(.*)\.(lora_A|lora_B|lora_embedding_A|lora_embedding_B|lora_magnitude_vector)\.([^.]+)(?:\.weight)?$/;
const SAVED_COPY = /^(.*)\.modules_to_save\.([^.]+)\.(.*)$/;

/** Every parameter of `model` that holds NaN or Inf, in the model's order, attributed to the base model or an adapter. */
export function findNonFiniteWeights(model: WithParameters): NonFiniteWeight[] {
  const found: NonFiniteWeight[] = [];
  for (const [full, t] of model.namedParameters()) {
    let nan = 0, inf = 0;
    for (const v of t.dataSync()) {
      if (Number.isNaN(v)) nan++;
      else if (!Number.isFinite(v)) inf++;
    }
    if (nan === 0 && inf === 0) continue;
    const path = full.replace(/^base_model\.model\./, "");
    const lora = ADAPTER_TENSOR.exec(path), copy = lora ? null : SAVED_COPY.exec(path);
    const adapter = lora ? lora[3]! : copy ? copy[2]! : null;
    const name = lora ? `${lora[1]}.${lora[2]}` : copy ? `${copy[1]}.${copy[3]}` : path.replace(/\.(base_layer|original_module)\./g, ".");
    // GPT-2 blocks are h.N, Llama-family decoder layers layers.N
    const layer = /(?:^|\.)(?:h|layers)\.(\d+)\./.exec(name);
    found.push({ adapter, name, layer: layer ? Number(layer[1]) : null, nan, inf, size: t.size });
  }
  return found;
}

function describeTensor(w: NonFiniteWeight): string {
  const counts = [w.nan ? `${w.nan} NaN` : "", w.inf ? `${w.inf} Inf` : ""].filter(Boolean).join(" and ");
  return `${w.name}${w.layer === null ? "" : ` (layer ${w.layer})`} holds ${counts} of its ${w.size} values`;
}

/**
 * One sentence per culprit: "the base model is broken: <tensor> (layer N) holds 3 NaN of its
 * 12288 values" or 'adapter "default" is broken: ...', the first tensors in model order; or, when
 * every weight is finite, that the activations overflowed.
 */
export function describeNonFiniteWeights(model: WithParameters): string {
  return describeNonFinite(findNonFiniteWeights(model));
}

/** describeNonFiniteWeights for tensors already found. */
export function describeNonFinite(bad: readonly NonFiniteWeight[]): string {
  if (bad.length === 0) {
    return "every weight is finite, so the activations overflowed float32 on this input (extreme weights or inputs)";
  }
  const owners = [...new Set(bad.map((w) => w.adapter))];
  return owners
    .map((owner) => {
      const mine = bad.filter((w) => w.adapter === owner);
      const shown = mine.slice(0, 3).map(describeTensor).join("; ");
      const more = mine.length > 3 ? ` (and ${mine.length - 3} more tensors)` : "";
      const who = owner === null ? "the base model is broken" : `adapter "${owner}" is broken`;
      return `${who}: ${shown}${more}`;
    })
    .join("; ");
}
