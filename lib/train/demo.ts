// The demo (`lowrank demo`, `npm run demo`): teaches the small GPT-2 bundled in data/demo/model a task it has
// never seen ("Move the first word to the end.") with a LoRA adapter, on the CPU in a few minutes,
// and shows that it worked: the trainable-parameter line, the loss falling, greedy answers and
// exact-match accuracy before and after, a check that the merged weights give the adapter's
// logits, and the adapter saved in PEFT's format. Nothing is downloaded; one seed fixes every
// number it prints. The training itself is fineTune(), as in `lowrank train`.
import { existsSync } from "node:fs";
import { dirname, isAbsolute, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { noGrad } from "../tensor/tensor.js";
import { generate, type GenerationModel } from "../models/generate.js";
import { GPT2LMHeadModel } from "../models/gpt2/model.js";
import { GPT2Tokenizer } from "../models/tokenizer.js";
import { info } from "../runtime.js";
import { tensor } from "../tensor/creation.js";
import { cudaAvailable } from "../tensor/device.js";
import { Generator } from "../tensor/random.js";
import { tidy } from "../tensor/scope.js";
import { padBatch } from "./collate.js";
import { readJsonl, tokenizeRecords, type AlpacaRecord, type DataRecord } from "./data.js";
import { fineTune, type FineTuneResult } from "./fine-tune.js";
import type { StepRecord } from "./metrics.js";
import { formatDuration } from "./progress.js";
import { formatPrompt, resolveTemplate } from "./template.js";

/**
 * The package's root, where data/demo lives: the nearest folder above this module that holds a
 * package.json (from lib/train, dist/train, or a single-file bundle of the CLI).
 */
function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, "package.json")) && dirname(dir) !== dir) dir = dirname(dir);
  return dir;
}

/** The demo's prompt template: the Alpaca sections without the preamble (data/demo/README.md). */
export const DEMO_TEMPLATE = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n";

/**
 * The recipe, measured with PyTorch + PEFT on the same data (data/demo/README.md): LoRA r=8,
 * alpha 16 on c_attn, c_proj and c_fc, batch 16, lr 2e-3 with 20 warm-up steps then linear decay,
 * 300 steps.
 */
export const DEMO_DEFAULTS = {
  steps: 300, batchSize: 16, lr: 2e-3, warmupSteps: 20, r: 8, alpha: 16, targets: ["c_attn", "c_proj", "c_fc"], seed: 0, out: "demo-output",
} as const;

/** Eval prompts shown before and after training. */
const SHOWN = 4;
/** Longest answer generated: the demo's answers are 5 tokens and EOS. */
const MAX_NEW_TOKENS = 12;
/** The merge check passes when merged and unmerged logits differ by at most this share of the largest logit. */
const MERGE_TOLERANCE = 1e-4;

export interface DemoOptions {
  /** "cpu" or "cuda" (default: cuda when usable). */
  device?: string;
  /** LoRA optimizer steps (default 300). */
  steps?: number;
  /** Output folder: adapter/ (PEFT format), metrics.jsonl, loss.svg and loss.png (default ./demo-output); a rerun replaces them. */
  out?: string;
  seed?: number;
  /** No progress display and no example answers; the results are still printed. */
  quiet?: boolean;
  /** Score only the first N examples of eval.jsonl (default all). */
  evalCount?: number;
  /** The base model folder (default: the bundled data/demo/model). */
  model?: string;
  /** The folder with train.jsonl and eval.jsonl (default: the bundled data/demo). */
  data?: string;
  /** Where lines go (default console.log). */
  print?: (line: string) => void;
  /** Progress display: "auto" (a bar on a TTY, lines otherwise), "bar" or "plain". */
  progressMode?: "auto" | "bar" | "plain";
  /** Stream for the progress display (default process.stdout). */
  progressStream?: NodeJS.WriteStream;
}

export interface Score {
  right: number;
  total: number;
}

export interface DemoResult {
  trainableLine: string;
  before: Score;
  after: Score;
  history: StepRecord[];
  /** Largest |merged - unmerged| logit on the check batch. */
  mergeMaxDiff: number;
  /** Largest |adapter - base| logit on the same batch: what the merge has to reproduce. */
  adapterEffect: number;
  mergeOk: boolean;
  adapterDir: string;
  seconds: number;
}

interface Answer {
  record: AlpacaRecord;
  text: string;
  right: boolean;
}

/** Greedy answers (EOS stripped) to each record's prompt. */
function answerAll(model: GenerationModel, tokenizer: GPT2Tokenizer, records: readonly AlpacaRecord[]): Answer[] {
  const template = resolveTemplate(DEMO_TEMPLATE);
  return records.map((record) => {
    const prompt = tokenizer.encode(formatPrompt(template, record.instruction, record.input));
    const ids = generate(model, prompt, { maxNewTokens: MAX_NEW_TOKENS, eosTokenId: tokenizer.eosTokenId });
    const text = tokenizer.decode(ids.filter((t) => t !== tokenizer.eosTokenId));
    return { record, text, right: text === record.output };
  });
}

const percent = (s: Score) => `${s.right}/${s.total} (${((100 * s.right) / s.total).toFixed(1)}%)`;

function alpacaOnly(records: readonly DataRecord[], file: string): AlpacaRecord[] {
  const alpaca = records.filter((r): r is AlpacaRecord => r.kind === "alpaca");
  if (alpaca.length !== records.length) throw new Error(`${file}: the demo expects Alpaca records ({"instruction", "input", "output"})`);
  return alpaca;
}

/** Runs the whole demo; returns what it measured. Throws when the merge check fails. */
export async function runDemo(opts: DemoOptions = {}): Promise<DemoResult> {
  const started = performance.now();
  const print = opts.print ?? ((line: string) => console.log(line));
  const say = (line = "") => opts.quiet || print(line);
  const steps = opts.steps ?? DEMO_DEFAULTS.steps;
  const seed = opts.seed ?? DEMO_DEFAULTS.seed;
  const outDir = opts.out ?? DEMO_DEFAULTS.out;
  const adapterDir = join(outDir, "adapter");
  const modelDir = opts.model ?? join(packageRoot(), "data", "demo", "model");
  const dataDir = opts.data ?? join(packageRoot(), "data", "demo");
  const device = opts.device ?? (cudaAvailable() ? "cuda" : "cpu");
  const generator = new Generator(seed);
  /** A path as the user would type it: relative to the working directory when it lies below it. */
  const shown = (p: string) => {
    const rel = relative(process.cwd(), resolve(p));
    return rel === "" ? "." : rel.startsWith("..") || isAbsolute(rel) ? resolve(p) : rel;
  };

  // ---- the data and the base model --------------------------------------------------------------
  const trainFile = join(dataDir, "train.jsonl"), evalFile = join(dataDir, "eval.jsonl");
  const trainRecords = alpacaOnly((await readJsonl(trainFile)).examples, trainFile);
  let evalRecords = alpacaOnly((await readJsonl(evalFile)).examples, evalFile);
  if (opts.evalCount !== undefined) evalRecords = evalRecords.slice(0, opts.evalCount);
  const task = trainRecords[0]!.instruction;
  const scoreOf = (answers: Answer[]): Score => ({ right: answers.filter((a) => a.right).length, total: answers.length });
  const show = (answers: Answer[]) => {
    for (const a of answers.slice(0, SHOWN)) {
      say(`    ${a.record.input.padEnd(24)} -> ${JSON.stringify(a.text).padEnd(26)} ${a.right ? "right" : `wrong (expected ${JSON.stringify(a.record.output)})`}`);
    }
  };

  const tokenizer = GPT2Tokenizer.fromPretrained(modelDir);
  const base = await GPT2LMHeadModel.fromPretrained(modelDir, { device, generator });
  const c = base.config;
  let handedOver = false; // to fineTune, which then owns the model
  let before: Score;
  let run: FineTuneResult;
  try {
    const nBase = base.parameters().reduce((n, p) => n + p.size, 0);
    print(`lowrank demo: teach a small GPT-2 a new task with LoRA (${device}${device === "cpu" ? `, ${info().threads} threads` : ""}, seed ${seed})`);
    say(`  base model: ${shown(modelDir)}`);
    say(`    GPT-2, ${c.nLayer} layers x ${c.nEmbd} wide, ${nBase.toLocaleString("en-US")} parameters, vocabulary ${c.vocabSize}; pretrained on four other list tasks`);
    say(`  task: "${task}"  (${trainRecords.length} training examples, ${evalRecords.length} eval examples)`);
    say(`    e.g. ${trainRecords[0]!.input} -> ${trainRecords[0]!.output}`);

    // ---- before -------------------------------------------------------------------------------
    say();
    say("Before training (the base model alone), greedy answers on eval prompts:");
    const beforeAnswers = answerAll(base, tokenizer, evalRecords);
    show(beforeAnswers);
    before = scoreOf(beforeAnswers);
    print(`  exact match on eval.jsonl before: ${percent(before)}`);

    // ---- LoRA training: fineTune, as `lowrank train` runs it ------------------------------------
    const warmupSteps = Math.min(DEMO_DEFAULTS.warmupSteps, Math.ceil(steps / 10));
    run = await fineTune({
      model: () => ((handedOver = true), { model: base, tokenizer, dir: shown(modelDir), generator }),
      // no checkpoints: a 300-step demo is rerun, not resumed, and a rerun replaces the earlier one
      data: trainFile, out: outDir, adapterDir, checkpoints: false, evalSplit: 0, template: DEMO_TEMPLATE,
      r: DEMO_DEFAULTS.r, alpha: DEMO_DEFAULTS.alpha, dropout: 0, target: DEMO_DEFAULTS.targets,
      steps, batchSize: DEMO_DEFAULTS.batchSize, lr: DEMO_DEFAULTS.lr, warmup: warmupSteps, schedule: "linear", maxGradNorm: 1, weightDecay: 0, seed,
      chartTitle: "LoRA training loss (lowrank demo)",
      progress: { quiet: opts.quiet, mode: opts.progressMode ?? "auto", stream: opts.progressStream, logEvery: Math.max(1, Math.round(steps / 12)) },
      onStart: ({ model }) => {
        say();
        say(`LoRA r=${DEMO_DEFAULTS.r}, alpha ${DEMO_DEFAULTS.alpha} on ${DEMO_DEFAULTS.targets.join(", ")} (base weights frozen):`);
        print(model.trainableParametersLine());
        say(`Training: ${steps} steps of ${DEMO_DEFAULTS.batchSize} examples, AdamW lr ${DEMO_DEFAULTS.lr} (${warmupSteps} warm-up steps, then linear decay)`);
      },
    });
  } catch (err) {
    if (!handedOver) base.dispose();
    throw err;
  }
  const { model, history } = run;
  try {
    const trainableLine = model.trainableParametersLine();
    const meanLoss = (rs: StepRecord[]) => rs.reduce((s, r) => s + (r.loss ?? 0), 0) / rs.length;
    const k = Math.max(1, Math.min(10, Math.floor(history.length / 4)));
    const trainSeconds = history.at(-1)?.elapsed ?? 0;
    print(`  loss ${meanLoss(history.slice(0, k)).toFixed(4)} (mean of the first ${k} steps) -> ${meanLoss(history.slice(-k)).toFixed(4)} (last ${k}), ${formatDuration(trainSeconds)} of training`);

    // ---- after --------------------------------------------------------------------------------
    say();
    say("After training (base + adapter), the same prompts:");
    const afterAnswers = answerAll(model.model, tokenizer, evalRecords);
    show(afterAnswers);
    const after = scoreOf(afterAnswers);
    print(`  exact match on eval.jsonl after: ${percent(after)}  (before: ${percent(before)})`);

    // ---- merge check ----------------------------------------------------------------------------
    // Logits of a batch of full eval examples: the adapter applied as a side path, the adapter
    // folded into the weights (W += s·B·A), and the base alone (how much the merge has to change).
    const checkExamples = tokenizeRecords(evalFile, evalRecords.slice(0, 8), tokenizer, { template: DEMO_TEMPLATE }).examples;
    const host = padBatch(checkExamples, tokenizer.eosTokenId);
    const logitsNow = () =>
      noGrad(() =>
        tidy(() => {
          const shape = [host.batchSize, host.seqLen];
          const inputIds = tensor(host.inputIds, { shape, device });
          const attentionMask = tensor(host.attentionMask!, { shape, device });
          return model.forward({ inputIds, attentionMask }).logits.to("cpu").dataSync() as Float32Array;
        }),
      );
    const maxDiff = (a: Float32Array, b: Float32Array) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i]!)), 0);
    const maxAbs = (a: Float32Array) => a.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    model.eval();
    const unmerged = logitsNow();
    const baseOnly = model.disableAdapter(() => logitsNow());
    model.mergeAdapter({ safeMerge: true });
    const merged = logitsNow();
    model.unmergeAdapter();
    const restored = logitsNow();
    const mergeMaxDiff = maxDiff(merged, unmerged);
    const adapterEffect = maxDiff(unmerged, baseOnly);
    const unmergeDiff = maxDiff(restored, unmerged);
    const tolerance = MERGE_TOLERANCE * Math.max(1, maxAbs(unmerged));
    const mergeOk = mergeMaxDiff <= tolerance && unmergeDiff <= tolerance;
    // A merge can only be told from no merge when the adapter moves the logits well beyond the
    // tolerance; after a few steps (lr warm-up) it may not move them at all, which is no failure.
    const telling = adapterEffect > 100 * tolerance;
    say();
    say(`Merge check: the adapter folded into the weights (W += s·B·A), logits of ${host.batchSize} eval examples (${host.batchSize} x ${host.seqLen} x ${c.vocabSize}):`);
    print(
      `  merge check: max |merged - unmerged| = ${mergeMaxDiff.toExponential(2)}, after unmerge ${unmergeDiff.toExponential(2)} ` +
        `(tolerance ${tolerance.toExponential(1)}; the adapter moves logits by up to ${adapterEffect.toFixed(2)}): ${mergeOk ? "OK" : "FAILED"}`,
    );
    if (mergeOk && !telling) {
      say(`  (after ${history.length} step${history.length === 1 ? "" : "s"} the adapter barely moves the logits, so this check proves little: train longer to see it bite)`);
    }

    // ---- save -----------------------------------------------------------------------------------
    const chart = run.charts;
    say();
    print(`Adapter saved (PEFT format): ${shown(adapterDir)} (adapter_config.json, adapter_model.safetensors)`);
    say(`  loss chart: ${chart.map(shown).join(", ")}`);
    say(`  load it with await PeftModel.fromPretrained(await GPT2LMHeadModel.fromPretrained("${shown(modelDir)}"), "${shown(adapterDir)}"), or with Python's PEFT`);
    const templateFile = join(modelDir, "template.txt");
    if (existsSync(templateFile)) {
      say(`  try it: npx lowrank generate --model ${shown(modelDir)} --adapter ${shown(adapterDir)} --template ${shown(templateFile)} --max-new-tokens ${MAX_NEW_TOKENS} --prompt "${task}" --input "cat,dog,fish"`);
    }
    const seconds = (performance.now() - started) / 1000;
    print(`Done in ${formatDuration(seconds)}.`);
    if (!mergeOk) throw new Error("the merge check failed: the merged weights do not reproduce the adapter's logits");
    return { trainableLine, before, after, history, mergeMaxDiff, adapterEffect, mergeOk, adapterDir, seconds };
  } finally {
    model.dispose();
  }
}
