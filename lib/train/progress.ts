// What a person watching a training run sees: a progress bar (step/total, loss, lr, tokens/s, ETA)
// when the output is a terminal, and plain log lines every few steps when it is a file or a pipe
// (CI logs, `| tee`), where a redrawn bar would turn into thousands of lines.
import { MultiBar, type SingleBar } from "cli-progress";
import type { StepRecord } from "./metrics.js";

export interface ProgressOptions {
  /** The step the run ends at. */
  totalSteps: number;
  /** Steps already done when this session starts (a resumed run's checkpoint step). */
  startStep?: number;
  /** Print nothing at all. */
  quiet?: boolean;
  /** Where to write (default process.stdout). */
  stream?: NodeJS.WriteStream;
  /** "auto" (default): a bar when `stream` is a TTY, plain lines otherwise. */
  mode?: "auto" | "bar" | "plain";
  /** Plain mode prints every N-th step (default 10), and always the first and the last. */
  logEvery?: number;
}

/** 75 -> "1:15", 3725 -> "1:02:05". */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "?";
  const s = Math.round(seconds);
  const [h, m, sec] = [Math.floor(s / 3600), Math.floor(s / 60) % 60, s % 60];
  const two = (n: number) => String(n).padStart(2, "0");
  return h > 0 ? `${h}:${two(m)}:${two(sec)}` : `${m}:${two(sec)}`;
}

const formatLoss = (x: number | null) => (x === null ? "-" : x.toFixed(4));
const formatLr = (x: number) => x.toExponential(2);
const formatRate = (x: number) => Math.round(x).toLocaleString("en-US");

export class ProgressReporter {
  private readonly total: number;
  private readonly startStep: number;
  private readonly quiet: boolean;
  private readonly stream: NodeJS.WriteStream;
  private readonly useBar: boolean;
  private readonly logEvery: number;
  private multibar: MultiBar | null = null;
  private bar: SingleBar | null = null;
  private startedAt = 0;

  constructor(opts: ProgressOptions) {
    this.total = opts.totalSteps;
    this.startStep = opts.startStep ?? 0;
    this.quiet = opts.quiet ?? false;
    this.stream = opts.stream ?? process.stdout;
    const mode = opts.mode ?? "auto";
    this.useBar = !this.quiet && (mode === "bar" || (mode === "auto" && this.stream.isTTY === true));
    this.logEvery = opts.logEvery ?? 10;
    if (!(Number.isInteger(this.logEvery) && this.logEvery >= 1)) throw new Error(`ProgressReporter: logEvery must be a positive integer, got ${opts.logEvery}`);
  }

  /** Starts the clock (and draws the bar). */
  start(): void {
    this.startedAt = performance.now();
    if (!this.useBar) return;
    this.multibar = new MultiBar({
      stream: this.stream,
      // Most important first: a narrow terminal cuts the end of the line.
      format: "step {value}/{total} [{bar}] loss {loss} | lr {lr} | ETA {etaText} | {rate} tok/s",
      barsize: 16,
      hideCursor: true,
      gracefulExit: false, // SIGINT belongs to the trainer: it finishes the step and saves a checkpoint
      clearOnComplete: false,
      linewrap: true,
    });
    this.bar = this.multibar.create(this.total, this.startStep, { loss: "-", lr: "-", rate: "-", etaText: "?" });
  }

  /** Seconds to the end, from this session's pace (a resumed run's earlier pace is not known). */
  eta(step: number): number {
    const done = step - this.startStep;
    if (done <= 0) return NaN;
    return ((performance.now() - this.startedAt) / 1000 / done) * (this.total - step);
  }

  /** Reports a finished step. */
  step(r: StepRecord): void {
    if (this.quiet) return;
    const eta = this.eta(r.step);
    if (this.bar) {
      this.bar.update(r.step, { loss: formatLoss(r.loss), lr: formatLr(r.lr), rate: formatRate(r.tokensPerSec), etaText: formatDuration(eta) });
      return;
    }
    if (r.step === this.startStep + 1 || r.step % this.logEvery === 0 || r.step === this.total) {
      const pct = Math.floor((100 * r.step) / this.total);
      this.stream.write(
        `step ${r.step}/${this.total} (${pct}%) | loss ${formatLoss(r.loss)} | lr ${formatLr(r.lr)} | grad norm ${r.gradNorm.toFixed(3)} | ` +
          `${formatRate(r.tokensPerSec)} tok/s | elapsed ${formatDuration(r.elapsed)} | ETA ${formatDuration(eta)}\n`,
      );
    }
  }

  /** A message line (eval results, checkpoints), printed above the bar when there is one. */
  log(message: string): void {
    if (this.quiet) return;
    if (this.multibar) {
      this.multibar.log(message + "\n");
      this.multibar.update(); // log() only buffers until the next redraw, which stop() would skip
    } else {
      this.stream.write(message + "\n");
    }
  }

  /** Removes the bar's redraw timer and leaves the cursor on a fresh line. */
  stop(): void {
    this.multibar?.stop();
    this.multibar = null;
    this.bar = null;
  }
}
