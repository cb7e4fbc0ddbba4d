// Summaries of a run's metrics for the sweep table, and the moving average of the loss curves.
import { describe, expect, it } from "vitest";
import { movingAverage, summarizeRun } from "../../lib/analysis/sweep.js";
import type { StepRecord } from "../../lib/train/metrics.js";

const step = (s: number, loss: number | null, more: Partial<StepRecord> = {}): StepRecord => ({
  step: s, epoch: s / 10, loss, lr: 1e-3, gradNorm: 1, tokens: 100 * s, tokensPerSec: 1000, elapsed: 0.5 * s, ...more,
});

describe("summarizeRun", () => {
  it("averages the last 10% of the steps, takes the last eval loss, and tokens per training second", () => {
    const records = Array.from({ length: 20 }, (_, i) => step(i + 1, 20 - i, i === 9 ? { evalLoss: 7 } : i === 14 ? { evalLoss: 5 } : {}));
    expect(summarizeRun(records)).toEqual({ steps: 20, lastLoss: 1, finalLoss: 1.5, evalLoss: 5, trainSeconds: 10, tokens: 2000, tokensPerSec: 200 });
  });

  it("uses at least one step, skips steps without a loss, and has nulls where nothing was measured", () => {
    expect(summarizeRun([step(1, 3), step(2, null)])).toMatchObject({ steps: 2, lastLoss: null, finalLoss: 3, evalLoss: null });
    expect(summarizeRun([])).toEqual({ steps: 0, lastLoss: null, finalLoss: null, evalLoss: null, trainSeconds: 0, tokens: 0, tokensPerSec: 0 });
  });
});

describe("movingAverage", () => {
  it("is centred, shorter at the ends, and ignores gaps", () => {
    expect(movingAverage([[1, 1], [2, 2], [3, NaN], [4, 6], [5, 5]], 3)).toEqual([[1, 1.5], [2, 1.5], [3, 4], [4, 5.5], [5, 5.5]]);
    expect(movingAverage([[1, 4], [2, 8]], 1)).toEqual([[1, 4], [2, 8]]);
  });
});
