// Charts of ΔW spectra that a person can read: one chart per module type (attn.c_attn,
// mlp.c_fc, ...) with one series per layer, and at most ten series per chart (the palette's
// colours; a type with more layers is split evenly over several charts).
import { lineChart, writeChart, type Point, type Series } from "../plot/index.js";
import type { LayerSpectrum } from "./spectrum.js";

/** Most series per chart: beyond the ten palette colours, lines cannot be told apart. */
const MAX_SERIES = 10;
/** Pixels: room for a title naming the module type and what ΔW is. */
const WIDTH = 1000;

/** "transformer.h.3.attn.c_attn" → type "attn.c_attn", layer 3; modules outside the layer stack are their own type. */
export function moduleType(name: string): { type: string; label: string; layer?: number } {
  const m = /^(?:.*\.)?(\d+)\.(.+)$/.exec(name);
  if (m) return { type: m[2]!, label: `layer ${m[1]}`, layer: Number(m[1]) };
  const short = name.replace(/^transformer\./, "");
  return { type: short, label: short };
}

export interface ChartGroup {
  /** For file names: the module type, plus the layer range for a type split over several charts ("attn.c_attn-layers0-5"). */
  key: string;
  /** For titles: "attn.c_attn" or "attn.c_attn, layers 0-5". */
  title: string;
  layers: LayerSpectrum[];
}

/** Layers grouped by module type (in order of first appearance), each group ≤ 10 layers. */
export function chartGroups(layers: readonly LayerSpectrum[]): ChartGroup[] {
  const byType = new Map<string, LayerSpectrum[]>();
  for (const l of layers) {
    const { type } = moduleType(l.name);
    byType.set(type, [...(byType.get(type) ?? []), l]);
  }
  const groups: ChartGroup[] = [];
  for (const [type, list] of byType) {
    const parts = Math.ceil(list.length / MAX_SERIES);
    const size = Math.ceil(list.length / parts); // 12 layers → 6 + 6 rather than 10 + 2
    for (let p = 0; p < parts; p++) {
      const part = list.slice(p * size, (p + 1) * size);
      const range = `${moduleType(part[0]!.name).layer}-${moduleType(part.at(-1)!.name).layer}`;
      groups.push(parts === 1 ? { key: type, title: type, layers: part } : { key: `${type}-layers${range}`, title: `${type}, layers ${range}`, layers: part });
    }
  }
  return groups;
}

function cumulativeEnergy(s: Float64Array, kMax: number): Point[] {
  const total = s.reduce((sum, x) => sum + x * x, 0);
  const points: Point[] = [];
  let kept = 0;
  for (let k = 1; k <= kMax; k++) {
    kept += k <= s.length ? s[k - 1]! ** 2 : 0;
    points.push([k, total === 0 ? NaN : kept / total]);
  }
  return points;
}

export interface SpectrumChartOptions {
  /** Files go to <prefix>-spectrum[-<type>].svg/.png and <prefix>-energy[-<type>].svg/.png. */
  prefix: string;
  /** What ΔW is, for the axis labels (the chart font is ASCII): "s*B*A" or "W_tuned-W_base". */
  what: string;
  /** The energy chart's x axis reaches at least the largest of these k. */
  topK: readonly number[];
  /** Per layer: the fewest directions holding 99% of the energy (sets how far the energy chart's x axis goes). */
  rankFor99: ReadonlyMap<string, number>;
}

/**
 * Writes the spectrum charts (σᵢ against i, log y: a low-rank update drops by orders of magnitude
 * after its rank) and the cumulative-energy charts (share of ‖ΔW‖²_F in the top k directions).
 * One file pair per group; the group key is left out of the names when there is one group.
 * Returns the paths written.
 */
export function writeSpectrumCharts(layers: readonly LayerSpectrum[], opts: SpectrumChartOptions): string[] {
  const groups = chartGroups(layers);
  const written: string[] = [];
  for (const g of groups) {
    const suffix = groups.length === 1 ? "" : `-${g.key.replace(/[^\w.-]+/g, "_")}`;
    const longest = Math.max(...g.layers.map((l) => l.singularValues.length));
    const spectrum: Series[] = g.layers.map((l) => ({
      name: moduleType(l.name).label,
      points: Array.from(l.singularValues, (s, i): Point => [i + 1, s]),
    }));
    written.push(...writeChart(`${opts.prefix}-spectrum${suffix}`, lineChart({
      title: `${g.title}: singular values`, xLabel: "index i", yLabel: `sigma_i of ${opts.what}`, series: spectrum, logY: true, markers: longest <= 64, width: WIDTH,
    })));
    // Past twice the largest 99% rank the curves are flat at 1: cut there, so the knee stays visible.
    const need = Math.max(...opts.topK, ...g.layers.map((l) => 2 * (opts.rankFor99.get(l.name) ?? longest)));
    const kMax = Math.min(longest, Math.max(need, 2));
    const energy: Series[] = g.layers.map((l) => ({ name: moduleType(l.name).label, points: cumulativeEnergy(l.singularValues, kMax) }));
    written.push(...writeChart(`${opts.prefix}-energy${suffix}`, lineChart({
      title: `${g.title}: energy in the top k`, xLabel: kMax < longest ? `k (the first ${kMax} of ${longest})` : "k",
      yLabel: `share of ||${opts.what}||^2`, series: energy, markers: kMax <= 64, width: WIDTH,
    })));
  }
  return written;
}
