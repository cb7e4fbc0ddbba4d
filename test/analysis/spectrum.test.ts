// ΔW spectra: exact adapter spectra against the dense product, a known rank-2 full update found
// in a checkpoint pair, the rank and energy summaries, and the charts.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { chartGroups, moduleType, writeSpectrumCharts } from "../../lib/analysis/charts.js";
import { adapterSpectra, checkpointDeltaSpectra, spectrumStats, type LayerSpectrum } from "../../lib/analysis/spectrum.js";
import { readAdapterFactors, readCheckpointWeights } from "../../lib/analysis/weights.js";
import { readSafetensors } from "../../lib/io/safetensors.js";
import { matrix, singularValues } from "../../lib/linalg/index.js";
import { decodePng } from "../plot/decode-png.js";
import { relError } from "../helpers.js";
import { f32, makeRankTwoPair, readJson, TINY } from "./pair.js";

const ADAPTER = new URL("../fixtures/peft-tiny/adapter-c_attn", import.meta.url).pathname;
const tmp = mkdtempSync(join(tmpdir(), "lowrank-spectrum-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe("adapter spectra", () => {
  it("equal the SVD of the dense s·B·A (PEFT's adapter fixture)", () => {
    const config = readJson<{ r: number; lora_alpha: number }>(join(ADAPTER, "adapter_config.json"));
    const s = config.lora_alpha / config.r;
    const file = readSafetensors(join(ADAPTER, "adapter_model.safetensors"));
    const { factors } = readAdapterFactors(ADAPTER);
    const layers = adapterSpectra(factors);
    expect(layers.map((l) => l.name)).toEqual(["transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"]);
    for (const layer of layers) {
      const a = file.get(`base_model.model.${layer.name}.lora_A.weight`), b = file.get(`base_model.model.${layer.name}.lora_B.weight`);
      const [d, r] = b.shape as [number, number], k = a.shape[1]!;
      const av = f32(a.bytes), bv = f32(b.bytes);
      const dense = matrix(d, k);
      for (let i = 0; i < d; i++) for (let j = 0; j < k; j++) {
        let sum = 0;
        for (let q = 0; q < r; q++) sum += bv[i * r + q]! * av[q * k + j]!;
        dense.data[i * k + j] = s * sum;
      }
      const expected = singularValues(dense);
      expect([layer.rows, layer.cols, layer.r]).toEqual([d, k, r]);
      expect(layer.singularValues.length).toBe(r);
      expect(relError(layer.singularValues, expected.subarray(0, r))).toBeLessThan(1e-12);
      // the dense product has rank r: its other singular values are rounding
      expect(expected[r]!).toBeLessThan(1e-12 * expected[0]!);
      const stats = spectrumStats(layer, [1, 2, 4]);
      expect(stats.numericalRank).toBe(r);
      expect(stats.rankFor99).toBeLessThanOrEqual(r);
      expect(stats.energy[2]).toBeCloseTo(1, 12);
    }
  });

  it("with the base model, give ‖ΔW‖/‖W‖, and refuse a base model of another shape", () => {
    const { factors } = readAdapterFactors(ADAPTER);
    const base = readCheckpointWeights(TINY);
    const [l0] = adapterSpectra(factors, base);
    const w = f32(readSafetensors(join(TINY, "model.safetensors")).get("transformer.h.0.attn.c_attn.weight").bytes);
    const wNorm = Math.sqrt(w.reduce((s, x) => s + x * x, 0));
    const dNorm = Math.sqrt(l0!.singularValues.reduce((s, x) => s + x * x, 0));
    expect(l0!.relativeNorm).toBeCloseTo(dNorm / wNorm, 10);
    const shrunk = new Map(base);
    shrunk.set("transformer.h.1.attn.c_attn.weight", base.get("transformer.h.1.attn.c_proj.weight")!);
    expect(() => adapterSpectra(factors, shrunk)).toThrow(/is \[64, 64\] but the adapter's update of transformer\.h\.1\.attn\.c_attn is 192×64/);
  });
});

describe("checkpoint deltas", () => {
  const tuned = join(tmp, "tuned");
  const updates = makeRankTwoPair(tuned);

  it("find the rank-2 update of each c_attn and nothing else", async () => {
    const progress: string[] = [];
    const r = await checkpointDeltaSpectra(readCheckpointWeights(TINY), readCheckpointWeights(tuned), { onProgress: (p) => progress.push(`${p.index}/${p.count} ${p.name ?? "done"} ${p.done}/${p.total}`) });
    expect(r.layers.map((l) => [l.name, l.rows, l.cols])).toEqual([["transformer.h.0.attn.c_attn", 192, 64], ["transformer.h.1.attn.c_attn", 192, 64]]);
    expect(r.unchanged).toHaveLength(8); // wte, wpe and 3 more matrices per layer
    expect(r.changedVectors).toEqual([]);
    const cost = 64 * 192 * 64;
    expect(progress).toEqual([`0/2 transformer.h.0.attn.c_attn.weight 0/${2 * cost}`, `1/2 transformer.h.1.attn.c_attn.weight ${cost}/${2 * cost}`, `2/2 done ${2 * cost}/${2 * cost}`]);
    for (const layer of r.layers) {
      const exact = singularValues(updates.get(`${layer.name}.weight`)!);
      const stats = spectrumStats(layer, [1, 2]);
      expect(stats.numericalRank).toBe(2);
      expect(stats.rankFor99).toBe(2);
      expect(stats.energy[1]).toBeGreaterThan(1 - 1e-12);
      // the two real directions, up to the float32 rounding of the tuned weights
      expect(relError(layer.singularValues.subarray(0, 2), exact.subarray(0, 2))).toBeLessThan(1e-6);
      expect(layer.singularValues[2]!).toBeLessThan(1e-6 * layer.singularValues[0]!);
    }
  });

  it("analyse only the included modules, and refuse checkpoints of different models", async () => {
    const r = await checkpointDeltaSpectra(readCheckpointWeights(TINY), readCheckpointWeights(tuned), { include: (p) => p.includes(".h.1.") });
    expect(r.layers.map((l) => l.name)).toEqual(["transformer.h.1.attn.c_attn"]);
    const base = readCheckpointWeights(TINY);
    const fewer = new Map(base);
    fewer.delete("transformer.wpe.weight");
    await expect(checkpointDeltaSpectra(fewer, base)).rejects.toThrow(/hold different tensors: transformer\.wpe\.weight \(tuned only\)/);
    const other = new Map(base);
    other.set("transformer.wpe.weight", base.get("transformer.wte.weight")!);
    await expect(checkpointDeltaSpectra(other, base)).rejects.toThrow(/transformer\.wpe\.weight is \[101, 64\] in the base and \[64, 64\]/);
  });
});

describe("spectrum statistics", () => {
  it("follow their definitions on a spectrum with known answers", () => {
    const layer: LayerSpectrum = { name: "x", rows: 3, cols: 3, singularValues: Float64Array.of(4, 3, 0) };
    const st = spectrumStats(layer, [1, 2, 3]);
    const p = [4 / 7, 3 / 7];
    expect(st.frobenius).toBe(5);
    expect(st.energy).toEqual([16 / 25, 1, 1]);
    expect([st.numericalRank, st.rankFor90, st.rankFor99]).toEqual([2, 2, 2]);
    expect(st.effectiveRank).toBeCloseTo(Math.exp(-p.reduce((h, x) => h + x * Math.log(x), 0)), 14);
    // below σ₁·max(d,k)·2^-23 a value is float32 rounding, not a direction
    const noisy = spectrumStats({ ...layer, singularValues: Float64Array.of(1, 1e-3, 1e-7) }, []);
    expect(noisy.numericalRank).toBe(2);
  });
});

describe("charts", () => {
  const fake = (name: string, n: number): LayerSpectrum => ({ name, rows: n, cols: n, singularValues: Float64Array.from({ length: n }, (_, i) => 2 ** -i) });

  it("group layers by module type, at most ten per chart, split evenly", () => {
    expect(moduleType("transformer.h.11.mlp.c_fc")).toEqual({ type: "mlp.c_fc", label: "layer 11", layer: 11 });
    expect(moduleType("transformer.wte")).toEqual({ type: "wte", label: "wte" });
    const layers = [...Array.from({ length: 12 }, (_, i) => fake(`transformer.h.${i}.attn.c_attn`, 4)), fake("transformer.h.0.mlp.c_fc", 4)];
    const groups = chartGroups(layers);
    expect(groups.map((g) => [g.key, g.title, g.layers.length])).toEqual([
      ["attn.c_attn-layers0-5", "attn.c_attn, layers 0-5", 6], ["attn.c_attn-layers6-11", "attn.c_attn, layers 6-11", 6], ["mlp.c_fc", "mlp.c_fc", 1],
    ]);
  });

  it("write a spectrum and an energy chart per group as SVG and a PNG that decodes", () => {
    const prefix = join(tmp, "charts", "run");
    const one = writeSpectrumCharts([fake("transformer.h.0.attn.c_attn", 8), fake("transformer.h.1.attn.c_attn", 8)], { prefix, what: "s*B*A", topK: [1, 2], rankFor99: new Map() });
    expect(one).toEqual([`${prefix}-spectrum.svg`, `${prefix}-spectrum.png`, `${prefix}-energy.svg`, `${prefix}-energy.png`]);
    const png = decodePng(readFileSync(`${prefix}-spectrum.png`));
    expect(png.width).toBe(1000);
    expect(readFileSync(`${prefix}-energy.svg`, "utf8")).toContain("attn.c_attn: energy in the top k");
    const two = writeSpectrumCharts([fake("transformer.h.0.attn.c_attn", 8), fake("transformer.h.0.mlp.c_fc", 8)], { prefix, what: "s*B*A", topK: [1], rankFor99: new Map() });
    expect(two.filter((p) => p.endsWith(".png"))).toEqual([`${prefix}-spectrum-attn.c_attn.png`, `${prefix}-energy-attn.c_attn.png`, `${prefix}-spectrum-mlp.c_fc.png`, `${prefix}-energy-mlp.c_fc.png`]);
  });
});
