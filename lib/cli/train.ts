// `lowrank train`: fine-tunes a LoRA adapter on a GPT-2 checkpoint from a JSONL instruction set
// and writes it in PEFT's format, with metrics, a loss plot and resumable checkpoints.
import { existsSync } from "node:fs";
import { join } from "node:path";
import type { Command } from "commander";
import { LoraConfig } from "../peft/config.js";
import { checkLoraFits, getPeftModel } from "../peft/model.js";
import { Conv1D, Embedding, Linear } from "../nn/layers.js";
import type { GPT2LMHeadModel } from "../models/gpt2/model.js";
import { Generator } from "../tensor/random.js";
import { listCheckpoints, resolveResume } from "../train/checkpoint.js";
import { DataLoader } from "../train/collate.js";
import { formatProblem, loadInstructionData } from "../train/data.js";
import { writeLossChart } from "../train/metrics.js";
import { NonFiniteLossError, Trainer, TRAINER_DEFAULTS, type ScheduleName } from "../train/trainer.js";
import {
  EXIT, intAtLeast, loadModel, loadTemplate, loadTokenizer, newCommand, numberIn, oneOf, resolveDevice, runAction, shellQuote, UsageError,
} from "./common.js";

export interface TrainFlags {
  model: string;
  data: string;
  out: string;
  evalFile?: string;
  template: string;
  maxLength?: number;
  packing?: boolean;
  r: number;
  alpha: number;
  dropout: number;
  target: string;
  rslora?: boolean;
  steps?: number;
  epochs?: number;
  batchSize: number;
  gradAccum: number;
  lr: number;
  weightDecay: number;
  maxGradNorm: number;
  warmup: number;
  schedule: ScheduleName;
  evalSplit: number;
  evalEvery: number;
  checkpointEvery: number;
  keepCheckpoints: number;
  seed: number;
  device?: string;
  resume?: true | string;
  quiet?: boolean;
  logEvery: number;
}

/** Bad lines are listed up to this many; the rest are counted. */
const SHOWN_PROBLEMS = 10;

export function trainCommand(): Command {
  const d = TRAINER_DEFAULTS;
  return newCommand("train")
    .description("fine-tune a LoRA adapter on a GPT-2 checkpoint with a JSONL instruction set; writes the adapter in PEFT's format")
    .optionsGroup("Model and data:")
    .requiredOption("--model <dir>", "base model folder in Hugging Face layout (config.json, model.safetensors, tokenizer files)")
    .requiredOption("--data <file>", 'training data, JSONL: {"instruction", "input"?, "output"} or {"text"} per line')
    .requiredOption("--out <dir>", "output folder: the adapter, metrics.jsonl, loss.svg/png, checkpoints/")
    .option("--eval-file <file>", "held-out data in its own JSONL file (instead of --eval-split)")
    .option("--template <name|file>", 'prompt template: "alpaca", a .json file {"withInput", "withoutInput"} or a text file with {instruction} and {input}', "alpaca")
    .option("--max-length <n>", "longest example in tokens; longer responses are cut (default: the model's n_positions)", intAtLeast(2))
    .option("--packing", "concatenate examples into blocks of --max-length tokens instead of padding each batch")
    .optionsGroup("LoRA:")
    .option("--r <n>", "adapter rank", intAtLeast(1), 16)
    .option("--alpha <x>", "scaling numerator: the update is scaled by alpha/r (alpha/sqrt(r) with --rslora)", numberIn(0, Infinity, { loOpen: true }), 32)
    .option("--dropout <p>", "dropout on the adapter's input", numberIn(0, 1, { hiOpen: true }), 0.05)
    .option("--target <names>", 'comma-separated module names to adapt, e.g. c_attn,c_proj,c_fc, or "all-linear"', "c_attn,c_proj")
    .option("--rslora", "rank-stabilized scaling alpha/sqrt(r)")
    .optionsGroup("Training:")
    .option("--steps <n>", "optimizer steps to run (instead of --epochs)", intAtLeast(1))
    .option("--epochs <x>", "passes over the training data (default 1; may be fractional)", numberIn(0, Infinity, { loOpen: true }))
    .option("--batch-size <n>", "examples (or packed blocks) per micro-batch", intAtLeast(1), 4)
    .option("--grad-accum <n>", "micro-batches per optimizer step", intAtLeast(1), d.gradAccum)
    .option("--lr <x>", "peak learning rate (AdamW)", numberIn(0, Infinity, { loOpen: true }), d.lr)
    .option("--weight-decay <x>", "AdamW decoupled weight decay", numberIn(0, Infinity), d.weightDecay)
    .option("--max-grad-norm <x>", "clip gradients to this global L2 norm (0: no clipping)", numberIn(0, Infinity), d.maxGradNorm)
    .option("--warmup <x>", "linear warmup: a step count (>= 1) or a share of the steps (< 1, e.g. 0.03)", numberIn(0, Infinity), d.warmupSteps)
    .option("--schedule <name>", "lr schedule after warmup: constant, linear (to 0) or cosine (to 0)", oneOf(["constant", "linear", "cosine"] as const), d.schedule)
    .option("--seed <n>", "seed for the adapter init, dropout, data shuffle and eval split", intAtLeast(0), 42)
    .option("--device <name>", "cpu or cuda (default: cuda when a GPU is usable)", oneOf(["cpu", "cuda"] as const))
    .optionsGroup("Evaluation and checkpoints:")
    .option("--eval-split <x>", "share of --data held out for the eval loss (0: none)", numberIn(0, 1, { hiOpen: true }), 0.05)
    .option("--eval-every <n>", "eval loss every N steps (0: only at the end)", intAtLeast(0), 100)
    .option("--checkpoint-every <n>", "checkpoint every N steps (0: only at the end or on Ctrl-C)", intAtLeast(0), 100)
    .option("--keep-checkpoints <n>", "keep the newest N checkpoints (0: all)", intAtLeast(0), 2)
    .option("--resume [dir]", "continue from the latest checkpoint in --out (or from <dir>, a checkpoint or run folder), with the same settings")
    .optionsGroup("Output:")
    .option("--quiet", "print nothing but errors and the final summary")
    .option("--log-every <n>", "when the output is not a terminal: a progress line every N steps", intAtLeast(1), 10)
    .addHelpText(
      "after",
      `
The adapter (adapter_config.json, adapter_model.safetensors) loads with Python PEFT as is, and with
"lowrank merge" and "lowrank generate --adapter". --out also receives metrics.jsonl (one JSON line
per step: step, loss, lr, gradNorm, tokens, tokensPerSec, evalLoss, elapsed) and loss.svg/loss.png.

Checkpoints (--out/checkpoints/step-N) hold the adapter, the optimizer, the lr schedule, the random
streams and the data position: --resume continues the run exactly as if it had never stopped.
Ctrl-C finishes the current step, saves a checkpoint and exits with code 130; a second Ctrl-C
quits at once. A NaN/Inf loss stops the run (exit code 1) and keeps the last good checkpoint.
Exit codes: 0 done, 1 error, 2 bad command line, 130 interrupted.

Examples:
  lowrank train --model ./gpt2 --data data/demo/train.jsonl --out runs/demo --steps 300 --lr 1e-3
  lowrank train --model ./gpt2 --data data/demo/train.jsonl --out runs/demo --steps 300 --lr 1e-3 --resume`,
    )
    .action(runAction("train", (flags: TrainFlags, cmd: Command) => train(flags, cmd)));
}

/** Module names LoRA can wrap, by last path segment, for error messages. */
function wrappableNames(model: GPT2LMHeadModel): string[] {
  const names = model.namedModules().filter(([, m]) => m instanceof Linear || m instanceof Conv1D || m instanceof Embedding).map(([p]) => p.split(".").pop()!);
  return [...new Set(names)];
}

/** Every --target entry must name a module (PEFT only complains when none does). */
function parseTargets(spec: string, model: GPT2LMHeadModel): string[] | "all-linear" {
  const targets = spec.split(",").map((t) => t.trim()).filter(Boolean);
  if (targets.length === 0) throw new UsageError("--target: give at least one module name, e.g. --target c_attn,c_proj");
  if (targets.length === 1 && targets[0] === "all-linear") return "all-linear";
  const paths = model.namedModules().map(([p]) => p);
  const unknown = targets.filter((t) => !paths.some((p) => p === t || p.endsWith(`.${t}`)));
  if (unknown.length > 0) {
    throw new UsageError(`--target: no module named ${unknown.map((u) => `"${u}"`).join(", ")} in the model; modules LoRA can wrap: ${wrappableNames(model).join(", ")} (or "all-linear")`);
  }
  return targets;
}

function checkFlags(flags: TrainFlags, cmd: Command): void {
  if (flags.steps !== undefined && flags.epochs !== undefined) throw new UsageError("give --steps or --epochs, not both");
  if (flags.evalFile !== undefined && cmd.getOptionValueSource("evalSplit") === "cli") {
    throw new UsageError("give --eval-file or --eval-split, not both");
  }
  if (flags.warmup >= 1 && !Number.isInteger(flags.warmup)) throw new UsageError(`--warmup ${flags.warmup}: a step count must be an integer (a share must be < 1)`);
}

/**
 * A folder that already holds a run (a checkpoint or a finished adapter) is only continued with
 * --resume, never overwritten. A run killed before its first checkpoint left nothing to resume.
 */
function checkOut(flags: TrainFlags): string | undefined {
  if (flags.resume !== undefined) return resolveResume(flags.resume, flags.out);
  const used = listCheckpoints(join(flags.out, "checkpoints")).length > 0 || existsSync(join(flags.out, "adapter_model.safetensors"));
  if (used) throw new UsageError(`--out ${flags.out} already holds a training run; add --resume to continue it, or choose another --out`);
  return undefined;
}

/** adapter_config.json's fields, less the model path (the same model may be named another way on resume). */
function comparableLoraConfig(config: LoraConfig): Record<string, unknown> {
  const { base_model_name_or_path: _path, ...rest } = JSON.parse(config.toJSONString()) as Record<string, unknown>;
  return rest;
}

/** The command line that continues this run: the same arguments, with a bare --resume (latest checkpoint). */
function resumeCommand(argv: readonly string[], resume: TrainFlags["resume"]): string {
  const args: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i]!.startsWith("--resume=")) continue;
    if (argv[i] === "--resume") {
      if (typeof resume === "string" && argv[i + 1] === resume) i++;
      continue;
    }
    args.push(argv[i]!);
  }
  return ["lowrank", ...args, "--resume"].map(shellQuote).join(" ");
}

export async function train(flags: TrainFlags, cmd: Command): Promise<number> {
  checkFlags(flags, cmd);
  const resumeFrom = checkOut(flags);
  const device = resolveDevice(flags.device);
  const template = loadTemplate(flags.template);
  const say = (line: string) => flags.quiet || console.log(line);

  // One stream for everything random in the model (initial adapter, dropout): its state is checkpointed.
  const generator = new Generator(flags.seed);
  const base = loadModel(flags.model, { device, generator });
  const tokenizer = loadTokenizer(flags.model, base);
  const nPositions = base.config.nPositions;
  const maxLength = flags.maxLength ?? nPositions;
  if (maxLength > nPositions) throw new UsageError(`--max-length ${maxLength} exceeds the model's n_positions (${nPositions})`);
  const targetModules = parseTargets(flags.target, base);

  const data = await loadInstructionData(flags.data, tokenizer, {
    maxLength, template, seed: flags.seed,
    ...(flags.evalFile !== undefined ? { evalFile: flags.evalFile } : { evalFraction: flags.evalSplit }),
  });
  if (data.problems.length > 0) {
    console.error(`warning: ${data.problems.length} bad line${data.problems.length === 1 ? "" : "s"} skipped:`);
    for (const p of data.problems.slice(0, SHOWN_PROBLEMS)) console.error(`  ${formatProblem(p)}`);
    if (data.problems.length > SHOWN_PROBLEMS) console.error(`  ... and ${data.problems.length - SHOWN_PROBLEMS} more`);
  }
  for (const w of data.warnings) console.error(`warning: ${w}`);

  const onWarning = (message: string) => console.error(`warning: ${message}`);
  const config = new LoraConfig({
    taskType: "CAUSAL_LM", r: flags.r, loraAlpha: flags.alpha, loraDropout: flags.dropout, targetModules,
    // GPT-2's projections are Conv1D (weights stored in×out), which PEFT's fan_in_fan_out describes.
    fanInFanOut: true, useRslora: flags.rslora ?? false, baseModelNameOrPath: flags.model,
  });
  checkLoraFits(base, config, { copies: 4, purpose: "for training (its weights, their gradients and AdamW's two moments)" });
  const model = getPeftModel(base, config, "default", { generator, onWarning });
  say(model.trainableParametersLine());

  const packBlockLength = flags.packing ? maxLength : undefined;
  const loaderOptions = { batchSize: flags.batchSize, tokenizer, packBlockLength, device };
  const trainer = new Trainer({
    model,
    trainData: new DataLoader(data.train, { ...loaderOptions, seed: flags.seed }),
    evalData: data.eval.length > 0 ? new DataLoader(data.eval, { ...loaderOptions, shuffle: false }) : null,
    ...(flags.steps !== undefined ? { maxSteps: flags.steps } : { epochs: flags.epochs ?? 1 }),
    gradAccum: flags.gradAccum, lr: flags.lr, weightDecay: flags.weightDecay, maxGradNorm: flags.maxGradNorm, schedule: flags.schedule,
    ...(flags.warmup < 1 ? { warmupRatio: flags.warmup } : { warmupSteps: flags.warmup }),
    evalEvery: flags.evalEvery, checkpointEvery: flags.checkpointEvery, keepCheckpoints: flags.keepCheckpoints,
    outDir: flags.out, generators: { model: generator },
    // With the data fingerprint (checked by the loader), these pin down the run's trajectory.
    config: { model: base.config.toHF(), lora: comparableLoraConfig(model.peftConfig.get("default")!), seed: flags.seed, maxLength, packing: !!flags.packing, batchSize: flags.batchSize },
    progress: { quiet: flags.quiet, logEvery: flags.logEvery },
  });
  // Ctrl-C: finish the step, checkpoint, exit 130. A second Ctrl-C quits at once.
  let interrupts = 0;
  const onSigint = () => {
    if (++interrupts > 1) {
      if (process.stdout.isTTY) process.stdout.write("\x1b[?25h\n"); // the progress bar hid the cursor
      process.exit(EXIT.interrupted);
    }
    console.error("\ninterrupt: finishing the current step, then saving a checkpoint (Ctrl-C again to quit at once)");
    trainer.stop();
  };
  const chart = join(flags.out, "loss");
  // The plot follows the checkpoints, redrawn at most every 30 s: a PNG takes tens of milliseconds.
  let chartDrawn = -Infinity;
  trainer.on("checkpoint", () => {
    if (performance.now() - chartDrawn < 30_000) return;
    writeLossChart(chart, trainer.history);
    chartDrawn = performance.now();
  });
  try {
    if (resumeFrom) trainer.restore(resumeFrom);
    say(
      `training on ${data.train.length} examples${data.eval.length ? ` (eval: ${data.eval.length})` : ""} for ${trainer.totalSteps} steps on ${device}` +
        (resumeFrom ? `, resuming at step ${trainer.step} from ${resumeFrom}` : ""),
    );
    process.on("SIGINT", onSigint);
    const result = await trainer.train();
    writeLossChart(chart, result.history);
    const last = result.history.at(-1);
    const lastEval = result.history.filter((r) => r.evalLoss !== undefined).at(-1)?.evalLoss;
    const summary = last ? `loss ${last.loss?.toFixed(4) ?? "-"}${lastEval !== undefined ? `, eval loss ${lastEval.toFixed(4)}` : ""}` : "";
    if (result.status === "stopped") {
      console.log(`interrupted at step ${result.step}/${result.totalSteps}${summary ? ` (${summary})` : ""}`);
      if (result.checkpoint) {
        console.log(`checkpoint: ${result.checkpoint}`);
        console.log(`resume with: ${resumeCommand(process.argv.slice(2), flags.resume)}`);
      }
      return EXIT.interrupted;
    }
    model.savePretrained(flags.out);
    console.log(`done: ${result.step} steps${summary ? `, ${summary}` : ""}`);
    console.log(`adapter: ${join(flags.out, "adapter_model.safetensors")} (PEFT format)`);
    console.log(`metrics: ${join(flags.out, "metrics.jsonl")}; plot: ${chart}.svg, ${chart}.png`);
    return EXIT.ok;
  } catch (err) {
    if (err instanceof NonFiniteLossError) writeLossChart(chart, trainer.history);
    throw err;
  } finally {
    process.off("SIGINT", onSigint);
    trainer.dispose();
    model.dispose();
  }
}
