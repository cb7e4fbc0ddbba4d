// A rank sweep's results from its runs' metrics.jsonl: what each rank reached and at what cost,
// and the loss curves side by side.
import { readFileSync } from "node:fs";
import { lineChart, writeChart, type Point, type Series } from "../plot/index.js";
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
