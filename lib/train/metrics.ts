// The training log: one JSON record per optimizer step in <out>/metrics.jsonl, and the loss chart
// drawn from it. Appending one line per step keeps the cost constant; on resume the file is
// rewound to the checkpoint's history, so it never holds steps the resumed run will redo.
import { appendFileSync } from "node:fs";
import { writeFileAtomic } from "../io/atomic.js";
import { lineChart, writeChart, type Point, type Series } from "../plot/index.js";

/** What one optimizer step did (one line of metrics.jsonl). */
export interface StepRecord {
  /** Optimizer steps done, this one included (1-based). */
  step: number;
  /** Training data consumed, in epochs (fractional). */
  epoch: number;
  /**
   * Mean cross-entropy over this step's label tokens (all gradient-accumulation micro-batches
   * together); null when the step had no label token and made no update.
   */
  loss: number | null;
  /** The learning rate this step's update used. */
  lr: number;
  /** Global L2 norm of the gradients before clipping. */
  gradNorm: number;
  /** Input tokens (padding excluded) seen since the run began, resumed parts included. */
  tokens: number;
  /** This step's input tokens per second of its compute time. */
  tokensPerSec: number;
  /** Seconds spent training since the run began, resumed parts included. */
  elapsed: number;
  /** Mean cross-entropy over the eval set's label tokens, on steps where it was measured. */
  evalLoss?: number;
}

/** The metrics.jsonl writer. */
export class MetricsLog {
  constructor(readonly path: string) {}

  /** Replaces the file by `records` atomically: a new run starts empty, a resumed one at its checkpoint. */
  reset(records: readonly StepRecord[]): void {
    writeFileAtomic(this.path, records.map((r) => JSON.stringify(r) + "\n").join(""));
  }

  append(record: StepRecord): void {
    appendFileSync(this.path, JSON.stringify(record) + "\n");
  }
}

/**
 * Writes <base>.svg and <base>.png: training loss per step and, where measured, eval loss.
 * The y axis is logarithmic when the loss spans more than a decade (early steps of a fresh run).
 */
export function writeLossChart(base: string, records: readonly StepRecord[], title = "Training loss"): string[] {
  const train: Point[] = records.map((r) => [r.step, r.loss ?? NaN]);
  const evals: Point[] = records.filter((r) => r.evalLoss !== undefined).map((r) => [r.step, r.evalLoss!]);
  const series: Series[] = [{ name: "train loss", points: train }];
  if (evals.length > 0) series.push({ name: "eval loss", points: evals });
  let lo = Infinity, hi = 0;
  for (const [, y] of [...train, ...evals]) {
    if (Number.isFinite(y) && y > 0) [lo, hi] = [Math.min(lo, y), Math.max(hi, y)];
  }
  const logY = hi / lo > 10;
  const chart = lineChart({ title, xLabel: "step", yLabel: "loss", series, logY, markers: records.length <= 40 });
  return writeChart(base, chart);
}
