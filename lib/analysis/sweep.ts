// A rank sweep: one LoRA adapter per rank, each an ordinary fineTune() run on the same data and
// seed, then what each rank reached and at what cost (from its metrics.jsonl) and the loss curves
// side by side.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { writeJsonAtomic } from "../io/atomic.js";
import { readSafetensors } from "../io/safetensors.js";
import { formatFixed } from "../io/pyformat.js";
import { ADAPTER_WEIGHTS_NAME } from "../peft/format.js";
import { lineChart, writeChart, type Point, type Series } from "../plot/index.js";
import { listCheckpoints } from "../train/checkpoint.js";
import { FINE_TUNE_DEFAULTS, fineTune, holdsRun, type FineTuneOptions, type FineTuneResult } from "../train/fine-tune.js";
import type { StepRecord } from "../train/metrics.js";

/** One training step's loss is one batch's: the last few steps are averaged for a steadier "final" loss. */
export const FINAL_WINDOW = 0.1;

export interface RunSummary {
  steps: number;
  /** The last step's training loss (one batch). */
  lastLoss: number | null;
  /** Mean training loss over the last 10% of the steps (at least one): less batch noise for comparing ranks. */
  finalLoss: number | null;
  /** The last eval loss measured (null without eval data). */
  evalLoss: number | null;
  /** Seconds the trainer spent (resumed parts included). */
  trainSeconds: number;
  /** Input tokens trained on (padding excluded). */
  tokens: number;
  tokensPerSec: number;
}

export function readMetrics(path: string): StepRecord[] {
  const text = readFileSync(path, "utf8").trim();
  return text === "" ? [] : text.split("\n").map((line) => JSON.parse(line) as StepRecord);
}

export function summarizeRun(records: readonly StepRecord[]): RunSummary {
  const last = records.at(-1);
  const losses = records.map((r) => r.loss).filter((x): x is number => x !== null);
  const window = losses.slice(-Math.max(1, Math.round(FINAL_WINDOW * records.length)));
  const trainSeconds = last?.elapsed ?? 0;
  return {
    steps: last?.step ?? 0,
    lastLoss: last?.loss ?? null,
    finalLoss: window.length > 0 ? window.reduce((a, b) => a + b, 0) / window.length : null,
    evalLoss: records.filter((r) => r.evalLoss !== undefined).at(-1)?.evalLoss ?? null,
    trainSeconds,
    tokens: last?.tokens ?? 0,
    tokensPerSec: trainSeconds > 0 ? (last?.tokens ?? 0) / trainSeconds : 0,
  };
}

/** Centered moving average over `window` points (shorter at the ends); nulls are skipped. */
export function movingAverage(points: readonly Point[], window: number): Point[] {
  const half = Math.floor(window / 2);
  return points.map(([x], i) => {
    const ys = points.slice(Math.max(0, i - half), i + half + 1).map(([, y]) => y).filter(Number.isFinite);
    return [x, ys.length ? ys.reduce((a, b) => a + b, 0) / ys.length : NaN];
  });
}

/** Whether a log y axis reads better: the losses span more than a decade (early steps of a fresh adapter). */
function spansDecade(series: readonly Series[]): boolean {
  const ys = series.flatMap((s) => s.points.map(([, y]) => y)).filter((y) => Number.isFinite(y) && y > 0);
  return ys.length > 0 && Math.max(...ys) / Math.min(...ys) > 10;
}

/**
 * Writes <outDir>/loss-curves.svg/.png (training loss per rank, a moving average over ~5% of the
 * steps, since one batch's loss is noisy) and, when any run measured one, eval-loss-curves.svg/.png
 * (eval loss per rank at its eval steps). Returns the paths written.
 */
export function writeSweepCharts(base: { train: string; eval: string }, runs: readonly { r: number; records: readonly StepRecord[] }[]): string[] {
  const steps = Math.max(1, ...runs.map((run) => run.records.length));
  const window = Math.max(1, Math.round(steps / 20));
  const train: Series[] = runs.map((run) => ({ name: `r=${run.r}`, points: movingAverage(run.records.map((rec) => [rec.step, rec.loss ?? NaN]), window) }));
  const written = writeChart(base.train, lineChart({
    title: window > 1 ? `Training loss by rank (mean of ${window} steps)` : "Training loss by rank",
    xLabel: "step", yLabel: "train loss", series: train, logY: spansDecade(train), markers: steps <= 40,
  }));
  const evals: Series[] = runs
    .map((run) => ({ name: `r=${run.r}`, points: run.records.filter((rec) => rec.evalLoss !== undefined).map((rec): Point => [rec.step, rec.evalLoss!]) }))
    .filter((s) => s.points.length > 0);
  if (evals.length > 0) {
    written.push(...writeChart(base.eval, lineChart({ title: "Eval loss by rank", xLabel: "step", yLabel: "eval loss", series: evals, logY: spansDecade(evals), markers: true })));
  }
  return written;
}

export interface RankResult extends RunSummary {
  r: number;
  alpha: number;
  out: string;
  /** LoRA parameters. */
  trainable: number;
  /** Base model + adapter parameters. */
  all: number;
  /** 100 · trainable / all, as PEFT prints it. */
  trainablePercent: string;
}

export interface SweepOptions {
  ranks: readonly number[];
  /** alpha = alphaRatio · r at each rank (the same scaling alpha/r for all); else every rank uses run.alpha. */
  alphaRatio?: number;
  /** The sweep folder: rank-<r>/ per rank, summary.json, loss-curves and eval-loss-curves charts. */
  out: string;
  /** Continue a sweep: finished ranks are kept, an interrupted rank resumes from its last checkpoint. */
  resume?: boolean;
  /** Every rank's fineTune options, less r, out and resume. */
  run: Omit<FineTuneOptions, "r" | "out" | "resume">;
  /** The base model's parameter count (for trainable%). */
  baseParameters: number;
  /** Recorded in summary.json beside the results. */
  settings?: Record<string, unknown>;
  /** Called before each rank: trained, resumed, or kept from an earlier run. */
  onRank?: (rank: { r: number; alpha: number; out: string; index: number; kept: boolean }) => void;
}

export interface SweepResult {
  /** "stopped": options.run.signal stopped a rank at a checkpoint; no summary was written. */
  status: "completed" | "stopped";
  /** The stopped rank's run (its model already disposed). */
  stopped: { r: number; result: FineTuneResult } | null;
  results: RankResult[];
  summaryPath: string | null;
  charts: string[];
}

/** The folder of one rank's run. */
export const rankDir = (out: string, r: number) => join(out, `rank-${r}`);

/** The ranks whose folders already hold a run (only a resumed sweep continues them). */
export function usedRanks(out: string, ranks: readonly number[]): number[] {
  return ranks.filter((r) => holdsRun(rankDir(out, r)));
}

/** Trains one adapter per rank (see SweepOptions) and writes summary.json and the loss-curve charts. */
export async function runSweep(opts: SweepOptions): Promise<SweepResult> {
  if (!opts.resume) {
    const used = usedRanks(opts.out, opts.ranks);
    if (used.length > 0) throw new Error(`${opts.out} already holds runs for rank ${used.join(", ")}; resume the sweep, or choose another folder`);
  }
  const results: RankResult[] = [];
  const runs: { r: number; records: StepRecord[] }[] = [];
  for (const [index, r] of opts.ranks.entries()) {
    const out = rankDir(opts.out, r);
    const alpha = opts.alphaRatio !== undefined ? opts.alphaRatio * r : (opts.run.alpha ?? FINE_TUNE_DEFAULTS.alpha);
    const kept = !!opts.resume && existsSync(join(out, ADAPTER_WEIGHTS_NAME));
    opts.onRank?.({ r, alpha, out, index, kept });
    if (!kept) {
      const resume = opts.resume && listCheckpoints(join(out, "checkpoints")).length > 0 ? (true as const) : undefined;
      const result = await fineTune({ ...opts.run, r, alpha, out, resume });
      result.model.dispose();
      if (result.status === "stopped") return { status: "stopped", stopped: { r, result }, results, summaryPath: null, charts: [] };
    }
    const records = readMetrics(join(out, "metrics.jsonl"));
    const trainable = readSafetensors(join(out, ADAPTER_WEIGHTS_NAME)).entries.reduce((n, e) => n + e.shape.reduce((a, b) => a * b, 1), 0);
    const all = opts.baseParameters + trainable;
    results.push({ r, alpha, out, trainable, all, trainablePercent: formatFixed((100 * trainable) / all, 4), ...summarizeRun(records) });
    runs.push({ r, records });
  }
  const charts = writeSweepCharts({ train: join(opts.out, "loss-curves"), eval: join(opts.out, "eval-loss-curves") }, runs);
  const summaryPath = join(opts.out, "summary.json");
  writeJsonAtomic(summaryPath, { ranks: opts.ranks, alphaRatio: opts.alphaRatio ?? null, settings: opts.settings ?? {}, results, charts });
  return { status: "completed", stopped: null, results, summaryPath, charts };
}
