// `lowrank sweep`: one LoRA adapter per rank, trained on the same data with the same seed, then
// compared: trainable parameters, final losses, time, throughput, and the loss curves together.
// Each rank is a fineTune() run with the options `lowrank train` builds from the same flags, so a
// rank of the sweep is exactly what `lowrank train --r <r> --out <out>/rank-<r>` makes. The sweep
// itself is runSweep() (lib/analysis/sweep.ts); this module parses flags and prints.
import { Option, type Command } from "commander";
import { FINAL_WINDOW, runSweep, usedRanks } from "../analysis/sweep.js";
import { formatTable } from "../analysis/table.js";
import { formatThousands } from "../io/pyformat.js";
import { formatDuration } from "../train/progress.js";
import { EXIT, newCommand, numberIn, runAction, UsageError } from "./common.js";
import { withConfigFile } from "./config.js";
import { stopOnSignals } from "./interrupt.js";
import { DEFAULT_RANKS, parseRanks, readModelShapes } from "./params.js";
import { flagError, humanLines, printStart, printStopped, resumeArgs, trainCommand, trainOptions, type TrainFlags } from "./train.js";

/** One colour per loss curve: the plot palette has ten. */
const MAX_RANKS = 10;
/**
 * train's options the sweep replaces: the rank becomes --ranks, --out and --resume cover the whole
 * sweep, the sweep adds its own --config (its keys are the sweep's flags), and its machine-readable
 * output is OUT/summary.json rather than --json.
 */
const REPLACED = new Set(["--r", "--out", "--resume", "--config", "--json"]);

interface SweepFlags extends Omit<TrainFlags, "r" | "resume" | "json"> {
  ranks: number[];
  alphaRatio?: number;
  resume?: boolean;
}

export function sweepCommand(): Command {
  const cmd = withConfigFile(newCommand("sweep")
    .description("train one LoRA adapter per rank on the same data and seed, then compare losses, parameters, time and throughput"))
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

Examples (the model and data bundled with lowrank):
  lowrank sweep --model data/demo/model --data data/demo/train.jsonl --out runs/sweep --ranks 4,8,16,64 --steps 300 --lr 2e-3
  lowrank sweep --model data/demo/model --data data/demo/train.jsonl --out runs/sweep --ranks 1,2,4,8 --alpha-ratio 2 --target c_attn --steps 200`,
    )
    .action(runAction("sweep", (flags: SweepFlags, command: Command) => sweep(flags, command)));
}

async function sweep(flags: SweepFlags, cmd: Command): Promise<number> {
  if (flags.ranks.length > MAX_RANKS) throw new UsageError(`--ranks: at most ${MAX_RANKS} ranks per sweep (one colour per loss curve); got ${flags.ranks.length}`);
  // config.json now, so a bad --model fails before anything is trained
  const shapes = readModelShapes(flags.model);
  if (!flags.resume) {
    const used = usedRanks(flags.out, flags.ranks);
    if (used.length > 0) throw new UsageError(`--out ${flags.out} already holds runs for rank ${used.join(", ")}; add --resume to continue the sweep, or choose another --out`);
  }
  const say = (line: string) => flags.quiet || console.log(line);
  const { ranks: _ranks, alphaRatio: _ratio, resume: _resume, ...settings } = flags;
  const stop = stopOnSignals();
  let sweepResult: Awaited<ReturnType<typeof runSweep>>;
  try {
    sweepResult = await runSweep({
      ranks: flags.ranks, alphaRatio: flags.alphaRatio, out: flags.out, resume: flags.resume, baseParameters: shapes.parameters, settings,
      run: { ...trainOptions(flags, cmd), signal: stop.signal, onStart: (run) => printStart(run, humanLines(flags)) },
      onRank: ({ r, alpha, out, index, kept }) => {
        const of = `${index + 1}/${flags.ranks.length}`;
        say(kept ? `rank ${r} (${of}): finished in an earlier run, kept (${out})` : `${index > 0 ? "\n" : ""}== rank ${r} (${of}), alpha ${alpha}: ${out}`);
      },
    });
  } catch (err) {
    throw flagError(err);
  } finally {
    stop.dispose();
  }
  if (sweepResult.status === "stopped") {
    printStopped(sweepResult.stopped!.result, resumeArgs(process.argv.slice(2), flags.resume ? true : undefined));
    return EXIT.interrupted;
  }
  const { results, summaryPath, charts } = sweepResult;
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
