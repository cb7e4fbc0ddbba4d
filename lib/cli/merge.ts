// `lowrank merge`: folds a LoRA adapter into its base model and writes a plain Hugging Face
// checkpoint, after checking on a few token sequences that the merged model computes what the
// base model with the adapter computes.
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import type { Command } from "commander";
import { noGrad } from "../tensor/tensor.js";
import { writeFileAtomic } from "../io/atomic.js";
import type { CausalLM } from "../models/auto.js";
import { describeNonFiniteWeights } from "../models/gpt2/nonfinite.js";
import { PeftModel } from "../peft/model.js";
import { tensor } from "../tensor/creation.js";
import { tidy } from "../tensor/scope.js";
import { SeededRandom } from "../train/data.js";
import { checkOutputDir, DEVICE_HELP, deviceName, loadModel, newCommand, resolveDevice, resolveModelFlag, runAction, UsageError } from "./common.js";
import { withConfigFile } from "./config.js";

interface MergeFlags {
  model: string;
  adapter: string;
  out: string;
  safe?: boolean;
  device?: string;
  json?: boolean;
}

/** Files of the base model folder that are not weights and carry over unchanged: the tokenizer, its chat template, the generation settings and lowrank's prompt template. */
const CARRIED_FILES = [
  "tokenizer.json", "vocab.json", "merges.txt", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
  "chat_template.jinja", "chat_template.json", "generation_config.json", "template.txt",
];

/** The check runs the models on this many sequences of this many random tokens. */
const PROBE_SEQUENCES = 4;
const PROBE_LENGTH = 32;

/**
 * Largest acceptable |merged − unmerged| logit difference, relative to the largest |logit|.
 * Merging changes only the order of float32 operations (x·(W + s·B·A) instead of x·W + s·(x·Aᵀ)·Bᵀ):
 * each product differs by a few ulps (~1e-7 relative) times √k for sums of k terms, and the
 * layers pass that on without amplifying it much (layer and RMS norms rescale), so an honest merge stays
 * near 1e-5 of the logit scale. A wrong merge (transposed factors, a missed scaling, a merge into
 * the wrong layer) moves the logits by as much as the adapter does, typically 1e-2 or more. 1e-3
 * separates the two with margin on both sides.
 */
export const MERGE_TOLERANCE = 1e-3;

export function mergeCommand(): Command {
  return withConfigFile(newCommand("merge")
    .description("fold a LoRA adapter into its base model and write a Hugging Face checkpoint (config.json + model.safetensors)"))
    .requiredOption("--model <dir|name>", "the base model the adapter was trained on (GPT-2 or the Llama family): a folder, or a name in the local Hugging Face cache")
    .requiredOption("--adapter <dir>", "adapter folder in PEFT's format (adapter_config.json, adapter_model.safetensors)")
    .requiredOption("--out <dir>", "where to write the merged model (the tokenizer files are copied along)")
    .option("--safe", "check the merged weights for NaN/Inf before committing them (refuses a broken adapter)")
    .option("--device <name>", DEVICE_HELP, deviceName)
    .option("--json", "print JSON (the written files and the check's numbers) instead of the report lines")
    .addHelpText(
      "after",
      `
Before writing, the merged model and the base model with the adapter are run on ${PROBE_SEQUENCES} sequences
of ${PROBE_LENGTH} random tokens; their logits must agree to ${MERGE_TOLERANCE} of the largest logit, or nothing
is written (exit code 1). The output loads with transformers' AutoModelForCausalLM.from_pretrained
and with lowrank's AutoModelForCausalLM.fromPretrained; it no longer needs the adapter.

Example:
  lowrank merge --model ./gpt2 --adapter runs/demo --out runs/demo-merged`,
    )
    .action(runAction("merge", (flags: MergeFlags) => merge(flags)));
}

/** The logits of the probe sequences, flattened. */
function probeLogits(model: { forward: CausalLM["forward"] }, ids: Int32Array, device: string): Float32Array {
  return noGrad(() =>
    tidy(() => {
      const inputIds = tensor(ids, { shape: [PROBE_SEQUENCES, ids.length / PROBE_SEQUENCES], device });
      return model.forward({ inputIds }).logits.to("cpu").dataSync() as Float32Array;
    }),
  );
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

async function merge(flags: MergeFlags): Promise<void> {
  if (resolve(flags.out) === resolve(flags.model)) throw new UsageError("--out must differ from --model (the base checkpoint would be overwritten)");
  checkOutputDir("--out", flags.out); // before the merge, not after it
  const device = resolveDevice(flags.device);
  const dir = resolveModelFlag(flags.model);
  const base = await loadModel(dir, { device });
  let peft: PeftModel<CausalLM>;
  try {
    peft = await PeftModel.fromPretrained(base, flags.adapter);
  } catch (err) {
    base.dispose();
    throw new Error(`--adapter ${flags.adapter}: ${(err as Error).message}`, { cause: err });
  }
  const vocabSize = base.config.vocabSize;
  const length = Math.min(PROBE_LENGTH, base.generationSpec().maxPositions);
  const rng = new SeededRandom(0);
  const ids = Int32Array.from({ length: PROBE_SEQUENCES * length }, () => rng.below(vocabSize));

  peft.eval();
  const withAdapter = probeLogits(peft, ids, device);
  const withoutAdapter = peft.disableAdapter(() => probeLogits(peft, ids, device));
  // NaN logits compare as "no difference" nowhere and as a pass nowhere, but say nothing of the cause: name it.
  const finite = (a: Float32Array) => a.every(Number.isFinite);
  if (!finite(withAdapter) || !finite(withoutAdapter)) {
    const what = finite(withoutAdapter) ? "the base model with the adapter gives" : "the base model alone gives";
    const cause = describeNonFiniteWeights(peft);
    peft.dispose();
    throw new Error(`${what} NaN/Inf logits on the check sequences: ${cause}; nothing was written`);
  }
  const merged = peft.mergeAndUnload({ safeMerge: flags.safe });
  try {
    const mergedLogits = probeLogits(merged, ids, device);
    const scale = withAdapter.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    const diff = maxAbsDiff(mergedLogits, withAdapter);
    const tolerance = MERGE_TOLERANCE * Math.max(1, scale);
    const adapterEffect = maxAbsDiff(withAdapter, withoutAdapter);
    if (!flags.json) {
      console.log(
        `check on ${PROBE_SEQUENCES} sequences of ${length} tokens: merged vs base+adapter logits differ by at most ${diff.toExponential(2)} ` +
          `(tolerance ${tolerance.toExponential(2)}); the adapter itself moves them by up to ${adapterEffect.toExponential(2)}`,
      );
    }
    if (!(diff <= tolerance)) {
      throw new Error(`the merged model's logits differ from the adapter's by ${diff.toExponential(2)}, above the tolerance ${tolerance.toExponential(2)}; nothing was written`);
    }
    mkdirSync(flags.out, { recursive: true });
    await merged.savePretrained(flags.out);
    const copied = CARRIED_FILES.filter((f) => existsSync(join(dir, f)));
    for (const f of copied) writeFileAtomic(join(flags.out, f), readFileSync(join(dir, f)));
    const weights = join(flags.out, "model.safetensors");
    if (flags.json) {
      const check = { sequences: PROBE_SEQUENCES, tokens: length, maxDiff: diff, tolerance, adapterEffect, passed: true };
      const files = { config: join(flags.out, "config.json"), weights, copied: copied.map((f) => join(flags.out, f)) };
      console.log(JSON.stringify({ model: flags.model, adapter: flags.adapter, out: flags.out, files, check }, null, 2));
    } else {
      console.log(`merged model: ${weights}${copied.length ? ` (with ${copied.join(", ")})` : ""}`);
    }
  } finally {
    merged.dispose();
  }
}
