import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { describe, expect, it } from "vitest";
import {
  arange, bf16BitsToF32, dropout, empty, f32ToBf16Bits, full, Generator, info, kaimingUniform, keep, memory, ones, rand, randn,
  tensor, tidy, zeros,
} from "../../lib/index.js";

const cpuBytes = () => memory().cpu!.bytes;

describe("tensor creation and read-back", () => {
  it("round-trips nested arrays with shape, dtype and strides", () => {
    tidy(() => {
      const t = tensor([[1, 2, 3], [4, 5, 6]]);
      expect(t.shape).toEqual([2, 3]);
      expect(t.strides).toEqual([3, 1]);
      expect(t.dtype).toBe("float32");
      expect(t.device).toBe("cpu");
      expect(t.toArray()).toEqual([[1, 2, 3], [4, 5, 6]]);
      expect(Array.from(t.dataSync())).toEqual([1, 2, 3, 4, 5, 6]);
    });
  });

  it("creates from typed arrays and int32", () => {
    tidy(() => {
      const t = tensor(new Int32Array([5, -7, 9, 11]), { shape: [2, 2] });
      expect(t.dtype).toBe("int32");
      expect(t.toArray()).toEqual([[5, -7], [9, 11]]);
      expect(tensor(3.5).item()).toBe(3.5);
      expect(tensor(3.5).shape).toEqual([]);
    });
  });

  it("rejects ragged data and wrong sizes with messages that name the shapes", () => {
    expect(() => tensor([[1, 2], [3]])).toThrow(/ragged/);
    expect(() => tensor(new Float32Array(5), { shape: [2, 3] })).toThrow(/5 values do not fill shape \[2, 3\]/);
    expect(() => zeros([2, -1])).toThrow(/invalid shape/);
    expect(() => tensor([1], { dtype: "float16" as never })).toThrow(/unknown dtype "float16"/);
    expect(() => zeros([2], { device: "tpu" })).toThrow(/unknown device "tpu"/);
  });

  it("fills constants and ranges", () => {
    tidy(() => {
      expect(Array.from(zeros([3]).dataSync())).toEqual([0, 0, 0]);
      expect(Array.from(ones([2]).dataSync())).toEqual([1, 1]);
      expect(Array.from(full([2], -2.5).dataSync())).toEqual([-2.5, -2.5]);
      expect(Array.from(full([3], -100, { dtype: "int32" }).dataSync())).toEqual([-100, -100, -100]);
      expect(Array.from(full([2], 1.5, { dtype: "bfloat16" }).dataSync())).toEqual([1.5, 1.5]);
      // Large enough to be split across threads: every element written.
      expect(full([100_003], 0.25).dataSync().every((v) => v === 0.25)).toBe(true);
      expect(Array.from(arange(5).dataSync())).toEqual([0, 1, 2, 3, 4]);
      expect(Array.from(arange(1, 2, 0.25, { dtype: "float32" }).dataSync())).toEqual([1, 1.25, 1.5, 1.75]);
      expect(arange(3, 1).size).toBe(0);
      expect(empty([0, 4]).size).toBe(0);
    });
  });

  it("item() refuses tensors with more than one element", () => {
    tidy(() => expect(() => zeros([2]).item()).toThrow(/item: tensor has 2 elements/));
  });
});

describe("views", () => {
  it("reshape, transpose, permute and slice share storage and read back correctly", () => {
    tidy(() => {
      const t = tensor(Array.from({ length: 24 }, (_, i) => i), { shape: [2, 3, 4] });
      const r = t.reshape(6, -1);
      expect(r.shape).toEqual([6, 4]);
      expect(r.storage).toBe(t.storage);
      const tr = r.transpose(0, 1);
      expect(tr.shape).toEqual([4, 6]);
      expect(tr.isContiguous()).toBe(false);
      expect((tr.toArray() as number[][])[1]).toEqual([1, 5, 9, 13, 17, 21]);
      const p = t.permute(2, 0, 1);
      expect(p.shape).toEqual([4, 2, 3]);
      expect((p.toArray() as number[][][])[3]).toEqual([[3, 7, 11], [15, 19, 23]]);
      const s = t.slice(1, 1, 3).slice(2, -2);
      expect(s.shape).toEqual([2, 2, 2]);
      expect(s.toArray()).toEqual([[[6, 7], [10, 11]], [[18, 19], [22, 23]]]);
      // reshape of a non-contiguous view copies
      expect(Array.from(tr.reshape(-1).dataSync()).slice(0, 4)).toEqual([0, 4, 8, 12]);
      expect(t.unsqueeze(0).shape).toEqual([1, 2, 3, 4]);
      expect(t.unsqueeze(-1).squeeze().shape).toEqual([2, 3, 4]);
      expect(t.flatten(1).shape).toEqual([2, 12]);
      expect(p.contiguous().isContiguous()).toBe(true);
    });
  });

  it("explains bad reshapes and dimensions", () => {
    tidy(() => {
      const t = zeros([2, 3]);
      expect(() => t.reshape(4, -1)).toThrow(/cannot reshape \[2, 3\] \(6 elements\) into \[4, -1\]/);
      expect(() => t.transpose(0, 2)).toThrow(/dimension 2 is out of range/);
      expect(() => t.permute(0, 0)).toThrow(/not a permutation/);
    });
  });
});

describe("bfloat16", () => {
  it("rounds float32 to nearest even, keeps NaN and infinities", () => {
    // 1 + 2^-8 is halfway between bf16 neighbours 1 and 1 + 2^-7: ties go to the even one (1).
    const halfway = 1 + 2 ** -8;
    const aboveHalf = 1 + 2 ** -8 + 2 ** -20;
    const oddTie = 1 + 3 * 2 ** -8; // between 1+2^-7 (odd) and 1+2^-6 (even)
    const values = [0, -0, 1, -1.5, halfway, aboveHalf, oddTie, 3.14159, 1e-40, 65504, 3.4e38, Infinity, -Infinity, NaN];
    tidy(() => {
      const t = tensor(values).to("cpu", "bfloat16");
      expect(t.dtype).toBe("bfloat16");
      const back = Array.from(t.to("cpu", "float32").dataSync());
      const expected = values.map((v) => bf16BitsToF32(f32ToBf16Bits(v)));
      expect(back.slice(0, -1)).toEqual(expected.slice(0, -1));
      expect(Number.isNaN(back.at(-1))).toBe(true);
      expect(back[4]).toBe(1);
      expect(back[5]).toBe(1 + 2 ** -7);
      expect(back[6]).toBe(1 + 2 ** -6);
      expect(back[11]).toBe(Infinity);
      // relative error of bf16 rounding is at most 2^-9
      expect(Math.abs(back[7]! - 3.14159) / 3.14159).toBeLessThanOrEqual(2 ** -9);
    });
  });

  it("rounds long arrays exactly like f32ToBf16Bits (the vectorized cast and its tail)", () => {
    // 16-float vectors plus a masked tail; ties, denormals, huge values and NaN spread across lanes.
    const values = Array.from({ length: 1003 }, (_, i) => {
      const special = [1 + 2 ** -8, 1 + 3 * 2 ** -8, 1e-40, -3e-39, 3.4e38, -Infinity, NaN, 0];
      return i % 13 === 0 ? special[(i / 13) % special.length]! : Math.sin(i * 0.37) * 10 ** ((i % 9) - 4);
    });
    tidy(() => {
      const back = Array.from(tensor(values).to("cpu", "bfloat16").to("cpu", "float32").dataSync());
      values.forEach((v, i) => {
        if (Number.isNaN(v)) expect(Number.isNaN(back[i])).toBe(true);
        else expect(back[i]).toBe(bf16BitsToF32(f32ToBf16Bits(v)));
      });
    });
  });

  it("stores raw bits from a Uint16Array and converts int32", () => {
    tidy(() => {
      const t = tensor(new Uint16Array([0x3f80, 0xc000]));
      expect(t.dtype).toBe("bfloat16");
      expect(Array.from(t.dataSync())).toEqual([1, -2]);
      expect(Array.from(tensor([1.9, -2.7]).to("cpu", "int32").dataSync())).toEqual([1, -2]);
      expect(Array.from(arange(3).to("cpu", "float32").dataSync())).toEqual([0, 1, 2]);
    });
  });
});

describe("random streams", () => {
  it("are reproducible from a seed and advance the offset", () => {
    tidy(() => {
      const g1 = new Generator(42), g2 = new Generator(42);
      const a = rand([1000], { generator: g1 }).dataSync();
      const b = rand([1000], { generator: g2 }).dataSync();
      expect(a).toEqual(b);
      expect(g1.offset).toBe(1000n);
      const c = rand([1000], { generator: g1 }).dataSync();
      expect(c).not.toEqual(a);
      // Restoring the state replays the stream exactly.
      const g3 = new Generator(0).setState({ seed: "42", offset: "1000" });
      expect(rand([1000], { generator: g3 }).dataSync()).toEqual(c);
      // Drawing [0,1000) then [1000,2000) equals drawing 2000 at once.
      const all = rand([2000], { generator: new Generator(42) }).dataSync();
      expect(all.slice(1000)).toEqual(c);
    });
  });

  it("uniform and normal have the right moments", () => {
    tidy(() => {
      const n = 200_000;
      const u = rand([n], { generator: new Generator(7), low: -2, high: 4 }).dataSync();
      let mean = 0, min = Infinity, max = -Infinity;
      for (const v of u) { mean += v / n; min = Math.min(min, v); max = Math.max(max, v); }
      expect(Math.abs(mean - 1)).toBeLessThan(0.02);
      expect(min).toBeGreaterThanOrEqual(-2);
      expect(max).toBeLessThan(4);
      const z = randn([n], { generator: new Generator(7), mean: 3, std: 2 }).dataSync();
      let m = 0, v2 = 0;
      for (const v of z) m += v / n;
      for (const v of z) v2 += (v - m) ** 2 / n;
      expect(Math.abs(m - 3)).toBeLessThan(0.02);
      expect(Math.abs(Math.sqrt(v2) - 2)).toBeLessThan(0.02);
    });
  });

  it("kaimingUniform matches PyTorch's bound 1/sqrt(fan_in) for a = sqrt(5)", () => {
    tidy(() => {
      const w = kaimingUniform([64, 100], { generator: new Generator(1) }).dataSync();
      const bound = 1 / Math.sqrt(100);
      expect(Math.max(...w)).toBeLessThanOrEqual(bound);
      expect(Math.min(...w)).toBeGreaterThanOrEqual(-bound);
      expect(Math.max(...w)).toBeGreaterThan(bound * 0.95);
    });
  });
});

describe("memory", () => {
  it("tidy frees every tensor it does not return, and memory() returns to zero", () => {
    const before = memory().cpu!;
    const kept = tidy(() => {
      for (let i = 0; i < 200; i++) {
        const t = rand([17, 31]);
        t.transpose(0, 1).contiguous().reshape(-1).slice(0, 5);
        tensor([1, 2, 3]).to("cpu", "bfloat16");
      }
      return ones([10]);
    });
    expect(memory().cpu!.bytes).toBe(before.bytes + 40);
    expect(memory().cpu!.tensors).toBe(before.tensors + 1);
    expect(memory().cpu!.reservedBytes).toBe(memory().cpu!.bytes); // the CPU keeps no pool
    kept.dispose();
    kept.dispose(); // idempotent
    expect(memory().cpu).toMatchObject({ bytes: before.bytes, buffers: before.buffers, tensors: before.tensors });
  });

  it("views keep storage alive until the last view is disposed", () => {
    const before = cpuBytes();
    const t = zeros([4, 4]);
    const v = t.transpose(0, 1);
    t.dispose();
    expect(cpuBytes()).toBe(before + 64);
    expect(v.toArray()).toHaveLength(4);
    v.dispose();
    expect(cpuBytes()).toBe(before);
    expect(() => v.toArray()).toThrow(/used after dispose/);
  });

  it("nested scopes hand returned tensors to the parent; keep() escapes every scope", () => {
    const before = cpuBytes();
    let escaped: ReturnType<typeof zeros> | undefined;
    tidy(() => {
      const inner = tidy(() => ({ a: zeros([2]), b: [ones([3])] }));
      expect(inner.a.isDisposed).toBe(false);
      escaped = keep(zeros([5]));
    });
    expect(escaped!.isDisposed).toBe(false);
    expect(cpuBytes()).toBe(before + 20);
    escaped!.dispose();
    expect(cpuBytes()).toBe(before);
  });

  it("`using` disposes at the end of a block", () => {
    const before = cpuBytes();
    {
      using t = zeros([100]);
      expect(cpuBytes()).toBe(before + 400);
      expect(t.size).toBe(100);
    }
    expect(cpuBytes()).toBe(before);
  });

  it("tidy refuses async functions", () => {
    expect(() => tidy((async () => zeros([1])) as never)).toThrow(/synchronous/);
  });
});

describe("build info", () => {
  it("names the SIMD level and threads", () => {
    const i = info();
    expect(["avx512bf16", "avx512", "avx2", "scalar"]).toContain(i.simd);
    expect(i.threads).toBeGreaterThanOrEqual(1);
    expect(i.version).toMatch(/^\d+\.\d+\.\d+/);
  });

});

// Random numbers come from Philox; the dropout kernel draws 16 counters (64 elements) at once with AVX-512 (and
// AVX2 / scalar code otherwise), picked once per process from LOWRANK_SIMD. This process's draws
// are compared bit for bit with child processes capped at each lower level.
const DRAWS_TEST = "random draws at this SIMD level";
function draws(): number[][] {
  return tidy(() => {
    const g = new Generator(3);
    // dropout masks: lengths around 16 lanes and 64-element groups and their tails, runs that start
    // inside a group, and a counter whose low word carries (at element 2^34 for dropout)
    const masks = [1, 15, 16, 17, 53, 63, 64, 65, 1000].map((n) => Array.from(dropout(ones([n]), 0.3, { generator: g }).dataSync()));
    g.setState({ seed: "77", offset: String(2n ** 34n - 45n) });
    masks.push(Array.from(dropout(ones([100]), 0.5, { generator: g }).dataSync()));
    g.setState({ seed: "77", offset: String(2n ** 32n - 5n) }); // uniform and normal draws' carry
    return [Array.from(randn([1000], { generator: g }).dataSync()), Array.from(rand([1000], { generator: g }).dataSync()), ...masks];
  });
}

it(DRAWS_TEST, () => {
  const d = draws();
  if (process.env.LOWRANK_TEST_DRAWS_OUT) writeFileSync(process.env.LOWRANK_TEST_DRAWS_OUT, JSON.stringify(d));
  expect(d.flat().every(Number.isFinite)).toBe(true);
});

const lowerLevels = ["avx512bf16", "avx512", "avx2", "scalar"].filter((l, i, all) => i > all.indexOf(info().simd));
it.skipIf(process.env.LOWRANK_SIMD !== undefined || lowerLevels.length === 0)(
  `gives bit-identical random numbers at SIMD levels ${[info().simd, ...lowerLevels].join(", ")} (child processes)`,
  () => {
    const vitest = join(dirname(createRequire(import.meta.url).resolve("vitest/package.json")), "vitest.mjs");
    const here = draws();
    const dir = mkdtempSync(join(tmpdir(), "lowrank-draws-"));
    try {
      for (const level of lowerLevels) {
        const out = join(dir, `${level}.json`);
        const r = spawnSync(process.execPath, [vitest, "run", "test/tensor/tensor.test.ts", "-t", DRAWS_TEST], {
          env: { ...process.env, LOWRANK_SIMD: level, LOWRANK_TEST_DRAWS_OUT: out, NO_COLOR: "1" },
          encoding: "utf8",
        });
        expect(r.status, `LOWRANK_SIMD=${level}:\n${r.stdout}\n${r.stderr}`).toBe(0);
        const there = JSON.parse(readFileSync(out, "utf8")) as number[][];
        there.forEach((row, i) => expect(row, `LOWRANK_SIMD=${level}, draw ${i}`).toEqual(here[i]));
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
  60_000,
);

describe("reshape as a view", () => {
  it("views strided tensors when the layout allows (no copy) and copies otherwise", () => {
    tidy(() => {
      const base = tensor(Array.from({ length: 2 * 3 * 12 }, (_, i) => i), { shape: [2, 3, 12] });
      // a slice of the last dim, split into heads: [2, 3, 4] -> [2, 3, 2, 2] is a view
      const s = base.slice(2, 4, 8);
      const v = s.reshape(2, 3, 2, 2);
      expect(v.storage).toBe(base.storage);
      expect(v.strides).toEqual([36, 12, 2, 1]);
      expect(Array.from(v.dataSync())).toEqual(Array.from(s.contiguous().dataSync()));
      // merging a transposed pair cannot be a view
      const tr = base.transpose(1, 2);
      const m = tr.reshape(2, 36);
      expect(m.storage).not.toBe(base.storage);
      expect(Array.from(m.dataSync())).toEqual(Array.from(tr.contiguous().dataSync()));
      // merging dims that are contiguous inside a strided tensor is a view
      const sliced = base.slice(0, 1, 2); // [1, 3, 12]
      expect(sliced.reshape(36).storage).toBe(base.storage);
      const p = base.permute(1, 0, 2); // [3, 2, 12]
      const q = p.reshape(3, 2, 3, 4);
      expect(q.storage).toBe(base.storage);
      expect(Array.from(q.dataSync())).toEqual(Array.from(p.contiguous().reshape(3, 2, 3, 4).dataSync()));
    });
  });
});

describe("threads", () => {
  it("setNumThreads between parallel jobs keeps results and does not crash", async () => {
    const { setNumThreads } = await import("../../lib/index.js");
    const { mul, sum } = await import("../../lib/ops/index.js");
    const run = () => tidy(() => sum(mul(rand([300_000], { generator: new Generator(1) }), 2)).item());
    const a = run();
    setNumThreads(1);
    const b = run();
    setNumThreads(2);
    const c = run();
    expect(b).toBeCloseTo(a, 3);
    expect(c).toBeCloseTo(a, 3);
  });
});

describe("async read-back", () => {
  it("data() resolves to the same values as dataSync(), also for views, and keeps the storage alive meanwhile", async () => {
    const t = rand([1000], { generator: new Generator(4) });
    const v = t.reshape(10, 100).transpose(0, 1);
    const pending = v.data();
    const [a, b] = [await pending, await t.data()];
    expect(a).toEqual(v.dataSync());
    expect(b).toEqual(t.dataSync());
    const p = t.data();
    t.dispose(); // the read holds its own reference
    expect((await p).length).toBe(1000);
    v.dispose();
  });
});
