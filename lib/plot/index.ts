// Charts as files a person can open: SVG and PNG from one layout, no native code, no downloads.
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { writeFileAtomic } from "../io/atomic.js";
import type { Chart } from "./chart.js";
import { renderPng } from "./png.js";
import { renderSvg } from "./svg.js";

export {
  lineChart, linearAxis, logAxis, niceStep, formatTicks, PALETTE,
  type Chart, type ChartItem, type LineChartOptions, type Series, type Point, type Rgb, type Axis, type Tick,
} from "./chart.js";
export { renderSvg } from "./svg.js";
export { renderPng, encodePng } from "./png.js";

/** Where writeChart puts its files: a path without extension (".svg" and ".png" are added), or explicit paths. */
export type ChartTarget = string | { svgPath?: string; pngPath?: string };

/**
 * Writes the chart as SVG and/or PNG, each file atomically (a reader never sees half a file),
 * creating missing parent folders. Returns the paths written.
 */
export function writeChart(target: ChartTarget, chart: Chart): string[] {
  const { svgPath, pngPath } = typeof target === "string" ? { svgPath: `${target}.svg`, pngPath: `${target}.png` } : target;
  if (svgPath === undefined && pngPath === undefined) throw new Error("writeChart: give a path, or at least one of svgPath and pngPath");
  const outputs: [string | undefined, () => string | Uint8Array][] = [[svgPath, () => renderSvg(chart)], [pngPath, () => renderPng(chart)]];
  const written: string[] = [];
  for (const [path, render] of outputs) {
    if (path === undefined) continue;
    mkdirSync(dirname(path), { recursive: true });
    writeFileAtomic(path, render());
    written.push(path);
  }
  return written;
}
