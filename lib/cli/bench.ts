// `lowrank bench`: what a LoRA adapter costs on top of its frozen layer, on this machine — the LoRA
// linear against the bare frozen linear (forward, forward + backward) and the merge against its
// memory floor — as ratios (lib/analysis/lora-bench.ts). bench/peer_lora.py runs the same with
// PyTorch + PEFT on a GPU; bench/RESULTS.md holds measured tables.
import { Command } from "commander";
import { benchLora, defaultRepeat, LORA_BENCH_SHAPES, type LoraBenchRow, type MergeBenchRow } from "../analysis/lora-bench.js";
import { formatTable } from "../analysis/table.js";
import { DEVICE_HELP, deviceName, intAtLeast, newCommand, oneOf, resolveDevice, runAction } from "./common.js";

interface BenchFlags {
  device?: string;
  dtype: "float32" | "bfloat16";
  iters: number;
  warmup: number;
  repeat?: number;
  json?: boolean;
}

async function bench(flags: BenchFlags): Promise<void> {
  const device = resolveDevice(flags.device);
  const progress = (row: LoraBenchRow | MergeBenchRow) => {
    if (!flags.json) process.stderr.write(`  ${row.name} ${"pass" in row ? `${row.pass} (${row.path})` : "merge"}: ${row.ratio.toFixed(2)}x\n`);
  };
  const repeat = flags.repeat ?? defaultRepeat(device);
  if (!flags.json) {
    process.stderr.write(`lowrank bench on ${device} (frozen W ${flags.dtype}), median of ${flags.iters} samples of ${repeat} run${repeat > 1 ? "s" : ""} after ${flags.warmup} warm-up:\n`);
  }
  const result = benchLora({ device, dtype: flags.dtype, iters: flags.iters, warmup: flags.warmup, repeat, onRow: progress });
  if (flags.json) {
    console.log(JSON.stringify({ device, dtype: flags.dtype, iters: flags.iters, warmup: flags.warmup, repeat, ...result }, null, 2));
    return;
  }
  const ms = (x: number) => x.toFixed(3);
  console.log(formatTable(
    [{ header: "LoRA linear" }, { header: "pass" }, { header: "path" }, ...["frozen linear ms", "LoRA linear ms", "ratio"].map((header) => ({ header, align: "right" as const }))],
    result.linear.map((r) => [r.name, r.pass, r.path, ms(r.baseMs), ms(r.loraMs), `${r.ratio.toFixed(2)}x`]),
  ));
  console.log();
  console.log(formatTable(
    [{ header: `merge W += s·B·A (${flags.dtype})` }, ...["copy of W ms (floor)", "merge ms", "ratio"].map((header) => ({ header, align: "right" as const }))],
    result.merge.map((r) => [r.name, ms(r.copyMs), ms(r.mergeMs), `${r.ratio.toFixed(2)}x`]),
  ));
}

export function benchCommand(): Command {
  return newCommand("bench")
    .description("time what a LoRA adapter adds to its frozen linear layer, and the merge against its memory floor, as ratios")
    .option("--device <name>", DEVICE_HELP, deviceName)
    .option("--dtype <type>", "the frozen weight's dtype in the linear and merge rows: float32 or bfloat16", oneOf(["float32", "bfloat16"] as const), "float32")
    .option("--iters <n>", "timed samples per measurement (the median is reported)", intAtLeast(1), 10)
    .option("--warmup <n>", "untimed samples first", intAtLeast(0), 3)
    .option("--repeat <n>", "runs per sample, back to back between two waits (default 10 on CUDA, where a launch and a wait would weigh on small ops; 1 on the CPU)", intAtLeast(1))
    .option("--json", "print JSON (every row with its times and ratio) instead of the tables")
    .addHelpText(
      "after",
      `
Shapes (issue 12's; on the CPU N is cut to 512 tokens): ${LORA_BENCH_SHAPES.map((s) => s.name).join("; ")}.
LoRA linear = x·Wᵀ + s·drop(x)·Aᵀ·Bᵀ with W frozen and A, B trained (forward + backward: dX, dA,
dB for an upstream gradient), a LoRA layer as getPeftModel builds it; frozen linear = x·Wᵀ
(forward + backward: dX). With bfloat16 weights on CUDA each row is timed on both of the layer's
paths: "one GEMM" (the adapter and bias inside the frozen GEMM, LoraLinear.oneGemm "auto", the
default) and "GEMM + LoRA op" (the frozen GEMM, then the fused LoRA kernels). The merge's floor is
a copy of W (one read, one write). Each time is the median of --iters samples, each --repeat runs
issued back to back and waited for, divided by --repeat.

Examples:
  lowrank bench --device cpu --iters 5
  lowrank bench --device cuda --dtype bfloat16 --json`,
    )
    .action(runAction("bench", async (flags: BenchFlags) => bench(flags)));
}
