// fineTune(): one LoRA fine-tuning run from files to files, the flow that `lowrank train`,
// `lowrank sweep` and the demo share: read and tokenize the data, wrap the base model with a LoRA
// adapter, train it with the Trainer (checkpoints, metrics, resume), save the adapter in PEFT's
// format and draw the loss chart. Callers print; this module only reports through callbacks.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { AutoModelForCausalLM, contextLength, modelTypeOf, type CausalLM } from "../models/auto.js";
import { AutoTokenizer, type AnyTokenizer } from "../models/auto-tokenizer.js";
import { findChatTemplate, readChatTemplateFile } from "../models/chat-template.js";
import { resolveModelDir } from "../models/hub.js";
import { DEFAULT_TARGET_MODULES, LoraConfig } from "../peft/config.js";
import { ADAPTER_WEIGHTS_NAME } from "../peft/format.js";
import { checkLoraFits, getPeftModel, type PeftModel } from "../peft/model.js";
import { Conv1D, Embedding, Linear } from "../nn/layers.js";
import { cudaAvailable } from "../tensor/device.js";
import { Generator } from "../tensor/random.js";
import { listCheckpoints, resolveResume } from "./checkpoint.js";
import { DataLoader } from "./collate.js";
import { loadInstructionData, type LoadedData } from "./data.js";
import { acquireRunLock } from "./lock.js";
import { writeLossChart } from "./metrics.js";
import type { ProgressOptions } from "./progress.js";
import { ALPACA_TEMPLATE, MODEL_TEMPLATE_FILE, resolveTemplate, type TemplateSpec } from "./template.js";
import { NonFiniteLossError, Trainer, TRAINER_DEFAULTS, type ScheduleName, type TrainResult } from "./trainer.js";

/** A base model already loaded (the CLI loads it itself to name --model in its errors). */
export interface LoadedBaseModel {
  model: CausalLM;
  tokenizer: AnyTokenizer;
  /** The folder it came from: its template.txt is the default template. */
  dir: string;
  /**
   * The model as the user named it, recorded in adapter_config.json (base_model_name_or_path), as
   * PEFT records the name given to from_pretrained: a Hugging Face name rather than its cache folder.
   * Default: dir.
   */
  name?: string;
  /** The random stream the model was created with (its dropout): the run draws from it and checkpoints it. */
  generator: Generator;
}

export interface FineTuneOptions {
  /**
   * The base model: a folder in Hugging Face layout (config.json, model.safetensors, tokenizer
   * files) of any model type AutoModelForCausalLM loads, a Hugging Face name in the local cache
   * ("Qwen/Qwen2.5-0.5B"), or a function that loads one (called once, after the output folder is locked; what it
   * returns belongs to fineTune: the returned PeftModel wraps it).
   */
  model: string | (() => LoadedBaseModel | Promise<LoadedBaseModel>);
  /**
   * Training data, JSONL, one form per file: {"instruction", "input"?, "output"} (Alpaca),
   * {"messages": [...]} (chat: the loss on the assistant turns), {"prompt", "completion"} or {"text"}.
   */
  data: string;
  /** The run folder: the adapter (unless adapterDir), metrics.jsonl, loss.svg/png, checkpoints/ (unless checkpoints: false). */
  out: string;
  /** Where the adapter is saved (default: out). */
  adapterDir?: string;
  /** Held-out data in its own file (instead of evalSplit). */
  evalFile?: string;
  /** Share of `data` held out for the eval loss (default 0.05; 0: none). */
  evalSplit?: number;
  /**
   * Prompt template: a PromptTemplate, template text, "alpaca", or a template file. Default: the
   * template the model folder ships (template.txt) when it has one, else Alpaca's.
   */
  template?: TemplateSpec;
  /**
   * Chat data: a chat template file (.jinja, or JSON with a "chat_template" field) instead of the
   * one the model folder ships.
   */
  chatTemplateFile?: string;
  /** Longest example in tokens (default: the model's context length, at most 1024, TRL's default max_length). */
  maxLength?: number;
  /** Concatenate examples into blocks of maxLength tokens instead of padding each batch. */
  packing?: boolean;
  /** LoRA rank (default 16). */
  r?: number;
  /** LoRA alpha (default 32): the update is scaled by alpha/r (alpha/sqrt(r) with rslora). */
  alpha?: number;
  /** Dropout on the adapter's input (default 0.05). */
  dropout?: number;
  /**
   * Module names to adapt, or "all-linear". Default: ["c_attn", "c_proj"] for GPT-2, PEFT's
   * default targets for the other model types (q_proj, v_proj for the Llama family).
   */
  target?: readonly string[] | "all-linear";
  rslora?: boolean;
  /** Optimizer steps (give steps or epochs; default: 1 epoch). */
  steps?: number;
  epochs?: number;
  /** Examples (or packed blocks) per micro-batch (default 4). */
  batchSize?: number;
  gradAccum?: number;
  lr?: number;
  weightDecay?: number;
  maxGradNorm?: number;
  /** Linear warmup: a step count (>= 1) or a share of the steps (< 1). Default 0. */
  warmup?: number;
  schedule?: ScheduleName;
  /** Eval loss every N steps (default 100; 0: only at the end). */
  evalEvery?: number;
  /** Checkpoint every N steps (default 100; 0: only at the end or when stopped). */
  checkpointEvery?: number;
  /** Keep the newest N checkpoints (default 2; 0: all). */
  keepCheckpoints?: number;
  /** Seed of the adapter init, dropout, data order and eval split (default 42). */
  seed?: number;
  /** "cpu" or "cuda" (default: cuda when usable). Only for a model given as a folder. */
  device?: string;
  /** Recompute each block's activations in the backward (less memory, the same gradients; default false). */
  gradientCheckpointing?: boolean;
  /**
   * dtype of the frozen weight matrices (see LoadOptions.dtype). Default: bfloat16 on CUDA (mixed
   * precision, as PyTorch users train LoRA on GPUs: bf16 tensor-core GEMMs and attention, float32
   * adapters, optimizer state and losses), float32 on the CPU. Only for a model given as a folder.
   */
  dtype?: "float32" | "bfloat16";
  /** Continue the run in `out` (true) or from a checkpoint or run folder. */
  resume?: true | string;
  /**
   * false: no checkpoints/ (only the adapter, metrics and chart), so the run cannot be resumed and
   * leaves nothing that blocks a rerun into the same folder; the demo uses it. Default true.
   */
  checkpoints?: boolean;
  /** Title of the loss chart. */
  chartTitle?: string;
  /** Progress display (quiet, stream, mode, logEvery). */
  progress?: Omit<ProgressOptions, "totalSteps" | "startStep">;
  /**
   * The Trainer's signal: aborting it stops the run at the next step boundary (the step under way
   * finishes), with a checkpoint, and fineTune resolves with status "stopped" (the CLI's Ctrl-C and
   * SIGTERM go this way). Aborted before training starts: no step runs.
   */
  signal?: AbortSignal;
  /** PEFT's warnings (e.g. fan_in_fan_out). Default: process warnings. */
  onWarning?: (message: string) => void;
  /** Called once everything is set up, just before the first step (for printing what will run). */
  onStart?: (run: FineTuneStart) => void;
}

/** Where the prompt template came from. */
export type TemplateSource = "option" | "model" | "alpaca";

export interface FineTuneStart {
  model: PeftModel<CausalLM>;
  tokenizer: AnyTokenizer;
  trainer: Trainer;
  data: LoadedData;
  device: string;
  /** The prompt template (Alpaca data) and where it came from (a path when it is the model folder's file). */
  template: { spec: TemplateSpec; source: TemplateSource; path?: string };
  /** Chat data: the chat template's file, given (chatTemplateFile) or the model folder's; null for other data. */
  chatTemplate: { source: "option" | "model"; path: string } | null;
  /** The checkpoint the run continues from, or null. */
  resumedFrom: string | null;
}

export interface FineTuneResult extends TrainResult {
  /** The trained model (base + adapter). The caller owns it: dispose() it when done. */
  model: PeftModel<CausalLM>;
  tokenizer: AnyTokenizer;
  /** The saved adapter's folder, or null when the run was stopped before the end. */
  adapterDir: string | null;
  /** The loss chart's files (svg, png). */
  charts: string[];
}

/**
 * A fineTune option whose value does not fit the model (an unknown target module, maxLength past
 * n_positions). `describe(name)` words the message for any name of the option (the CLI uses flags).
 */
export class FineTuneOptionError extends Error {
  constructor(
    readonly option: keyof FineTuneOptions,
    readonly describe: (name: string) => string,
  ) {
    super(describe(option));
    this.name = "FineTuneOptionError";
  }
}

/** Whether `dir` holds a training run (a checkpoint or a finished adapter), which only a resume continues. */
export function holdsRun(dir: string): boolean {
  return existsSync(join(dir, ADAPTER_WEIGHTS_NAME)) || listCheckpoints(join(dir, "checkpoints")).length > 0;
}

/** The defaults of FineTuneOptions (the CLI shows them in --help); target is GPT-2's (defaultTargets). */
export const FINE_TUNE_DEFAULTS = {
  ...TRAINER_DEFAULTS,
  evalSplit: 0.05, r: 16, alpha: 32, dropout: 0.05, target: ["c_attn", "c_proj"] as readonly string[], batchSize: 4,
  evalEvery: 100, checkpointEvery: 100, keepCheckpoints: 2, seed: 42, maxLength: 1024,
};

/**
 * The modules adapted when no target is given: GPT-2's attention and its output projection
 * (c_attn, c_proj: lowrank's default since its first release), else PEFT's default for the model
 * type (q_proj, v_proj for the Llama family).
 */
export function defaultTargets(modelType: string): readonly string[] {
  if (modelType === "gpt2") return FINE_TUNE_DEFAULTS.target;
  const targets = DEFAULT_TARGET_MODULES[modelType];
  if (!targets) throw new Error(`fineTune: no default target modules for model type "${modelType}"; give target`);
  return targets;
}

/** Module names LoRA can wrap, by last path segment, for error messages. */
function wrappableNames(model: CausalLM): string[] {
  const names = model.namedModules().filter(([, m]) => m instanceof Linear || m instanceof Conv1D || m instanceof Embedding).map(([p]) => p.split(".").pop()!);
  return [...new Set(names)];
}

/** Every target must name a module (PEFT only complains when none does). */
function checkTargets(targets: readonly string[] | "all-linear", model: CausalLM): string[] | "all-linear" {
  if (targets === "all-linear") return targets;
  const paths = model.namedModules().map(([p]) => p);
  const unknown = targets.filter((t) => !paths.some((p) => p === t || p.endsWith(`.${t}`)));
  if (unknown.length > 0) {
    throw new FineTuneOptionError("target", (name) =>
      `${name}: no module named ${unknown.map((u) => `"${u}"`).join(", ")} in the model; modules LoRA can wrap: ${wrappableNames(model).join(", ")} (or "all-linear")`);
  }
  return [...targets];
}

/** The template asked for, else the model folder's template.txt, else Alpaca's. */
function chooseTemplate(spec: TemplateSpec | undefined, modelDir: string): FineTuneStart["template"] {
  if (spec !== undefined) return { spec, source: "option" };
  const path = join(modelDir, MODEL_TEMPLATE_FILE);
  if (existsSync(path)) return { spec: path, source: "model", path };
  return { spec: ALPACA_TEMPLATE, source: "alpaca" };
}

/** adapter_config.json's fields, less the model path (the same model may be named another way on resume). */
function comparableLoraConfig(config: LoraConfig): Record<string, unknown> {
  const { base_model_name_or_path: _path, ...rest } = JSON.parse(config.toJSONString()) as Record<string, unknown>;
  return rest;
}

/** The file the model folder's chat template is in, or undefined when it ships none. */
function modelChatTemplatePath(dir: string): string | undefined {
  const configPath = join(dir, "tokenizer_config.json");
  const config = existsSync(configPath) ? (JSON.parse(readFileSync(configPath, "utf8")) as Record<string, unknown>) : {};
  return findChatTemplate(dir, config)?.path;
}

/** The frozen weights' dtype when none is asked for: mixed precision (bfloat16) on CUDA, float32 on the CPU. */
export function defaultTrainingDtype(device: string): "float32" | "bfloat16" {
  return device.startsWith("cuda") ? "bfloat16" : "float32";
}

async function loadBase(model: FineTuneOptions["model"], device: string | undefined, seed: number, dtype: FineTuneOptions["dtype"]): Promise<LoadedBaseModel> {
  if (typeof model !== "string") return model();
  const generator = new Generator(seed);
  const dir = resolveModelDir(model, "fineTune");
  const where = device ?? (cudaAvailable() ? "cuda" : "cpu");
  const base = await AutoModelForCausalLM.fromPretrained(dir, { device: where, generator, dtype: dtype ?? defaultTrainingDtype(where) });
  try {
    return { model: base, tokenizer: AutoTokenizer.fromPretrained(dir), dir, name: model, generator };
  } catch (err) {
    base.dispose();
    throw err;
  }
}

/**
 * Trains a LoRA adapter on `data` and saves it in PEFT's format with its metrics, loss chart and
 * checkpoints. Resolves when the run completes, or when `signal` stopped it (status "stopped",
 * a checkpoint written, no adapter saved). Rejects with NonFiniteLossError on a NaN/Inf loss
 * (the chart is drawn and the last good checkpoint kept). The returned model is the caller's.
 */
export async function fineTune(opts: FineTuneOptions): Promise<FineTuneResult> {
  // One run per folder: a second one (a --resume while this trains) is refused with our pid.
  const lock = acquireRunLock(opts.out);
  try {
    return await fineTuneLocked(opts);
  } finally {
    lock.release();
  }
}

async function fineTuneLocked(opts: FineTuneOptions): Promise<FineTuneResult> {
  const d = FINE_TUNE_DEFAULTS;
  const seed = opts.seed ?? d.seed;
  if (opts.resume !== undefined && opts.checkpoints === false) throw new Error("fineTune: resume needs checkpoints (checkpoints: false was given)");
  if (opts.resume === undefined && holdsRun(opts.out)) {
    throw new Error(`${opts.out} already holds a training run; resume it (resume: true), or choose another output folder`);
  }
  const resumeFrom = opts.resume !== undefined ? resolveResume(opts.resume, opts.out) : null;

  const { model: base, tokenizer, dir: modelDir, name: modelName, generator } = await loadBase(opts.model, opts.device, seed, opts.dtype);
  let model: PeftModel<CausalLM> | null = null;
  let trainer: Trainer | null = null;
  try {
    const device = base.parameters()[0]!.device;
    const modelType = modelTypeOf(base);
    const context = contextLength(base);
    const contextName = modelType === "gpt2" ? "n_positions" : "max_position_embeddings";
    const maxLength = opts.maxLength ?? Math.min(context, d.maxLength);
    if (maxLength > context) throw new FineTuneOptionError("maxLength", (name) => `${name} ${maxLength} exceeds the model's ${contextName} (${context})`);
    const targetModules = checkTargets(opts.target ?? defaultTargets(modelType), base);
    const template = chooseTemplate(opts.template, modelDir);
    resolveTemplate(template.spec); // a bad template fails here, before the data is read
    const chatTemplateText = opts.chatTemplateFile === undefined ? undefined : readChatTemplateFile(opts.chatTemplateFile);

    // Chat records need a chat template: a base model's tokenizer has none.
    const checkFormat = (format: string) => {
      if (format !== "chat" || chatTemplateText !== undefined || tokenizer.chatTemplate !== undefined) return;
      throw new FineTuneOptionError("chatTemplateFile", (name) =>
        `${opts.data} holds chat records ({"messages"}) but the tokenizer in ${modelDir} has no chat template (no chat_template.jinja, ` +
          `no chat_template in tokenizer_config.json: a base model rather than an instruct/chat one); give a template with ${name}, or use the instruct model`);
    };
    const data = await loadInstructionData(opts.data, tokenizer, {
      maxLength, template: template.spec, seed, chatTemplate: chatTemplateText, onFormat: checkFormat,
      ...(opts.evalFile !== undefined ? { evalFile: opts.evalFile } : { evalFraction: opts.evalSplit ?? d.evalSplit }),
    });
    let chatTemplate: FineTuneStart["chatTemplate"] = null;
    if (data.format === "chat") {
      const shipped = opts.chatTemplateFile === undefined ? modelChatTemplatePath(modelDir) : undefined;
      chatTemplate = opts.chatTemplateFile !== undefined ? { source: "option", path: opts.chatTemplateFile } : shipped ? { source: "model", path: shipped } : null;
    }

    const config = new LoraConfig({
      taskType: "CAUSAL_LM", r: opts.r ?? d.r, loraAlpha: opts.alpha ?? d.alpha, loraDropout: opts.dropout ?? d.dropout, targetModules,
      // GPT-2's projections are Conv1D (weights stored in×out), which PEFT's fan_in_fan_out
      // describes; the Llama family's are nn.Linear.
      fanInFanOut: modelType === "gpt2", useRslora: opts.rslora ?? false, baseModelNameOrPath: modelName ?? modelDir,
    });
    checkLoraFits(base, config, { copies: 4, purpose: "for training (its weights, their gradients and AdamW's two moments)" });
    model = getPeftModel(base, config, "default", { generator, onWarning: opts.onWarning });
    base.gradientCheckpointing = opts.gradientCheckpointing ?? false;

    const batchSize = opts.batchSize ?? d.batchSize;
    const loaderOptions = { batchSize, tokenizer, packBlockLength: opts.packing ? maxLength : undefined, device };
    const warmup = opts.warmup ?? d.warmupSteps;
    trainer = new Trainer({
      model,
      trainData: new DataLoader(data.train, { ...loaderOptions, seed }),
      evalData: data.eval.length > 0 ? new DataLoader(data.eval, { ...loaderOptions, shuffle: false }) : null,
      ...(opts.steps !== undefined ? { maxSteps: opts.steps } : { epochs: opts.epochs ?? 1 }),
      gradAccum: opts.gradAccum, lr: opts.lr, weightDecay: opts.weightDecay, maxGradNorm: opts.maxGradNorm, schedule: opts.schedule,
      ...(warmup < 1 ? { warmupRatio: warmup } : { warmupSteps: warmup }),
      evalEvery: opts.evalEvery ?? d.evalEvery, keepCheckpoints: opts.keepCheckpoints ?? d.keepCheckpoints,
      checkpointEvery: opts.checkpoints === false ? 0 : (opts.checkpointEvery ?? d.checkpointEvery),
      outDir: opts.out, saveCheckpoints: opts.checkpoints !== false, generators: { model: generator },
      // With the data fingerprint (checked by the loader), these pin down the run's trajectory.
      config: { model: base.config.toHF(), lora: comparableLoraConfig(model.peftConfig.get("default")!), seed, maxLength, packing: !!opts.packing, batchSize },
      progress: opts.progress, signal: opts.signal,
    });
    const chart = join(opts.out, "loss");
    const drawChart = () => writeLossChart(chart, trainer!.history, opts.chartTitle);
    // The chart follows the checkpoints, redrawn at most every 30 s: a PNG takes tens of milliseconds.
    let chartDrawn = -Infinity;
    trainer.on("checkpoint", () => {
      if (performance.now() - chartDrawn < 30_000) return;
      drawChart();
      chartDrawn = performance.now();
    });
    if (resumeFrom) trainer.restore(resumeFrom);
    opts.onStart?.({ model, tokenizer, trainer, data, device, template, chatTemplate, resumedFrom: resumeFrom });

    let result: TrainResult;
    try {
      result = await trainer.train();
    } catch (err) {
      if (err instanceof NonFiniteLossError) drawChart();
      throw err;
    }
    const charts = drawChart();
    let adapterDir: string | null = null;
    if (result.status === "completed") {
      adapterDir = opts.adapterDir ?? opts.out;
      await model.savePretrained(adapterDir);
    }
    return { ...result, model, tokenizer, adapterDir, charts };
  } catch (err) {
    (model ?? base).dispose();
    throw err;
  } finally {
    trainer?.dispose();
  }
}
