// `lowrank bench` and benchLora (lib/analysis/lora-bench.ts): every row measured, ratios that are the
// quotient of the times printed, JSON that parses, help that names the shapes. (What the numbers
// are is for bench/RESULTS.md: no test times anything.)
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { benchLora, LORA_BENCH_SHAPES, LORA_BENCH_SHAPES_CPU } from "../../lib/analysis/lora-bench.js";
import { memory } from "../../lib/index.js";
import { runCli, workspace } from "./helpers.js";

describe("benchLora", () => {
  it("measures the LoRA linear against the frozen one (both passes, float32 and bf16 W) and the merge, freeing what it allocates", () => {
    const shapes = [
      { name: "tiny", N: 9, k: 16, d: 12, r: 2, dropout: 0 },
      { name: "tiny dropout", N: 9, k: 16, d: 12, r: 2, dropout: 0.1 },
    ];
    const before = memory().cpu!;
    for (const dtype of ["float32", "bfloat16"] as const) {
      const seen: string[] = [];
      const r = benchLora({ device: "cpu", dtype, shapes, iters: 2, warmup: 1, onRow: (row) => seen.push(row.name) });
      expect(r.linear.map((x) => `${x.name} ${x.pass}`)).toEqual(["tiny forward", "tiny forward+backward", "tiny dropout forward", "tiny dropout forward+backward"]);
      expect(r.linear.every((x) => x.path === "GEMM + LoRA op")).toBe(true); // bench times the one-GEMM path on CUDA only
      expect(r.merge.map((x) => x.name)).toEqual(["12x16 r=2"]); // one merge per weight shape
      for (const x of r.linear) expect(x.ratio).toBeCloseTo(x.loraMs / x.baseMs, 12);
      for (const x of r.merge) expect(x.ratio).toBeCloseTo(x.mergeMs / x.copyMs, 12);
      expect([...r.linear.flatMap((x) => [x.baseMs, x.loraMs]), ...r.merge.flatMap((x) => [x.copyMs, x.mergeMs])].every((t) => t > 0)).toBe(true);
      expect(seen).toHaveLength(5);
    }
    expect(memory().cpu).toMatchObject({ tensors: before.tensors, bytes: before.bytes });
  });

  it("times samples of several runs each (repeat), still freeing what it allocates", () => {
    const before = memory().cpu!;
    const shapes = [{ name: "tiny", N: 5, k: 8, d: 6, r: 2, dropout: 0 }];
    let runs = 0;
    const r = benchLora({ device: "cpu", shapes, iters: 2, warmup: 1, repeat: 3, onRow: () => runs++ });
    expect(runs).toBe(3);
    expect([...r.linear.map((x) => x.loraMs), ...r.merge.map((x) => x.mergeMs)].every((t) => t > 0)).toBe(true);
    expect(memory().cpu).toMatchObject({ tensors: before.tensors, bytes: before.bytes });
  });

  it("takes issue 12's shapes on CUDA and the same with 512 tokens on the CPU", () => {
    expect(LORA_BENCH_SHAPES.map((s) => [s.N, s.k, s.d, s.r, s.dropout])).toEqual([[8192, 4096, 4096, 16, 0], [8192, 4096, 4096, 16, 0.05], [8192, 768, 2304, 8, 0]]);
    expect(LORA_BENCH_SHAPES_CPU.every((s) => s.N === 512 && s.name.includes("N=512"))).toBe(true);
  });
});

describe("lowrank bench", () => {
  let ws: Awaited<ReturnType<typeof workspace>>;
  beforeAll(async () => {
    ws = await workspace("lowrank-bench-");
  });
  afterAll(() => ws.cleanup());

  it("--help names the shapes and options; a bad value exits 2", async () => {
    const help = await runCli(ws.main, ["bench", "--help"]);
    expect(help.code).toBe(0);
    for (const s of ["--device", "--dtype", "--iters", "--warmup", "--repeat", "--json", "N=8192 k=d=4096 r=16"]) expect(help.stdout).toContain(s);
    const bad = await runCli(ws.main, ["bench", "--iters", "0"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--iters <n>/);
    const badRepeat = await runCli(ws.main, ["bench", "--repeat", "0"]);
    expect(badRepeat.code).toBe(2);
    expect(badRepeat.stderr).toMatch(/--repeat <n>/);
  });
});
