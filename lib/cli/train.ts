// `lowrank train`: fine-tunes a LoRA adapter on a causal LM (GPT-2 or the Llama family) from JSONL data
// and writes it in PEFT's format, with metrics, a loss plot and resumable checkpoints. The run
// itself is fineTune() (lib/train/fine-tune.ts); this module turns flags into its options and
// prints what happens.
import { join } from "node:path";
import type { Command } from "commander";
import { readMetrics, summarizeRun } from "../analysis/sweep.js";
import { Generator } from "../tensor/random.js";
import { formatProblem, IGNORE_INDEX, type LoadedData, type TokenizedExample } from "../train/data.js";
import {
  FINE_TUNE_DEFAULTS, FineTuneOptionError, defaultTrainingDtype, fineTune, holdsRun, type FineTuneOptions, type FineTuneResult, type FineTuneStart, type LoadedBaseModel,
} from "../train/fine-tune.js";
import type { ScheduleName } from "../train/trainer.js";
import {
  DEVICE_HELP, deviceName, EXIT, intAtLeast, loadChatTemplate, loadModel, loadTemplate, loadTokenizer, newCommand, numberIn, oneOf, resolveDevice, resolveModelFlag, runAction, UsageError,
} from "./common.js";
import { CONFIG_SOURCE, withConfigFile } from "./config.js";
import { stopOnSignals } from "./interrupt.js";
import { commandLine } from "./invocation.js";
import { info } from "../runtime.js";
import { commFromEnv, ncclAvailable, ncclUniqueId, NCCL_ID_ENV, rankFromEnv, type Comm } from "../train/distributed.js";
import { launchRanks } from "../train/launch.js";

export interface TrainFlags {
  model: string;
  data: string;
  out: string;
  evalFile?: string;
  template?: string;
  chatTemplate?: string;
  maxLength?: number;
  packing?: boolean;
  r: number;
  alpha: number;
  dropout: number;
  target?: string;
  rslora?: boolean;
  gradientCheckpointing?: boolean;
  dtype?: "float32" | "bfloat16";
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
  /** Data parallel over this many GPUs (train only). */
  gpus?: number;
  resume?: true | string;
  quiet?: boolean;
  json?: boolean;
  logEvery: number;
}

/** Each data form in words, with where the loss is. */
const DATA_FORM: Record<LoadedData["format"], string> = {
  alpaca: 'Alpaca records ({"instruction", "input", "output"}), the loss on the output and EOS',
  chat: 'chat records ({"messages"}), the loss on the assistant turns',
  "prompt-completion": 'prompt/completion records ({"prompt", "completion"}), the loss on the completion and EOS',
  text: 'plain text records ({"text"}), the loss on every token',
};

/** Bad lines are listed up to this many; the rest are counted. */
const SHOWN_PROBLEMS = 10;

export function trainCommand(): Command {
  const d = FINE_TUNE_DEFAULTS;
  return withConfigFile(newCommand("train")
    .description("fine-tune a LoRA adapter on a causal LM (GPT-2, Llama, Mistral, Qwen2, Qwen3) with JSONL data; writes the adapter in PEFT's format"))
    .optionsGroup("Model and data:")
    .requiredOption("--model <dir|name>", 'base model folder in Hugging Face layout (config.json, model.safetensors, tokenizer files), or a name in the local Hugging Face cache, e.g. "Qwen/Qwen2.5-0.5B-Instruct"')
    .requiredOption("--data <file>", 'training data, JSONL, one form per file: {"instruction", "input"?, "output"}, {"messages": [{"role", "content"}, ...]} (chat), {"prompt", "completion"} or {"text"}')
    .requiredOption("--out <dir>", "output folder: the adapter, metrics.jsonl, loss.svg/png, checkpoints/")
    .option("--eval-file <file>", "held-out data in its own JSONL file (instead of --eval-split)")
    .option("--template <name|file>", 'prompt template: "alpaca", a .json file {"withInput", "withoutInput"} or a text file with {instruction} and {input} (default: the template.txt the model folder ships, else "alpaca")')
    .option("--chat-template <file>", "chat data: a chat template (.jinja, or a JSON file with a \"chat_template\" field) instead of the one the model folder ships")
    .option("--max-length <n>", `longest example in tokens; longer responses are cut (default: the model's context length, at most ${d.maxLength})`, intAtLeast(2))
    .option("--packing", "concatenate examples into blocks of --max-length tokens instead of padding each batch")
    .optionsGroup("LoRA:")
    .option("--r <n>", "adapter rank", intAtLeast(1), d.r)
    .option("--alpha <x>", "scaling numerator: the update is scaled by alpha/r (alpha/sqrt(r) with --rslora)", numberIn(0, Infinity, { loOpen: true }), d.alpha)
    .option("--dropout <p>", "dropout on the adapter's input", numberIn(0, 1, { hiOpen: true }), d.dropout)
    .option("--target <names>", `comma-separated module names to adapt, e.g. c_attn,c_proj,c_fc or q_proj,k_proj,v_proj,o_proj, or "all-linear" (default: ${d.target.join(",")} for GPT-2, PEFT's default for the other model types: q_proj,v_proj)`)
    .option("--rslora", "rank-stabilized scaling alpha/sqrt(r)")
    .optionsGroup("Training:")
    .option("--steps <n>", "optimizer steps to run (instead of --epochs)", intAtLeast(1))
    .option("--epochs <x>", "passes over the training data (default 1; may be fractional)", numberIn(0, Infinity, { loOpen: true }))
    .option("--batch-size <n>", "examples (or packed blocks) per micro-batch", intAtLeast(1), d.batchSize)
    .option("--grad-accum <n>", "micro-batches per optimizer step", intAtLeast(1), d.gradAccum)
    .option("--lr <x>", "peak learning rate (AdamW)", numberIn(0, Infinity, { loOpen: true }), d.lr)
    .option("--weight-decay <x>", "AdamW decoupled weight decay", numberIn(0, Infinity), d.weightDecay)
    .option("--max-grad-norm <x>", "clip gradients to this global L2 norm (0: no clipping)", numberIn(0, Infinity), d.maxGradNorm)
    .option("--warmup <x>", "linear warmup: a step count (>= 1) or a share of the steps (< 1, e.g. 0.03)", numberIn(0, Infinity), d.warmupSteps)
    .option("--schedule <name>", "lr schedule after warmup: constant, linear (to 0) or cosine (to 0)", oneOf(["constant", "linear", "cosine"] as const), d.schedule)
    .option("--seed <n>", "seed for the adapter init, dropout, data shuffle and eval split", intAtLeast(0), d.seed)
    .option("--device <name>", DEVICE_HELP, deviceName)
    .option("--gpus <n>", "data parallel on N GPUs of this machine through NCCL: one process per GPU, each on its rows of every --batch-size batch (which must divide by N); the same run as on one GPU, up to float32 summation order", intAtLeast(1), 1)
    .option("--dtype <type>", "float32, or bfloat16: the frozen weight matrices kept in bf16 (half the memory; bf16 tensor-core GEMMs and attention on CUDA), adapters, optimizer and loss float32 (default: bfloat16 on CUDA, float32 on the CPU)", oneOf(["float32", "bfloat16"] as const))
    .option("--gradient-checkpointing", "recompute each block's activations in the backward instead of keeping them: less memory for one more forward per block, the same gradients")
    .optionsGroup("Evaluation and checkpoints:")
    .option("--eval-split <x>", "share of --data held out for the eval loss (0: none)", numberIn(0, 1, { hiOpen: true }), d.evalSplit)
    .option("--eval-every <n>", "eval loss every N steps (0: only at the end)", intAtLeast(0), d.evalEvery)
    .option("--checkpoint-every <n>", "checkpoint every N steps (0: only at the end or on Ctrl-C)", intAtLeast(0), d.checkpointEvery)
    .option("--keep-checkpoints <n>", "keep the newest N checkpoints (0: all)", intAtLeast(0), d.keepCheckpoints)
    .option("--resume [dir]", "continue from the latest checkpoint in --out (or from <dir>, a checkpoint or run folder), with the same settings")
    .optionsGroup("Output:")
    .option("--quiet", "print nothing but errors and the final summary")
    .option("--json", "print one JSON summary on stdout at the end (steps, losses, eval losses, tokens/s, output paths); progress and messages go to stderr")
    .option("--log-every <n>", "when the output is not a terminal: a progress line every N steps", intAtLeast(1), 10)
    .addHelpText(
      "after",
      `
The adapter (adapter_config.json, adapter_model.safetensors) loads with Python PEFT as is, and with
"lowrank merge" and "lowrank generate --adapter". --out also receives metrics.jsonl (one JSON line
per step: step, loss, lr, gradNorm, tokens, tokensPerSec, evalLoss, elapsed) and loss.svg/loss.png.

Checkpoints (--out/checkpoints/step-N) hold the adapter, the optimizer, the lr schedule, the random
streams and the data position: --resume continues the run exactly as if it had never stopped.
Ctrl-C (or SIGTERM) finishes the current step, saves a checkpoint and exits with code 130; a
second one quits at once. One run at a time per --out: a second is refused with the pid of the
first. A NaN/Inf loss stops the run (exit code 1) and keeps the last good checkpoint.
The data form is read from the first valid line. Alpaca records go through the prompt template:
the template.txt the model folder ships, else "alpaca" (--template to change it). Chat records
are rendered with the model folder's chat template (--chat-template to change it), and only the
assistant turns carry the loss; prompt/completion records carry it on the completion and EOS.
The run prints the data form and the template it uses.
Exit codes: 0 done, 1 error, 2 bad command line, 130 interrupted.

--config FILE takes these flags from a YAML or JSON file (keys as the flags are spelled, without
"--": batch-size: 16); flags typed on the command line win. --json prints one JSON summary on
stdout at the end, for scripts.

Examples (the model and data bundled with lowrank, then a chat model from the Hugging Face cache):
  lowrank train --model data/demo/model --data data/demo/train.jsonl --out runs/demo --steps 300 --lr 2e-3
  lowrank train --model data/demo/model --data data/demo/train.jsonl --out runs/demo --steps 300 --lr 2e-3 --resume
  lowrank train --config data/demo/train.yaml --out runs/demo-config
  lowrank train --model HuggingFaceTB/SmolLM2-135M-Instruct --data chat.jsonl --out runs/chat --target all-linear --epochs 1`,
    )
    .action(runAction("train", (flags: TrainFlags, cmd: Command) => train(flags, cmd)));
}

/** fineTune's names for the flags, for errors about a value that does not fit the model. */
const FLAG_OF: Partial<Record<keyof FineTuneOptions, string>> = { maxLength: "--max-length", target: "--target", chatTemplateFile: "--chat-template" };

/** --target as fineTune takes it. */
function parseTargets(spec: string | undefined): string[] | "all-linear" | undefined {
  if (spec === undefined) return undefined;
  const targets = spec.split(",").map((t) => t.trim()).filter(Boolean);
  if (targets.length === 0) throw new UsageError("--target: give at least one module name, e.g. --target c_attn,c_proj");
  return targets.length === 1 && targets[0] === "all-linear" ? "all-linear" : targets;
}

function checkFlags(flags: Omit<TrainFlags, "out" | "resume" | "r">, cmd: Command): void {
  if (flags.steps !== undefined && flags.epochs !== undefined) throw new UsageError("give --steps or --epochs, not both");
  const evalSplitSource = cmd.getOptionValueSource("evalSplit");
  if (flags.evalFile !== undefined && (evalSplitSource === "cli" || evalSplitSource === CONFIG_SOURCE)) {
    throw new UsageError("give --eval-file or --eval-split, not both");
  }
  if (flags.warmup >= 1 && !Number.isInteger(flags.warmup)) throw new UsageError(`--warmup ${flags.warmup}: a step count must be an integer (a share must be < 1)`);
}

/**
 * LOWRANK_MAX_STEPS=N caps --steps (train, sweep, demo) at N, for quick smoke runs of scripts and
 * of the README's commands; the cap is announced on stderr.
 */
export function capSteps(steps: number): number;
export function capSteps(steps: number | undefined): number | undefined;
export function capSteps(steps: number | undefined): number | undefined {
  const spec = process.env.LOWRANK_MAX_STEPS;
  if (spec === undefined || spec === "" || steps === undefined) return steps;
  const cap = Number(spec);
  if (!/^\d+$/.test(spec.trim()) || !(cap >= 1)) throw new UsageError(`LOWRANK_MAX_STEPS=${spec}: expected an integer >= 1 (or unset it)`);
  if (steps <= cap) return steps;
  console.error(`warning: LOWRANK_MAX_STEPS=${cap}: running ${cap} steps instead of ${steps}`);
  return cap;
}

/**
 * The fineTune options a train command line asks for, less r, out and resume (sweep sets those
 * per rank). The model is loaded here, so its errors name --model; the template file is read here,
 * so its errors name --template.
 */
export function trainOptions(flags: Omit<TrainFlags, "out" | "resume" | "r">, cmd: Command): Omit<FineTuneOptions, "out" | "resume" | "r"> {
  checkFlags(flags, cmd);
  const device = resolveDevice(flags.device);
  const template = flags.template !== undefined ? loadTemplate(flags.template) : undefined;
  if (flags.chatTemplate !== undefined) loadChatTemplate(flags.chatTemplate); // its errors name the flag, before the model loads
  const loadBase = async (): Promise<LoadedBaseModel> => {
    const dir = resolveModelFlag(flags.model);
    // One stream for everything random in the model (initial adapter, dropout): its state is checkpointed.
    const generator = new Generator(flags.seed);
    const model = await loadModel(dir, { device, generator, dtype: flags.dtype ?? defaultTrainingDtype(device) });
    try {
      return { model, tokenizer: loadTokenizer(dir, model), dir, name: flags.model, generator };
    } catch (err) {
      model.dispose();
      throw err;
    }
  };
  return {
    model: loadBase, data: flags.data, template, chatTemplateFile: flags.chatTemplate, maxLength: flags.maxLength, packing: flags.packing,
    ...(flags.evalFile !== undefined ? { evalFile: flags.evalFile } : { evalSplit: flags.evalSplit }),
    alpha: flags.alpha, dropout: flags.dropout, target: parseTargets(flags.target), rslora: flags.rslora, gradientCheckpointing: flags.gradientCheckpointing,
    steps: capSteps(flags.steps), epochs: flags.epochs, batchSize: flags.batchSize, gradAccum: flags.gradAccum, lr: flags.lr, weightDecay: flags.weightDecay,
    maxGradNorm: flags.maxGradNorm, warmup: flags.warmup, schedule: flags.schedule,
    evalEvery: flags.evalEvery, checkpointEvery: flags.checkpointEvery, keepCheckpoints: flags.keepCheckpoints, seed: flags.seed,
    // with --json, stdout holds the summary alone
    progress: { quiet: flags.quiet, logEvery: flags.logEvery, stream: flags.json ? process.stderr : undefined },
    onWarning: (message) => console.error(`warning: ${message}`),
  };
}

/** fineTune's errors about option values, worded with the flags. */
export function flagError(err: unknown): unknown {
  if (err instanceof FineTuneOptionError && FLAG_OF[err.option]) return new UsageError(err.describe(FLAG_OF[err.option]!));
  return err;
}

/** Where the human-readable lines go: nowhere with --quiet, stderr with --json (stdout is the JSON), else stdout. */
export function humanLines(flags: { quiet?: boolean; json?: boolean }): (line: string) => void {
  if (flags.quiet) return () => {};
  return flags.json ? (line) => console.error(line) : (line) => console.log(line);
}

/** Bad data lines, data warnings, the template when it was not given, PEFT's parameter line and what will run (`say`: see humanLines). */
export function printStart(run: FineTuneStart, say: (line: string) => void): void {
  const { data, trainer } = run;
  if (data.problems.length > 0) {
    console.error(`warning: ${data.problems.length} bad line${data.problems.length === 1 ? "" : "s"} skipped:`);
    for (const p of data.problems.slice(0, SHOWN_PROBLEMS)) console.error(`  ${formatProblem(p)}`);
    if (data.problems.length > SHOWN_PROBLEMS) console.error(`  ... and ${data.problems.length - SHOWN_PROBLEMS} more`);
  }
  for (const w of data.warnings) console.error(`warning: ${w}`);
  say(run.model.trainableParametersLine());
  say(`data: ${DATA_FORM[data.format]}`);
  if (data.format === "alpaca" && run.template.source === "model") say(`prompt template: ${run.template.path} (shipped with the model; --template to use another)`);
  if (data.format === "alpaca" && run.template.source === "alpaca") say(`prompt template: alpaca (the default; --template to use another)`);
  const chat = run.chatTemplate;
  if (chat) say(`chat template: ${chat.path} (${chat.source === "model" ? "shipped with the model; --chat-template to use another" : "--chat-template"})`);
  say(
    `training on ${data.train.length} examples${data.eval.length ? ` (eval: ${data.eval.length})` : ""} for ${trainer.totalSteps} steps on ${run.device}` +
      (run.resumedFrom ? `, resuming at step ${trainer.step} from ${run.resumedFrom}` : ""),
  );
}

function summaryOf(result: FineTuneResult): string {
  const last = result.history.at(-1);
  const lastEval = result.history.filter((r) => r.evalLoss !== undefined).at(-1)?.evalLoss;
  return last ? `loss ${last.loss?.toFixed(4) ?? "-"}${lastEval !== undefined ? `, eval loss ${lastEval.toFixed(4)}` : ""}` : "";
}

/**
 * --json: what a script needs from a run: how far it got, its losses (the last step's, the mean of
 * the last 10% of steps, every eval), its throughput, and where its files are. The numbers come
 * from metrics.jsonl, so a resumed run's earlier steps count too.
 */
function jsonSummary(result: FineTuneResult, out: string, resume: string | null, data: LoadedData | null): Record<string, unknown> {
  const metricsPath = join(out, "metrics.jsonl");
  const records = readMetrics(metricsPath);
  const { steps: _steps, ...summary } = summarizeRun(records);
  const adapter = result.adapterDir;
  return {
    status: result.status, steps: result.step, totalSteps: result.totalSteps, ...summary,
    evals: records.filter((r) => r.evalLoss !== undefined).map((r) => ({ step: r.step, evalLoss: r.evalLoss })),
    out, adapter: adapter && { dir: adapter, config: join(adapter, "adapter_config.json"), weights: join(adapter, "adapter_model.safetensors") },
    metrics: metricsPath, lossChart: { svg: join(out, "loss.svg"), png: join(out, "loss.png") },
    checkpoint: result.checkpoint, resume, data: data && dataSummary(data),
  };
}

/** How many tokens the examples hold and how many of them carry the loss (labels not IGNORE_INDEX). */
function tokenCounts(examples: readonly TokenizedExample[]): { examples: number; tokens: number; lossTokens: number } {
  let tokens = 0, lossTokens = 0;
  for (const e of examples) {
    tokens += e.inputIds.length;
    for (const label of e.labels) if (label !== IGNORE_INDEX) lossTokens++;
  }
  return { examples: examples.length, tokens, lossTokens };
}

/** --json's data part: the form and, for train and eval, the examples, tokens and loss tokens. */
function dataSummary(data: LoadedData): Record<string, unknown> {
  return { format: data.format, train: tokenCounts(data.train), eval: tokenCounts(data.eval) };
}

/** Where a stopped run stands and the command line that continues it. */
export function printStopped(result: FineTuneResult, resumeArgs: readonly string[]): void {
  const summary = summaryOf(result);
  console.log(`interrupted at step ${result.step}/${result.totalSteps}${summary ? ` (${summary})` : ""}`);
  if (result.checkpoint) {
    console.log(`checkpoint: ${result.checkpoint}`);
    console.log(`resume with: ${commandLine(resumeArgs)}`);
  }
}

/** The arguments that continue this run: the same ones, with a bare --resume (latest checkpoint). */
export function resumeArgs(argv: readonly string[], resume: true | string | undefined): string[] {
  const args: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i]!.startsWith("--resume=")) continue;
    if (argv[i] === "--resume") {
      if (typeof resume === "string" && argv[i + 1] === resume) i++;
      continue;
    }
    args.push(argv[i]!);
  }
  return [...args, "--resume"];
}

/**
 * --gpus N (N > 1) in the parent: checks what can be checked before any rank starts, makes the
 * NCCL id and runs N ranks of this same command (lib/train/launch.ts); each rank runs train() below.
 */
async function launchTraining(flags: TrainFlags, gpus: number): Promise<number> {
  if (flags.device !== undefined && flags.device !== "cuda") {
    throw new UsageError(
      `--gpus ${gpus} trains on ${gpus} GPUs, rank r on cuda:r; it cannot go with --device ${flags.device}` +
        (flags.device === "cpu" ? "" : " (CUDA_VISIBLE_DEVICES picks which GPUs those are)"),
    );
  }
  if (flags.batchSize % gpus !== 0) {
    throw new UsageError(`--batch-size ${flags.batchSize} (the global batch) must divide by --gpus ${gpus}, so every GPU gets the same number of rows; use a multiple of ${gpus}`);
  }
  const nccl = ncclAvailable();
  if (!nccl.ok) throw new Error(`--gpus ${gpus}: ${nccl.why}`);
  const visible = info().gpus.length;
  if (visible < gpus) throw new Error(`--gpus ${gpus}: only ${visible} GPU(s) are visible here${visible > 0 ? ` (cuda:0 to cuda:${visible - 1})` : ""}`);
  // ncclGetUniqueId starts NCCL's bootstrap root in this process: it lives while the ranks run.
  const launched = await launchRanks({ worldSize: gpus, entry: process.argv[1]!, args: process.argv.slice(2), env: { [NCCL_ID_ENV]: ncclUniqueId() } });
  return launched.code;
}

export async function train(flags: TrainFlags, cmd: Command): Promise<number> {
  // A folder that already holds a run (a checkpoint or a finished adapter) is only continued with
  // --resume, never overwritten.
  if (flags.resume === undefined && holdsRun(flags.out)) {
    throw new UsageError(`--out ${flags.out} already holds a training run; add --resume to continue it, or choose another --out`);
  }
  const gpus = flags.gpus ?? 1;
  const me = rankFromEnv();
  if (me === null && gpus > 1) return launchTraining(flags, gpus);
  if (me !== null && me.worldSize !== gpus) throw new Error(`this process is rank ${me.rank} of ${me.worldSize} (launcher environment) but --gpus is ${gpus}`);
  // A rank of a data-parallel run trains on its own GPU, cuda:<rank>.
  const comm: Comm | undefined = me !== null && me.worldSize > 1 ? commFromEnv() : undefined;
  const options = trainOptions(comm ? { ...flags, device: `cuda:${me!.rank}` } : flags, cmd);
  const stop = stopOnSignals();
  let result: FineTuneResult;
  let data: LoadedData | null = null;
  let failed = true;
  try {
    const say = humanLines(flags);
    const onStart = (run: FineTuneStart) => {
      data = run.data;
      printStart(run, say);
    };
    result = await fineTune({ ...options, r: flags.r, out: flags.out, resume: flags.resume, signal: stop.signal, onStart, comm });
    failed = false;
  } catch (err) {
    throw flagError(err);
  } finally {
    stop.dispose();
    comm?.dispose(failed);
  }
  try {
    const resume = resumeArgs(process.argv.slice(2), flags.resume);
    if (flags.json) {
      console.log(JSON.stringify(jsonSummary(result, flags.out, result.status === "stopped" && result.checkpoint ? commandLine(resume) : null, data), null, 2));
      return result.status === "stopped" ? EXIT.interrupted : EXIT.ok;
    }
    if (result.status === "stopped") {
      printStopped(result, resume);
      return EXIT.interrupted;
    }
    const summary = summaryOf(result);
    const chart = join(flags.out, "loss");
    console.log(`done: ${result.step} steps${summary ? `, ${summary}` : ""}`);
    console.log(`adapter: ${join(result.adapterDir!, "adapter_model.safetensors")} (PEFT format)`);
    console.log(`metrics: ${join(flags.out, "metrics.jsonl")}; plot: ${chart}.svg, ${chart}.png`);
    return EXIT.ok;
  } finally {
    result.model.dispose();
  }
}
