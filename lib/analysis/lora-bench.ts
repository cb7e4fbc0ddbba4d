// What the LoRA adapter costs on top of its frozen layer (issue 12's table): the LoRA linear
// (y = x·Wᵀ + s·drop(x)·Aᵀ·Bᵀ, a LoraLinear layer as getPeftModel makes one) against the bare frozen
// linear, forward and forward + backward, and the merge W += s·B·A against its memory floor (one
// read and one write of W, timed as a copy of W). With bf16 weights on CUDA the layer runs both
// of its paths, one row each: the one-GEMM path (LoraLinear.oneGemm "auto", the default) and the
// base GEMM followed by the fused LoRA op. Each time is the median of `iters` samples after `warmup`,
// each sample `repeat` runs (each in its own tidy scope) waited for to their end (synchronize() on
// CUDA) and divided by `repeat`.
import { Linear } from "../nn/layers.js";
import { loraMerge } from "../ops/lora.js";
import { LoraLinear } from "../peft/layer.js";
import { median } from "./stats.js";
import { linear } from "../ops/matmul.js";
import { synchronize } from "../runtime.js";
import { randn, zeros } from "../tensor/creation.js";
import { Generator } from "../tensor/random.js";
import { tidy } from "../tensor/scope.js";
import { copyInto, noGrad, type Tensor } from "../tensor/tensor.js";

export interface LoraBenchShape {
  name: string;
  /** Rows of x (tokens), input features, output features, rank. */
  N: number;
  k: number;
  d: number;
  r: number;
  dropout: number;
}

/** Issue 12's shapes (PEFT's ratios there: 1.46x, 1.63x, 3.82x; merge 4.75x). */
export const LORA_BENCH_SHAPES: readonly LoraBenchShape[] = [
  { name: "N=8192 k=d=4096 r=16", N: 8192, k: 4096, d: 4096, r: 16, dropout: 0 },
  { name: "N=8192 k=d=4096 r=16 dropout 0.05", N: 8192, k: 4096, d: 4096, r: 16, dropout: 0.05 },
  { name: "GPT-2 c_attn N=8192 k=768 d=2304 r=8", N: 8192, k: 768, d: 2304, r: 8, dropout: 0 },
];

/** The same shapes with N cut to 512 tokens, which a laptop CPU times in seconds. */
export const LORA_BENCH_SHAPES_CPU: readonly LoraBenchShape[] = LORA_BENCH_SHAPES.map((s) => ({ ...s, name: s.name.replace("N=8192", "N=512"), N: 512 }));

/** How the LoRA layer ran: its one-GEMM path (bf16 weights on CUDA) or the base GEMM and the fused LoRA op. */
export type LoraPath = "one GEMM" | "GEMM + LoRA op";

export interface LoraBenchRow {
  name: string;
  pass: "forward" | "forward+backward";
  path: LoraPath;
  baseMs: number;
  loraMs: number;
  /** loraMs / baseMs. */
  ratio: number;
}

export interface MergeBenchRow {
  name: string;
  /** A copy of W: one read and one write, the merge's memory floor. */
  copyMs: number;
  mergeMs: number;
  ratio: number;
}

export interface LoraBenchOptions {
  device: string;
  /** dtype of the frozen W, in the linear rows and the merge rows. */
  dtype?: "float32" | "bfloat16";
  shapes?: readonly LoraBenchShape[];
  iters?: number;
  warmup?: number;
  /**
   * Runs per timed sample, issued back to back between two waits and the time divided by them:
   * on CUDA the launch and the wait (~10-20 µs a sample) would otherwise weigh on the small ops,
   * the merge and its copy most. Default: defaultRepeat(device).
   */
  repeat?: number;
  /** Called after each row (progress). */
  onRow?: (row: LoraBenchRow | MergeBenchRow) => void;
}

/** Runs per timed sample unless asked: 10 on CUDA, 1 on the CPU (see LoraBenchOptions.repeat). */
export function defaultRepeat(device: string): number {
  return device.startsWith("cuda") ? 10 : 1;
}

/**
 * The median time in ms of `run` over `iters` samples (after `warmup`), each sample `repeat` calls
 * between two waits, divided by `repeat`; each call scoped (what it returns is freed too).
 */
function timeMs(device: string, iters: number, warmup: number, repeat: number, run: () => unknown): number {
  const times: number[] = [];
  for (let i = 0; i < warmup + iters; i++) {
    synchronize(device);
    const t0 = performance.now();
    for (let r = 0; r < repeat; r++) {
      tidy(() => {
        run();
      });
    }
    synchronize(device);
    if (i >= warmup) times.push((performance.now() - t0) / repeat);
  }
  return median(times);
}

export function benchLora(opts: LoraBenchOptions): { linear: LoraBenchRow[]; merge: MergeBenchRow[] } {
  const { device, dtype = "float32", iters = 10, warmup = 3 } = opts;
  const repeat = opts.repeat ?? defaultRepeat(device);
  const time = (run: () => unknown) => timeMs(device, iters, warmup, repeat, run);
  const shapes = opts.shapes ?? (device.startsWith("cuda") ? LORA_BENCH_SHAPES : LORA_BENCH_SHAPES_CPU);
  const linearRows: LoraBenchRow[] = [], mergeRows: MergeBenchRow[] = [];
  const g = new Generator(0);
  for (const s of shapes) {
    const x = randn([s.N, s.k], { device, generator: g });
    const w32 = randn([s.d, s.k], { std: 0.02, device, generator: g });
    const W = dtype === "bfloat16" ? w32.to(device, "bfloat16") : w32;
    const gy = randn([s.N, s.d], { device, generator: g });
    // The LoRA layer: nn.Linear(k, d) without bias holding its own copy of W, one adapter.
    const base = new Linear(s.k, s.d, { bias: false, device });
    base.weight.dispose();
    base.weight = W.clone();
    base.weight.requiresGrad = false; // frozen, as getPeftModel leaves it
    const layer = new LoraLinear(base);
    layer.addAdapter("default", { r: s.r, alpha: 2 * s.r, scaling: 2, dropout: s.dropout, init: false, generator: g });
    layer.activeAdapters = ["default"];
    const [A, B] = [layer.loraA("default"), layer.loraB("default")];
    const paths: LoraPath[] = dtype === "bfloat16" && device.startsWith("cuda") ? ["one GEMM", "GEMM + LoRA op"] : ["GEMM + LoRA op"];
    const lora = (path: LoraPath) => (input: Tensor) => {
      LoraLinear.oneGemm = path === "one GEMM" ? "auto" : "never";
      return layer.forward(input);
    };
    const row = (pass: LoraBenchRow["pass"], path: LoraPath, baseMs: number, withLora: () => void) => {
      const loraMs = time(withLora);
      const r: LoraBenchRow = { name: s.name, pass, path, baseMs, loraMs, ratio: loraMs / baseMs };
      linearRows.push(r);
      opts.onRow?.(r);
    };
    const backward = (f: (input: Tensor) => Tensor) => () => {
      const input = x.detach().requireGrad();
      f(input).backward(gy);
      for (const t of [input, A, B]) {
        t.grad?.dispose();
        t.grad = null;
      }
    };
    const policy = LoraLinear.oneGemm;
    try {
      const forwardMs = time(() => noGrad(() => linear(x, W)));
      for (const path of paths) row("forward", path, forwardMs, () => noGrad(() => lora(path)(x)));
      const bothMs = time(backward((input) => linear(input, W)));
      for (const path of paths) row("forward+backward", path, bothMs, backward(lora(path)));
    } finally {
      LoraLinear.oneGemm = policy;
    }

    // Merge: W += s·B·A in place (W in the rows' dtype), against copying W.
    const target = W.contiguous(), copy = zeros([s.d, s.k], { device, dtype });
    const copyMs = time(() => copyInto(copy, target));
    const mergeMs = time(() => noGrad(() => loraMerge(target, A, B, 2)));
    const m: MergeBenchRow = { name: `${s.d}x${s.k} r=${s.r}`, copyMs, mergeMs, ratio: mergeMs / copyMs };
    if (!mergeRows.some((r) => r.name === m.name)) {
      mergeRows.push(m);
      opts.onRow?.(m);
    }
    for (const t of new Set([x, w32, W, gy, target, copy])) t.dispose();
    layer.dispose();
  }
  return { linear: linearRows, merge: mergeRows };
}
