// What the LoRA adapter costs on top of its frozen layer (issue 12's table): the LoRA linear
// (y = x·Wᵀ + s·drop(x)·Aᵀ·Bᵀ, the op PEFT's LoraLayer runs) against the bare frozen linear, forward
// and forward + backward, and the merge W += s·B·A against its memory floor (one read and one write
// of W, timed as a copy of W). Each time is the median of `iters` runs after `warmup`, each run
// waited for to its end (synchronize() on CUDA), in its own tidy scope.
import { loraDelta, loraMerge } from "../ops/lora.js";
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

export interface LoraBenchRow {
  name: string;
  pass: "forward" | "forward+backward";
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
  /** Called after each row (progress). */
  onRow?: (row: LoraBenchRow | MergeBenchRow) => void;
}

/** The median time in ms of `run`, each call waited for and scoped (what it returns is freed too). */
function timeMs(device: string, iters: number, warmup: number, run: () => unknown): number {
  const times: number[] = [];
  for (let i = 0; i < warmup + iters; i++) {
    synchronize(device);
    const t0 = performance.now();
    tidy(() => {
      run();
    });
    synchronize(device);
    if (i >= warmup) times.push(performance.now() - t0);
  }
  return median(times);
}

export function benchLora(opts: LoraBenchOptions): { linear: LoraBenchRow[]; merge: MergeBenchRow[] } {
  const { device, dtype = "float32", iters = 10, warmup = 3 } = opts;
  const shapes = opts.shapes ?? (device.startsWith("cuda") ? LORA_BENCH_SHAPES : LORA_BENCH_SHAPES_CPU);
  const linearRows: LoraBenchRow[] = [], mergeRows: MergeBenchRow[] = [];
  const g = new Generator(0);
  for (const s of shapes) {
    const x = randn([s.N, s.k], { device, generator: g });
    const w32 = randn([s.d, s.k], { std: 0.02, device, generator: g });
    const W = dtype === "bfloat16" ? w32.to(device, "bfloat16") : w32;
    const A = randn([s.r, s.k], { std: 0.02, device, generator: g }).requireGrad();
    const B = randn([s.d, s.r], { std: 0.02, device, generator: g }).requireGrad();
    const gy = randn([s.N, s.d], { device, generator: g });
    const lora = (input: Tensor) => loraDelta(linear(input, W), input, A, B, { scaling: 2, dropout: s.dropout, training: true, generator: g });
    const row = (pass: LoraBenchRow["pass"], base: () => void, withLora: () => void) => {
      const baseMs = timeMs(device, iters, warmup, base), loraMs = timeMs(device, iters, warmup, withLora);
      const r: LoraBenchRow = { name: s.name, pass, baseMs, loraMs, ratio: loraMs / baseMs };
      linearRows.push(r);
      opts.onRow?.(r);
    };
    row("forward", () => noGrad(() => linear(x, W)), () => noGrad(() => lora(x)));
    const backward = (f: (input: Tensor) => Tensor) => () => {
      const input = x.detach().requireGrad();
      f(input).backward(gy);
      for (const t of [input, A, B]) {
        t.grad?.dispose();
        t.grad = null;
      }
    };
    row("forward+backward", backward((input) => linear(input, W)), backward(lora));

    // Merge: W += s·B·A in place (W in the rows' dtype), against copying W.
    const target = W.contiguous(), copy = zeros([s.d, s.k], { device, dtype });
    const copyMs = timeMs(device, iters, warmup, () => copyInto(copy, target));
    const mergeMs = timeMs(device, iters, warmup, () => loraMerge(target, A, B, 2));
    const m: MergeBenchRow = { name: `${s.d}x${s.k} r=${s.r}`, copyMs, mergeMs, ratio: mergeMs / copyMs };
    if (!mergeRows.some((r) => r.name === m.name)) {
      mergeRows.push(m);
      opts.onRow?.(m);
    }
    for (const t of new Set([x, w32, W, A, B, gy, target, copy])) t.dispose();
  }
  return { linear: linearRows, merge: mergeRows };
}
