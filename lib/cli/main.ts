#!/usr/bin/env node
// The lowrank command line. Each command lives in its own module and registers itself here.
import { info, packageVersion } from "../runtime.js";
import { EXIT, newCommand, runAction } from "./common.js";
import { demoCommand } from "./demo.js";
import { generateCommand } from "./generate.js";
import { mergeCommand } from "./merge.js";
import { paramsCommand } from "./params.js";
import { benchCommand } from "./bench.js";
import { svdCommand } from "./svd.js";
import { sweepCommand } from "./sweep.js";
import { trainCommand } from "./train.js";

// The version comes from package.json, not the addon: --help, --version and `params` work even
// when the native addon failed to build (commands that compute say so and exit 1).
const program = newCommand("lowrank", "lowrank --help")
  .description("LoRA fine-tuning for Node.js: train, merge and inspect PEFT-compatible adapters")
  .version(packageVersion());

program
  .command("info")
  .description("print the version and build features: SIMD level, threads, CUDA, GPUs, cuBLAS")
  .option("--json", "print machine-readable JSON")
  .action(runAction("info", async (opts: { json?: boolean }) => {
    const i = info();
    if (opts.json) {
      console.log(JSON.stringify(i, null, 2));
      return;
    }
    console.log(`lowrank ${i.version}`);
    console.log(`  addon:        ${i.addon}`);
    console.log(`  CPU kernels:  ${i.simd}, ${i.threads} thread(s)`);
    console.log(`  CUDA backend: ${i.cuda ? `built (runtime ${i.cudaRuntime}, cuBLAS ${i.cublas})` : "not built"}`);
    if (i.cuda) {
      if (i.gpus.length === 0) console.log("  GPUs:         none found");
      i.gpus.forEach((g, k) => console.log(`  cuda:${k}:       ${g}`));
    }
  }));

program.addCommand(trainCommand());
program.addCommand(mergeCommand());
program.addCommand(generateCommand());
program.addCommand(paramsCommand());
program.addCommand(svdCommand());
program.addCommand(sweepCommand());
program.addCommand(demoCommand());
program.addCommand(benchCommand());

program.parseAsync(process.argv).catch((err: Error) => {
  console.error(`lowrank: ${err.message}`);
  process.exit(EXIT.error);
});
