// The chart model: lineChart() turns data into a finished layout, a list of drawing items in
// pixel coordinates (rectangles, polylines, markers, text). The SVG and PNG backends only draw
// these items, so the tick choice, margins, legend and text placement are computed once, here,
// and both files look the same.
import { GLYPH_ADVANCE, GLYPH_ASCENT, GLYPH_DESCENT } from "./font.js";

export type Rgb = readonly [number, number, number];
export type Point = readonly [number, number];

export interface Series {
  name: string;
  /** [x, y] pairs in drawing order. Non-finite values (and y ≤ 0 on a log axis) leave a gap. */
  points: readonly Point[];
}

export interface LineChartOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  series: readonly Series[];
  /** Logarithmic y axis with ticks at powers of 10 (for loss spans or singular value spectra). */
  logY?: boolean;
  /** A dot at every point (spectra, short runs); isolated points get one regardless. */
  markers?: boolean;
  /** Pixels; the SVG uses the same numbers as its viewBox. */
  width?: number;
  height?: number;
}

export type TextAnchor = "start" | "middle" | "end";

/** What the backends draw, in order, over the background. Coordinates are pixels, y down. */
export type ChartItem =
  /** Integer-aligned filled rectangle (gridlines, axes, tick marks). */
  | { kind: "rect"; x: number; y: number; width: number; height: number; color: Rgb }
  /** One series line: each run is a connected polyline; gaps lie between runs. */
  | { kind: "path"; runs: Point[][]; color: Rgb; lineWidth: number }
  | { kind: "markers"; points: Point[]; color: Rgb; radius: number }
  /**
   * Monospace text. (x, y) is the anchor on the baseline; `scale` is the size in font pixels
   * (glyphs are 5×7 font pixels with a 6-pixel advance, so the SVG font-size is 10 × scale).
   * rotate −90 turns the text to read bottom to top around the anchor.
   */
  | { kind: "text"; x: number; y: number; text: string; scale: number; color: Rgb; anchor: TextAnchor; rotate: 0 | -90 };

export interface Chart {
  width: number;
  height: number;
  title: string;
  background: Rgb;
  items: ChartItem[];
}

export interface Tick {
  value: number;
  label: string;
}

/** An axis domain [lo, hi] with its labelled ticks and (log axes only) unlabelled minor lines. */
export interface Axis {
  lo: number;
  hi: number;
  log: boolean;
  ticks: Tick[];
  minor: number[];
}

/** Ten distinct colors (the Tableau 10 palette); series beyond ten reuse them in order. */
export const PALETTE: readonly Rgb[] = [
  [31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
  [140, 86, 75], [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207],
];

const WHITE: Rgb = [255, 255, 255];
const INK: Rgb = [34, 34, 34];
const AXIS: Rgb = [68, 68, 68];
const GRID: Rgb = [221, 221, 221];
const MINOR_GRID: Rgb = [240, 240, 240];

const PAD = 16; // outer margin
const TITLE_SCALE = 3;
const LABEL_SCALE = 2; // axis labels, tick labels, legend
const TICK_LEN = 5;
const TICK_GAP = 4; // between a tick mark and its label
const LINE_WIDTH = 2;
const MARKER_RADIUS = 3;
const LEGEND_ROW = 22;
const LEGEND_SWATCH = 24;
const MIN_SIZE = 240;

/** Width in pixels of `text` at `scale` (monospace: every code point advances the same). */
export function textWidth(text: string, scale: number): number {
  return [...text].length * GLYPH_ADVANCE * scale;
}

/**
 * `text` cut to at most `maxWidth` pixels, with "..." where it was cut: at the end, or in the
 * middle for legend names, whose distinguishing part (a layer index, a rank, a suffix like
 * lora_B) is as often at the end as at the start.
 */
function fitText(text: string, maxWidth: number, scale: number, cut: "end" | "middle" = "end"): string {
  const chars = [...text];
  const fits = Math.floor(maxWidth / (GLYPH_ADVANCE * scale));
  if (chars.length <= fits) return text;
  if (fits <= 3) return chars.slice(0, Math.max(fits, 0)).join("");
  const keep = fits - 3;
  if (cut === "end") return chars.slice(0, keep).join("") + "...";
  const head = Math.ceil(keep / 2);
  return chars.slice(0, head).join("") + "..." + chars.slice(chars.length - (keep - head)).join("");
}

// Removes floating-point dust from i × step (0.30000000000000004 becomes 0.3).
function clean(v: number): number {
  return Number(v.toPrecision(12));
}

/** The smallest 1, 2 or 5 × 10^k that is ≥ rough (rough > 0). */
export function niceStep(rough: number): number {
  const power = 10 ** Math.floor(Math.log10(rough));
  const f = rough / power;
  // The tolerance keeps exact decades (0.1, 1000) from rounding up to the next step.
  const nice = f <= 1 + 1e-9 ? 1 : f <= 2 + 1e-9 ? 2 : f <= 5 + 1e-9 ? 5 : 10;
  return clean(nice * power);
}

/**
 * Labels for evenly spaced ticks: fixed-point with as many decimals as the step needs, or
 * exponent form (same mantissa digits on every label) when values are huge or the step is tiny.
 */
export function formatTicks(values: readonly number[], step: number): string[] {
  const k = Math.floor(Math.log10(step) + 1e-9);
  const maxAbs = Math.max(...values.map(Math.abs));
  if (maxAbs >= 1e6 || k < -4) {
    const digits = Math.min(Math.max(Math.floor(Math.log10(maxAbs) + 1e-9) - k, 0), 6);
    return values.map((v) => (v === 0 ? "0" : v.toExponential(digits).replace("e+", "e")));
  }
  // v === 0 ? 0 : v turns −0 into 0, so no label reads "-0".
  return values.map((v) => (v === 0 ? 0 : v).toFixed(Math.max(0, -k)));
}

/**
 * A linear axis over [min, max] with at most about `maxCount` intervals at a 1-2-5 step. By
 * default the domain is widened to whole steps so that both ends carry a tick (y axes); `tight`
 * keeps the data's own range and labels the steps inside it (x axes: a spectrum over indices
 * 1…16 should not get an axis to 20), unless fewer than two ticks would fall inside. A zero-width
 * range is widened around its value; no data at all (non-finite bounds) gives [0, 1].
 */
export function linearAxis(min: number, max: number, maxCount: number, tight = false): Axis {
  if (!Number.isFinite(min) || !Number.isFinite(max)) [min, max] = [0, 1];
  if (min === max) {
    const pad = min === 0 ? 1 : Math.abs(min) * 0.1;
    [min, max] = [min - pad, max + pad];
  }
  const step = niceStep((max - min) / Math.max(maxCount, 1));
  let first = Math.ceil(min / step - 1e-9);
  let last = Math.floor(max / step + 1e-9);
  const keepRange = tight && last > first;
  if (!keepRange) {
    first = Math.floor(min / step + 1e-9);
    last = Math.ceil(max / step - 1e-9);
  }
  const values: number[] = [];
  for (let i = first; i <= last; i++) values.push(clean(i * step));
  const labels = formatTicks(values, step);
  return {
    lo: keepRange ? min : values[0]!,
    hi: keepRange ? max : values[values.length - 1]!,
    log: false,
    ticks: values.map((value, i) => ({ value, label: labels[i]! })),
    minor: [],
  };
}

/**
 * A log axis over positive [min, max]. Over a few decades (a loss curve, a short spectrum) the
 * ticks are 1, 2 and 5 × 10^k and the domain runs from the last such value at or below the
 * data to the first at or above it; otherwise the domain is widened to whole decades and the
 * ticks sit at powers of 10 (every 2nd, 5th, ... decade when there are more than `maxCount`).
 * Minor lines mark the other multiples 2…9 × 10^k when there is room. Labels are plain numbers
 * when the domain lies within 0.001…10000, otherwise all are in exponent form (2e-5), so one
 * axis never mixes styles. A single value is widened to a factor of 3 either side; no data
 * at all gives [1, 10].
 */
export function logAxis(min: number, max: number, maxCount: number): Axis {
  if (!(min > 0) || !(max > 0) || !Number.isFinite(min) || !Number.isFinite(max)) [min, max] = [1, 10];
  if (min === max) [min, max] = [min / 3, max * 3];
  let e0 = Math.floor(Math.log10(min) + 1e-9);
  let e1 = Math.ceil(Math.log10(max) - 1e-9);
  const fine = 3 * (e1 - e0) + 1 <= maxCount && e1 - e0 <= 2;
  const stride = e1 - e0 <= maxCount ? 1 : Math.max(niceStep((e1 - e0) / Math.max(maxCount, 1)), 1);
  e0 = Math.floor(e0 / stride) * stride;
  e1 = Math.ceil(e1 / stride) * stride;

  // Candidate ticks as (mantissa, exponent), ascending.
  let marks: [number, number][] = [];
  for (let e = e0; e <= e1; e += stride) for (const m of fine && e < e1 ? [1, 2, 5] : [1]) marks.push([m, e]);
  const valueOf = ([m, e]: [number, number]): number => clean(m * 10 ** e);
  if (fine) {
    // 10^e0 ≤ min and 10^e1 ≥ max, so both exist.
    const first = marks.filter((mk) => valueOf(mk) <= min * (1 + 1e-9)).length - 1;
    const last = marks.findIndex((mk) => valueOf(mk) >= max * (1 - 1e-9));
    marks = marks.slice(first, last + 1);
  }
  const lo = valueOf(marks[0]!), hi = valueOf(marks[marks.length - 1]!);
  const plain = lo >= 1e-3 && hi <= 1e4;
  const minor: number[] = [];
  if (stride === 1 && 2 * (e1 - e0) <= maxCount) {
    for (let e = e0; e < e1; e++) {
      for (let m = 2; m <= 9; m++) {
        const v = clean(m * 10 ** e);
        if (v > lo && v < hi && !(fine && (m === 2 || m === 5))) minor.push(v);
      }
    }
  }
  return {
    lo,
    hi,
    log: true,
    ticks: marks.map((mk) => ({ value: valueOf(mk), label: plain ? String(valueOf(mk)) : `${mk[0]}e${mk[1]}` })),
    minor,
  };
}

/** Where `v` falls on the axis: 0 at lo, 1 at hi (log axes measure in decades). */
export function axisFraction(axis: Axis, v: number): number {
  if (axis.log) return (Math.log10(v) - Math.log10(axis.lo)) / (Math.log10(axis.hi) - Math.log10(axis.lo));
  return (v - axis.lo) / (axis.hi - axis.lo);
}

function usable(p: Point, logY: boolean): boolean {
  return Number.isFinite(p[0]) && Number.isFinite(p[1]) && (!logY || p[1] > 0);
}

/** Extent of the usable points' coordinate `i`, or [NaN, NaN] when there are none. */
function extent(series: readonly Series[], i: 0 | 1, logY: boolean): [number, number] {
  let min = Infinity, max = -Infinity;
  for (const s of series) {
    for (const p of s.points) {
      if (!usable(p, logY)) continue;
      min = Math.min(min, p[i]);
      max = Math.max(max, p[i]);
    }
  }
  return min <= max ? [min, max] : [NaN, NaN];
}

function maxLabelWidth(axis: Axis, scale: number): number {
  return Math.max(0, ...axis.ticks.map((t) => textWidth(t.label, scale)));
}

/** A tight linear x axis with as many ticks as keep neighbouring labels at least 16 px apart. */
function fittedXAxis(min: number, max: number, plotW: number): Axis {
  for (let count = Math.max(2, Math.floor(plotW / 80)); ; count--) {
    const axis = linearAxis(min, max, count, true);
    const [a, b] = axis.ticks;
    const spacing = b === undefined ? plotW : (axisFraction(axis, b.value) - axisFraction(axis, a!.value)) * plotW;
    if (count <= 1 || maxLabelWidth(axis, LABEL_SCALE) + 16 <= spacing) return axis;
  }
}

function checkSize(name: string, v: number): number {
  if (!Number.isInteger(v) || v < MIN_SIZE || v > 16384) {
    throw new Error(`lineChart: ${name} must be an integer from ${MIN_SIZE} to 16384 pixels (got ${v})`);
  }
  return v;
}

/**
 * Lays out a line chart: nice ticks on both axes, gridlines, a legend on the right with one
 * palette color per series, and the data as polylines (split at unusable points).
 */
export function lineChart(options: LineChartOptions): Chart {
  const width = checkSize("width", options.width ?? 900);
  const height = checkSize("height", options.height ?? 560);
  const logY = options.logY ?? false;
  const { series } = options;
  const items: ChartItem[] = [];
  const rect = (x: number, y: number, w: number, h: number, color: Rgb): void => {
    items.push({ kind: "rect", x, y, width: w, height: h, color });
  };
  const text = (x: number, y: number, s: string, scale: number, anchor: TextAnchor, rotate: 0 | -90 = 0): void => {
    if (s !== "") items.push({ kind: "text", x: Math.round(x), y: Math.round(y), text: s, scale, color: INK, anchor, rotate });
  };
  const labelHeight = (GLYPH_ASCENT + GLYPH_DESCENT) * LABEL_SCALE;

  // Vertical layout first: it fixes the plot height, which sets the y ticks, whose label width
  // then sets the left margin and so the plot width and the x ticks.
  const plotTop = PAD + (options.title !== "" ? (GLYPH_ASCENT + GLYPH_DESCENT) * TITLE_SCALE + 12 : 8);
  const plotBottom = height - PAD - (options.xLabel !== "" ? labelHeight + 8 : 0) - (TICK_LEN + TICK_GAP + labelHeight);
  const plotH = plotBottom - plotTop;
  const [yMin, yMax] = extent(series, 1, logY);
  const yCount = Math.max(2, Math.floor(plotH / 40));
  const yAxis = logY ? logAxis(yMin, yMax, yCount) : linearAxis(yMin, yMax, yCount);

  // Legend: one row per series beside the plot, names cut to about 30% of the width, and a
  // "+N more" row in place of the last when the series outnumber the rows that fit.
  const legendRows = Math.floor(plotH / LEGEND_ROW);
  const shown = series.length <= legendRows ? series.length : legendRows - 1;
  const nameWidth = Math.max(4, Math.min(24, Math.floor((width * 0.3 - LEGEND_SWATCH - 8) / (GLYPH_ADVANCE * LABEL_SCALE)))) * GLYPH_ADVANCE * LABEL_SCALE;
  const legendNames = series.slice(0, shown).map((s) => fitText(s.name, nameWidth, LABEL_SCALE, "middle"));
  const more = shown < series.length ? `+${series.length - shown} more` : "";
  const legendWidth = series.length === 0 ? 0 : 16 + Math.max(textWidth(more, LABEL_SCALE), ...legendNames.map((n) => LEGEND_SWATCH + 8 + textWidth(n, LABEL_SCALE)));
  const plotLeft = PAD + (options.yLabel !== "" ? labelHeight + 10 : 0) + maxLabelWidth(yAxis, LABEL_SCALE) + TICK_GAP + TICK_LEN;
  // The last x label is centred on its tick and may stick out past the plot by half its width:
  // without a legend to overlap, the right margin must hold it. Its width is known only once
  // the ticks are, so the axis is chosen again for the narrowed plot; a label that still sticks
  // out is pulled back inside (see the tick labels below).
  const [xMin, xMax] = extent(series, 0, logY);
  const overhang = maxLabelWidth(fittedXAxis(xMin, xMax, width - PAD - legendWidth - plotLeft), LABEL_SCALE) / 2;
  const plotRight = width - PAD - Math.max(legendWidth, overhang);
  const plotW = plotRight - plotLeft;
  const xAxis = fittedXAxis(xMin, xMax, plotW);
  const px = (x: number): number => plotLeft + axisFraction(xAxis, x) * plotW;
  const py = (y: number): number => plotBottom - axisFraction(yAxis, y) * plotH;

  // Gridlines: 1-pixel rectangles on the pixel that holds the tick position.
  for (const v of yAxis.minor) rect(plotLeft, Math.floor(py(v)), plotW, 1, MINOR_GRID);
  for (const t of yAxis.ticks) rect(plotLeft, Math.floor(py(t.value)), plotW, 1, GRID);
  for (const t of xAxis.ticks) rect(Math.floor(px(t.value)), plotTop, 1, plotH, GRID);

  // Data.
  let anyData = false;
  series.forEach((s, i) => {
    const color = PALETTE[i % PALETTE.length]!;
    const runs: Point[][] = [];
    let run: Point[] = [];
    for (const p of s.points) {
      if (usable(p, logY)) {
        run.push([px(p[0]), py(p[1])]);
      } else if (run.length > 0) {
        runs.push(run);
        run = [];
      }
    }
    if (run.length > 0) runs.push(run);
    if (runs.length === 0) return;
    anyData = true;
    items.push({ kind: "path", runs, color, lineWidth: LINE_WIDTH });
    // A lone point draws no line, so it always gets a marker.
    const dots = options.markers ? runs.flat() : runs.filter((r) => r.length === 1).flat();
    if (dots.length > 0) items.push({ kind: "markers", points: dots, color, radius: MARKER_RADIUS });
  });
  if (!anyData) text((plotLeft + plotRight) / 2, (plotTop + plotBottom) / 2, "no data", LABEL_SCALE, "middle");

  // Axes, tick marks and tick labels.
  rect(plotLeft - 1, plotTop, 1, plotH + 1, AXIS);
  rect(plotLeft - 1, plotBottom, plotW + 2, 1, AXIS);
  const capMiddle = Math.round((GLYPH_ASCENT * LABEL_SCALE) / 2); // baseline offset that centres capitals on a point
  for (const t of yAxis.ticks) {
    const y = Math.floor(py(t.value));
    rect(plotLeft - 1 - TICK_LEN, y, TICK_LEN, 1, AXIS);
    text(plotLeft - 1 - TICK_LEN - TICK_GAP, y + capMiddle, t.label, LABEL_SCALE, "end");
  }
  for (const t of xAxis.ticks) {
    const x = Math.floor(px(t.value));
    rect(x, plotBottom + 1, 1, TICK_LEN, AXIS);
    const half = textWidth(t.label, LABEL_SCALE) / 2;
    text(Math.min(x, width - PAD - half), plotBottom + 1 + TICK_LEN + TICK_GAP + GLYPH_ASCENT * LABEL_SCALE, t.label, LABEL_SCALE, "middle");
  }

  // Axis labels and title, shortened to the space they have.
  text((plotLeft + plotRight) / 2, height - PAD - GLYPH_DESCENT * LABEL_SCALE, fitText(options.xLabel, plotW, LABEL_SCALE), LABEL_SCALE, "middle");
  text(PAD + GLYPH_ASCENT * LABEL_SCALE, (plotTop + plotBottom) / 2, fitText(options.yLabel, plotH, LABEL_SCALE), LABEL_SCALE, "middle", -90);
  text(width / 2, PAD + GLYPH_ASCENT * TITLE_SCALE, fitText(options.title, width - 2 * PAD, TITLE_SCALE), TITLE_SCALE, "middle");

  // Legend entries: a line swatch (and a dot, when the series has markers), then the name.
  const legendX = plotRight + 16;
  const rowMiddle = (i: number): number => plotTop + Math.floor(LEGEND_ROW / 2) + i * LEGEND_ROW;
  legendNames.forEach((name, i) => {
    const color = PALETTE[i % PALETTE.length]!;
    const cy = rowMiddle(i);
    items.push({ kind: "path", runs: [[[legendX, cy], [legendX + LEGEND_SWATCH, cy]]], color, lineWidth: LINE_WIDTH });
    if (options.markers) items.push({ kind: "markers", points: [[legendX + LEGEND_SWATCH / 2, cy]], color, radius: MARKER_RADIUS });
    text(legendX + LEGEND_SWATCH + 8, cy + capMiddle, name, LABEL_SCALE, "start");
  });
  text(legendX, rowMiddle(shown) + capMiddle, more, LABEL_SCALE, "start");

  return { width, height, title: options.title, background: WHITE, items };
}
