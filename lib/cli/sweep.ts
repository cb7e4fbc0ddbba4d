// `lowrank sweep`: one LoRA adapter per rank, trained on the same data with the same seed, then
// compared: trainable parameters, final losses, time, throughput, and the loss curves together.
// Each rank is a `lowrank train` run (the same function, options and outputs), so a rank of the
// sweep is exactly what `lowrank train --r <r> --out <out>/rank-<r>` with the other flags makes.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { Option, type Command } from "commander";
import { FINAL_WINDOW, readMetrics, summarizeRun, writeSweepCharts, type RunSummary } from "../analysis/sweep.js";
import { formatTable } from "../analysis/table.js";
import { writeJsonAtomic } from "../io/atomic.js";
import { readSafetensors } from "../io/safetensors.js";
import { formatFixed, formatThousands } from "../io/pyformat.js";
import { ADAPTER_WEIGHTS_NAME } from "../peft/format.js";
import { listCheckpoints } from "../train/checkpoint.js";
import { formatDuration } from "../train/progress.js";
import { EXIT, newCommand, numberIn, runAction, UsageError } from "./common.js";
import { DEFAULT_RANKS, parseRanks, readModelShapes } from "./params.js";
import { train, trainCommand, type TrainFlags } from "./train.js";

/** One colour per loss curve: the plot palette has ten. */
const MAX_RANKS = 10;
/** train's options the sweep replaces: the rank becomes --ranks, --out and --resume cover the whole sweep. */
const REPLACED = new Set(["--r", "--out", "--resume"]);

interface SweepFlags extends Omit<TrainFlags, "r" | "resume"> {
  ranks: number[];
  alphaRatio?: number;
  resume?: boolean;
}

export function sweepCommand(): Command {
  const cmd = newCommand("sweep")
    .description("train one LoRA adapter per rank on the same data and seed, then compare losses, parameters, time and throughput")
    .optionsGroup("Sweep:")
    .addOption(new Option("--ranks <list>", `the ranks to train, comma-separated, at most ${MAX_RANKS}, e.g. 4,8,16,64`).argParser(parseRanks).default(parseRanks(DEFAULT_RANKS), DEFAULT_RANKS))
    .requiredOption("--out <dir>", "sweep folder: rank-<r>/ per rank (a train run: adapter, metrics.jsonl, loss plot, checkpoints), summary.json, loss-curves.svg/png, eval-loss-curves.svg/png")
    .addOption(new Option("--alpha-ratio <x>", "alpha = x·r at each rank (the same scaling alpha/r = x for all; 2 is the usual rule), instead of one --alpha for every rank").argParser(numberIn(0, Infinity, { loOpen: true })).conflicts("alpha"))
    .option("--resume", "continue an interrupted sweep in --out: finished ranks are kept, an interrupted rank resumes from its last checkpoint");
  for (const option of trainCommand().options) if (!REPLACED.has(option.long!)) cmd.addOption(option);
  return cmd
    .addHelpText(
      "after",
      `
Every rank trains with the same data order, eval split, seed and settings; only r (and alpha with
--alpha-ratio) differs. A fixed --alpha (default 32) scales the update by alpha/r, so small ranks
get larger steps; --alpha-ratio 2 keeps alpha/r = 2 at every rank. The rank-<r> folders are
ordinary "lowrank train" outputs: "lowrank svd --adapter <out>/rank-8" shows how much of its rank
an adapter uses, "lowrank generate --adapter <out>/rank-8" runs it.

The table: trainable = LoRA parameters (trainable% of all, as PEFT prints it); train loss = mean of
the last ${100 * FINAL_WINDOW}% of the steps (one step's loss is one batch's); eval loss = the last measured;
time = training time; tok/s = input tokens per second of training. OUT/summary.json holds the same
for scripts, with the settings. Ctrl-C stops the current rank at a checkpoint (exit code 130);
rerun with --resume to continue.

Examples:
  lowrank sweep --model ./gpt2 --data data/demo/train.jsonl --out runs/sweep --ranks 4,8,16,64 --steps 300 --lr 1e-3
  lowrank sweep --model ./gpt2 --data data/demo/train.jsonl --out runs/sweep --ranks 1,2,4,8 --alpha-ratio 2 --target c_attn --steps 200`,
    )
    .action(runAction("sweep", (flags: SweepFlags, command: Command) => sweep(flags, command)));
}

/** What train refuses to overwrite: a checkpoint or a finished adapter. */
function holdsRun(dir: string): boolean {
  return existsSync(join(dir, ADAPTER_WEIGHTS_NAME)) || listCheckpoints(join(dir, "checkpoints")).length > 0;
}

interface RankResult extends RunSummary {
  r: number;
  alpha: number;
  out: string;
  trainable: number;
  all: number;
  trainablePercent: string;
}

async function sweep(flags: SweepFlags, cmd: Command): Promise<number> {
  if (flags.ranks.length > MAX_RANKS) throw new UsageError(`--ranks: at most ${MAX_RANKS} ranks per sweep (one colour per loss curve); got ${flags.ranks.length}`);
  // config.json now, so a bad --model fails before anything is trained
  const shapes = readModelShapes(flags.model);
  const rankDir = (r: number) => join(flags.out, `rank-${r}`);
  if (!flags.resume) {
    const used = flags.ranks.filter((r) => holdsRun(rankDir(r)));
    if (used.length > 0) throw new UsageError(`--out ${flags.out} already holds runs for rank ${used.join(", ")}; add --resume to continue the sweep, or choose another --out`);
  }
  const say = (line: string) => flags.quiet || console.log(line);
  const results: RankResult[] = [];
  const runs: { r: number; records: ReturnType<typeof readMetrics> }[] = [];
  for (const [i, r] of flags.ranks.entries()) {
    const out = rankDir(r);
    const alpha = flags.alphaRatio !== undefined ? flags.alphaRatio * r : flags.alpha;
    if (flags.resume && existsSync(join(out, ADAPTER_WEIGHTS_NAME))) {
      say(`rank ${r} (${i + 1}/${flags.ranks.length}): finished in an earlier run, kept (${out})`);
    } else {
      say(`${i > 0 ? "\n" : ""}== rank ${r} (${i + 1}/${flags.ranks.length}), alpha ${alpha}: ${out}`);
      const resume = flags.resume && listCheckpoints(join(out, "checkpoints")).length > 0 ? (true as const) : undefined;
      const code = await train({ ...flags, r, alpha, out, resume }, cmd);
      // interrupted (train printed where it stopped and the --resume command line) or failed
      if (code !== EXIT.ok) return code;
    }
    const records = readMetrics(join(out, "metrics.jsonl"));
    const trainable = readSafetensors(join(out, ADAPTER_WEIGHTS_NAME)).entries.reduce((n, e) => n + e.shape.reduce((a, b) => a * b, 1), 0);
    const all = shapes.parameters + trainable;
    results.push({ r, alpha, out, trainable, all, trainablePercent: formatFixed((100 * trainable) / all, 4), ...summarizeRun(records) });
    runs.push({ r, records });
  }

  const charts = writeSweepCharts({ train: join(flags.out, "loss-curves"), eval: join(flags.out, "eval-loss-curves") }, runs);
  const summaryPath = join(flags.out, "summary.json");
  const { ranks: _ranks, alphaRatio: _ratio, resume: _resume, ...settings } = flags;
  writeJsonAtomic(summaryPath, { ranks: flags.ranks, alphaRatio: flags.alphaRatio ?? null, settings, results, charts });

  const loss = (x: number | null) => (x === null ? "-" : x.toFixed(4));
  const columns = [
    { header: "r", align: "right" }, { header: "alpha", align: "right" }, { header: "trainable", align: "right" }, { header: "trainable%", align: "right" },
    { header: "steps", align: "right" }, { header: "train loss", align: "right" }, { header: "eval loss", align: "right" }, { header: "time", align: "right" }, { header: "tok/s", align: "right" },
  ] as const;
  const rows = results.map((x) => [
    String(x.r), String(x.alpha), formatThousands(x.trainable), x.trainablePercent, String(x.steps), loss(x.finalLoss), loss(x.evalLoss), formatDuration(x.trainSeconds), formatThousands(Math.round(x.tokensPerSec)),
  ]);
  console.log("");
  console.log(formatTable(columns, rows));
  console.log("");
  console.log(`summary: ${summaryPath}`);
  console.log(`loss curves: ${[...new Set(charts.map((p) => p.replace(/\.(svg|png)$/, "")))].map((b) => `${b}.{svg,png}`).join(", ")}`);
  return EXIT.ok;
}
