// `lowrank demo` (npm run demo): the command line of runDemo (lib/train/demo.ts), which teaches
// the bundled small GPT-2 a new task with LoRA and shows that it worked.
import type { Command } from "commander";
import { DEMO_DEFAULTS, runDemo } from "../train/demo.js";
import { DEVICE_HELP, deviceName, EXIT, intAtLeast, newCommand, resolveDevice, runAction } from "./common.js";
import { capSteps } from "./train.js";

interface DemoFlags {
  device?: string;
  steps: number;
  out: string;
  seed: number;
  quiet?: boolean;
  evalCount?: number;
}

export function demoCommand(): Command {
  return newCommand("demo")
    .description("teach the bundled small GPT-2 a new task with LoRA on the CPU in a few minutes: before/after answers, merge check, adapter saved")
    .option("--device <name>", DEVICE_HELP, deviceName)
    .option("--steps <n>", "LoRA training steps", intAtLeast(1), DEMO_DEFAULTS.steps)
    .option("--out <dir>", "output folder: adapter/ (PEFT format), loss.svg, loss.png, metrics.jsonl (a rerun replaces them)", DEMO_DEFAULTS.out)
    .option("--seed <n>", "seed for the adapter init and the data order (the same seed prints the same numbers)", intAtLeast(0), DEMO_DEFAULTS.seed)
    .option("--eval-count <n>", "score only the first N examples of eval.jsonl (default: all 100)", intAtLeast(1))
    .option("--quiet", "no progress display and no example answers, only the results")
    .addHelpText(
      "after",
      `
The base model (data/demo/model, made by scripts/make-demo-model.mjs) knows four list tasks but not
"Move the first word to the end."; the adapter learns it from data/demo/train.jsonl and is scored on
data/demo/eval.jsonl (word lists it has not seen). Nothing is downloaded.`,
    )
    .action(runAction("demo", async (flags: DemoFlags) => {
      await runDemo({ device: resolveDevice(flags.device), steps: capSteps(flags.steps), out: flags.out, seed: flags.seed, quiet: flags.quiet, evalCount: flags.evalCount });
      return EXIT.ok;
    }));
}
