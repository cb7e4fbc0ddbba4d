import { describe, expect, it } from "vitest";
import { encodePng, lineChart, PALETTE, renderPng, type Chart, type ChartItem, type Rgb } from "../../lib/plot/index.js";
import { crc32 } from "../../lib/plot/png.js";
import { bitwiseCrc32, decodePng, pixelAt, type DecodedPng } from "./decode-png.js";

const WHITE = [255, 255, 255, 255];
const base = { title: "Loss", xLabel: "step", yLabel: "loss" };

function dataPaths(chart: Chart): Extract<ChartItem, { kind: "path" }>[] {
  // Legend swatches are two-point horizontal runs to the right of the plot; data paths come first.
  const paths = chart.items.filter((it): it is Extract<ChartItem, { kind: "path" }> => it.kind === "path");
  return paths.slice(0, paths.length / 2);
}

/** Distance in RGB between a pixel and a color. */
function colorDistance(px: readonly number[], c: Rgb): number {
  return Math.hypot(px[0]! - c[0], px[1]! - c[1], px[2]! - c[2]);
}

function nonBackgroundIn(png: DecodedPng, x0: number, y0: number, x1: number, y1: number): number {
  let n = 0;
  for (let y = y0; y < y1; y++) for (let x = x0; x < x1; x++) if (pixelAt(png, x, y).join() !== WHITE.join()) n++;
  return n;
}

describe("PNG encoding", () => {
  it("computes the standard CRC-32", () => {
    // The CRC every PNG's IEND chunk carries, and the check value of "123456789".
    expect(crc32(Buffer.from("IEND", "latin1"))).toBe(0xae426082);
    expect(crc32(Buffer.from("123456789", "latin1"))).toBe(0xcbf43926);
    const bytes = Uint8Array.from({ length: 1000 }, (_, i) => (i * 37 + 11) & 0xff);
    expect(crc32(bytes)).toBe(bitwiseCrc32(bytes));
  });

  it("round-trips a framebuffer through signature, IHDR, IDAT and IEND", () => {
    const width = 3, height = 2;
    const rgba = Uint8Array.from({ length: width * height * 4 }, (_, i) => (i * 29) & 0xff);
    const png = decodePng(encodePng(width, height, rgba));
    expect(png.chunkTypes).toEqual(["IHDR", "IDAT", "IEND"]);
    expect([png.width, png.height]).toEqual([3, 2]);
    expect([...png.pixels]).toEqual([...rgba]);
  });

  it("refuses a framebuffer of the wrong size", () => {
    expect(() => encodePng(2, 2, new Uint8Array(15))).toThrow(/expected 2×2×4 = 16 bytes/);
  });
});

describe("PNG chart", () => {
  it("has the chart's size, a white background and the title drawn in ink", () => {
    const series = [{ name: "r=8", points: [[0, 3], [100, 1]] as [number, number][] }];
    const chart = lineChart({ ...base, width: 640, height: 400, series });
    const png = decodePng(renderPng(chart));
    expect([png.width, png.height]).toEqual([640, 400]);
    expect(pixelAt(png, 0, 0)).toEqual(WHITE);
    expect(pixelAt(png, 639, 399)).toEqual(WHITE);
    // The title band (16 px margin, 3 × 9 font pixels tall) holds "Loss", centred: 4 characters
    // of 18 px, so x from 284 to 356, and nothing else.
    expect(nonBackgroundIn(png, 284, 16, 356, 43)).toBeGreaterThan(100);
    expect(nonBackgroundIn(png, 0, 0, 284, 43) + nonBackgroundIn(png, 356, 0, 640, 43)).toBe(0);
  });

  it("draws each series in its color along its line", () => {
    const series = [
      { name: "flat", points: [[0, 2], [10, 2]] as [number, number][] },
      { name: "rising", points: [[0, 1], [10, 3]] as [number, number][] },
    ];
    const chart = lineChart({ ...base, series });
    const png = decodePng(renderPng(chart));
    const [flat, rising] = dataPaths(chart);
    // A quarter of the way along the flat line (the lines cross midway): a 2 px stroke fully
    // covers the pixel there.
    const [a, b] = flat!.runs[0]!;
    expect(pixelAt(png, a![0] + (b![0] - a![0]) / 4, a![1]).slice(0, 3)).toEqual([...PALETTE[0]!]);
    // A quarter of the way along the diagonal: close to the second color (anti-aliased edge).
    const [c, d] = rising!.runs[0]!;
    const p = pixelAt(png, c![0] + (d![0] - c![0]) / 4, c![1] + (d![1] - c![1]) / 4);
    expect(colorDistance(p, PALETTE[1]!)).toBeLessThan(60);
  });

  it("leaves a gap where a series has NaN", () => {
    const chart = lineChart({ ...base, series: [{ name: "gappy", points: [[0, 0], [4, 4], [5, NaN], [6, 6], [10, 10]] }] });
    const png = decodePng(renderPng(chart));
    const runs = dataPaths(chart)[0]!.runs;
    expect(runs).toHaveLength(2);
    const end = runs[0]![1]!, start = runs[1]![0]!;
    const near = (x: number, y: number): boolean => colorDistance(pixelAt(png, x, y), PALETTE[0]!) < 100;
    // Both ends are drawn...
    expect(near(end[0] - 3, end[1] + 3)).toBe(true);
    expect(near(start[0] + 3, start[1] - 3)).toBe(true);
    // ...and no pixel of the series color lies in the middle of the gap.
    const mx = (end[0] + start[0]) / 2, my = (end[1] + start[1]) / 2;
    for (let dy = -4; dy <= 4; dy++) for (let dx = -4; dx <= 4; dx++) expect(near(mx + dx, my + dy)).toBe(false);
  });

  it("shows a single point as a dot", () => {
    const chart = lineChart({ ...base, series: [{ name: "one", points: [[3, 2]] }] });
    const png = decodePng(renderPng(chart));
    const dot = chart.items.find((it) => it.kind === "markers")!;
    const [x, y] = (dot as Extract<ChartItem, { kind: "markers" }>).points[0]!;
    expect(pixelAt(png, x, y).slice(0, 3)).toEqual([...PALETTE[0]!]);
  });

  it("renders a log-scale spectrum with rotated axis label", () => {
    const spectrum = Array.from({ length: 64 }, (_, i) => [i + 1, 10 * Math.exp(-i / 4)] as [number, number]);
    const chart = lineChart({ title: "ΔW", xLabel: "index", yLabel: "singular value", logY: true, markers: true, series: [{ name: "c_attn", points: spectrum }] });
    const png = decodePng(renderPng(chart));
    // The rotated y label sits in the left margin (16 px pad, 18 px wide), about mid-height.
    expect(nonBackgroundIn(png, 16, 200, 34, 360)).toBeGreaterThan(100);
    expect(nonBackgroundIn(png, 0, 0, 16, 560)).toBe(0);
  });
});
