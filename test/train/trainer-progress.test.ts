// The progress display: plain lines for logs and pipes, a cli-progress bar on terminals, silence
// with quiet.
import { Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import { formatDuration, ProgressReporter } from "../../lib/train/progress.js";
import type { StepRecord } from "../../lib/train/metrics.js";

/** A stream that records what is written; `tty` makes it look like a terminal. */
function sink(tty: boolean): { stream: NodeJS.WriteStream; text: () => string } {
  let text = "";
  const w = new Writable({ write: (chunk, _enc, cb) => ((text += chunk.toString()), cb()) }) as unknown as NodeJS.WriteStream;
  Object.assign(w, { isTTY: tty, columns: 120, cursorTo: () => true, clearLine: () => true, moveCursor: () => true, clearScreenDown: () => true });
  return { stream: w, text: () => text };
}

const record = (step: number): StepRecord => ({ step, epoch: step / 10, loss: 2 / step, lr: 1e-4, gradNorm: 0.5, tokens: 100 * step, tokensPerSec: 1234.4, elapsed: 65 * step });

describe("ProgressReporter", () => {
  it("formats durations", () => {
    expect([0, 59.6, 75, 3725, NaN, -1].map(formatDuration)).toEqual(["0:00", "1:00", "1:15", "1:02:05", "?", "?"]);
  });

  it("plain mode prints the first step, every N-th and the last, plus messages", () => {
    const out = sink(false);
    const p = new ProgressReporter({ totalSteps: 25, stream: out.stream, logEvery: 10 });
    p.start();
    for (let s = 1; s <= 25; s++) {
      p.step(record(s));
      if (s === 12) p.log("step 12: eval loss 1.0000");
    }
    p.stop();
    const lines = out.text().trimEnd().split("\n");
    expect(lines.map((l) => l.split(" | ")[0])).toEqual(["step 1/25 (4%)", "step 10/25 (40%)", "step 12: eval loss 1.0000", "step 20/25 (80%)", "step 25/25 (100%)"]);
    expect(lines[0]).toMatch(/^step 1\/25 \(4%\) \| loss 2\.0000 \| lr 1\.00e-4 \| grad norm 0\.500 \| 1,234 tok\/s \| elapsed 1:05 \| ETA \d+:\d\d$/);
  });

  it("a resumed run's first line is its first step; quiet prints nothing", () => {
    const out = sink(false);
    const p = new ProgressReporter({ totalSteps: 100, startStep: 40, stream: out.stream });
    p.start();
    p.step(record(41));
    p.log("hello");
    expect(out.text()).toMatch(/^step 41\/100 \(41%\) .*\nhello\n$/);
    const quiet = sink(true);
    const q = new ProgressReporter({ totalSteps: 3, stream: quiet.stream, quiet: true });
    q.start();
    q.step(record(1));
    q.log("x");
    q.stop();
    expect(quiet.text()).toBe("");
  });

  it("draws a bar with step/total, loss, lr, ETA and tokens/s on a terminal", () => {
    const out = sink(true);
    const p = new ProgressReporter({ totalSteps: 50, stream: out.stream });
    p.start();
    p.step(record(5));
    p.log("step 5: checkpoint saved to x");
    p.stop();
    expect(out.text()).toMatch(/step 5\/50 \[[=-]{16}\] loss 0\.4000 \| lr 1\.00e-4 \| ETA \d+:\d\d \| 1,234 tok\/s/);
    expect(out.text()).toContain("step 5: checkpoint saved to x\n");
  });
});
