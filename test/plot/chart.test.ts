import { describe, expect, it } from "vitest";
import { lineChart, linearAxis, logAxis, niceStep, PALETTE, type Chart, type ChartItem, type Series } from "../../lib/plot/index.js";

const labels = (axis: { ticks: { label: string }[] }): string[] => axis.ticks.map((t) => t.label);
const values = (axis: { ticks: { value: number }[] }): number[] => axis.ticks.map((t) => t.value);
const ofKind = <K extends ChartItem["kind"]>(chart: Chart, kind: K): Extract<ChartItem, { kind: K }>[] =>
  chart.items.filter((it): it is Extract<ChartItem, { kind: K }> => it.kind === kind);
const texts = (chart: Chart): string[] => ofKind(chart, "text").map((t) => t.text);

describe("nice ticks", () => {
  it("steps are 1, 2 or 5 times a power of ten, never below the rough step", () => {
    expect(niceStep(1)).toBe(1);
    expect(niceStep(0.1)).toBe(0.1);
    expect(niceStep(1000)).toBe(1000);
    expect(niceStep(0.3)).toBe(0.5);
    expect(niceStep(1.5)).toBe(2);
    expect(niceStep(7)).toBe(10);
    expect(niceStep(0.00023)).toBe(0.0005);
    expect(niceStep(2500)).toBe(5000);
  });

  it("widens a loss range to whole steps with labels at matching precision", () => {
    const axis = linearAxis(2.13, 3.87, 5);
    expect(values(axis)).toEqual([2, 2.5, 3, 3.5, 4]);
    expect(labels(axis)).toEqual(["2.0", "2.5", "3.0", "3.5", "4.0"]);
    expect([axis.lo, axis.hi]).toEqual([2, 4]);
  });

  it("keeps integer steps integer and removes floating-point dust", () => {
    expect(labels(linearAxis(0, 1000, 5))).toEqual(["0", "200", "400", "600", "800", "1000"]);
    expect(values(linearAxis(0.1, 0.3, 2))).toEqual([0.1, 0.2, 0.3]);
    expect(labels(linearAxis(0.1, 0.3, 2))).toEqual(["0.1", "0.2", "0.3"]);
  });

  it("never labels a tick -0", () => {
    expect(labels(linearAxis(-0.5, 0.5, 2))).toEqual(["-0.5", "0.0", "0.5"]);
  });

  it("uses exponent labels for huge values and tiny steps", () => {
    expect(labels(linearAxis(0, 3e6, 3))).toEqual(["0", "1e6", "2e6", "3e6"]);
    expect(labels(linearAxis(1e-5, 5e-5, 4))).toEqual(["1e-5", "2e-5", "3e-5", "4e-5", "5e-5"]);
    expect(labels(linearAxis(1.2e6, 1.5e6, 3))).toEqual(["1.2e6", "1.3e6", "1.4e6", "1.5e6"]);
  });

  it("a tight axis keeps the data range and labels the steps inside it", () => {
    const axis = linearAxis(1, 16, 4, true);
    expect([axis.lo, axis.hi]).toEqual([1, 16]);
    expect(values(axis)).toEqual([5, 10, 15]);
    // Fewer than two steps inside: widened after all, so the axis still has labels.
    const narrow = linearAxis(1.1, 1.4, 1, true);
    expect(values(narrow)).toEqual([1, 1.5]);
  });

  it("handles a zero-width range and no data", () => {
    const single = linearAxis(5, 5, 4);
    expect(single.lo).toBeLessThan(5);
    expect(single.hi).toBeGreaterThan(5);
    expect(values(linearAxis(0, 0, 2))).toEqual([-1, 0, 1]);
    const none = linearAxis(NaN, NaN, 5);
    expect([none.lo, none.hi]).toEqual([0, 1]);
  });
});

describe("log axis", () => {
  it("puts ticks at powers of 10 over whole decades, plain labels for moderate exponents", () => {
    const axis = logAxis(0.003, 42, 10);
    expect([axis.lo, axis.hi]).toEqual([0.001, 100]);
    expect(labels(axis)).toEqual(["0.001", "0.01", "0.1", "1", "10", "100"]);
    // Room for minor lines: 2…9 in each of the 5 decades.
    expect(axis.minor).toHaveLength(5 * 8);
    expect(axis.minor.slice(0, 3)).toEqual([0.002, 0.003, 0.004]);
  });

  it("switches every label to exponent form for wide spectra and drops minor lines when crowded", () => {
    const axis = logAxis(2e-9, 3, 10);
    expect(labels(axis)).toEqual(["1e-9", "1e-8", "1e-7", "1e-6", "1e-5", "1e-4", "1e-3", "1e-2", "1e-1", "1e0", "1e1"]);
    expect(axis.minor).toEqual([]);
  });

  it("labels every k-th decade when there are too many", () => {
    expect(labels(logAxis(1e-20, 1, 5))).toEqual(["1e-20", "1e-15", "1e-10", "1e-5", "1e0"]);
  });

  it("over a few decades, ticks at 1, 2, 5 × 10^k and a domain just around the data", () => {
    const loss = logAxis(1.6, 3.5, 10);
    expect([loss.lo, loss.hi]).toEqual([1, 5]);
    expect(labels(loss)).toEqual(["1", "2", "5"]);
    expect(loss.minor).toEqual([3, 4]);
    expect(labels(logAxis(2e-9, 4e-8, 10))).toEqual(["2e-9", "5e-9", "1e-8", "2e-8", "5e-8"]);
    // Too little room for 1-2-5 ticks: decades only.
    expect(labels(logAxis(1.6, 3.5, 2))).toEqual(["1", "10"]);
  });

  it("widens a single value by a factor of 3 either side, and no data gives [1, 10]", () => {
    const one = logAxis(1, 1, 10);
    expect([one.lo, one.hi]).toEqual([0.2, 5]);
    expect(labels(one)).toEqual(["0.2", "0.5", "1", "2", "5"]);
    const none = logAxis(NaN, NaN, 10);
    expect([none.lo, none.hi]).toEqual([1, 10]);
  });
});

const base = { title: "t", xLabel: "step", yLabel: "loss" };

describe("lineChart", () => {
  it("draws one path per series in palette order and names every series in the legend", () => {
    const series: Series[] = [4, 8, 16].map((r) => ({ name: `r=${r}`, points: [[0, 3], [10, 2], [20, 1.5]] }));
    const chart = lineChart({ ...base, series });
    const data = ofKind(chart, "path").filter((p) => p.runs[0]!.length === 3);
    expect(data.map((p) => p.color)).toEqual([PALETTE[0], PALETTE[1], PALETTE[2]]);
    expect(texts(chart)).toEqual(expect.arrayContaining(["r=4", "r=8", "r=16", "t", "step", "loss"]));
  });

  it("splits a series at NaN and Infinity, and marks a point left alone", () => {
    const chart = lineChart({ ...base, series: [{ name: "a", points: [[0, 1], [1, NaN], [2, 3], [3, 4], [Infinity, 5], [5, 6], [6, 7]] }] });
    const [path] = ofKind(chart, "path");
    expect(path!.runs.map((r) => r.length)).toEqual([1, 2, 2]);
    const [dots] = ofKind(chart, "markers");
    expect(dots!.points).toEqual([path!.runs[0]![0]]);
  });

  it("skips non-positive values on a log axis and leaves them out of the range", () => {
    const chart = lineChart({ ...base, logY: true, series: [{ name: "s", points: [[1, 10], [2, 1], [3, 0], [4, -1], [5, 0.01], [6, 0.001]] }] });
    const [path] = ofKind(chart, "path");
    expect(path!.runs.map((r) => r.length)).toEqual([2, 2]);
    expect(texts(chart)).toEqual(expect.arrayContaining(["0.001", "0.01", "0.1", "1", "10"]));
  });

  it("maps the data into the plot: larger y is higher, larger x is further right", () => {
    const chart = lineChart({ ...base, series: [{ name: "s", points: [[0, 0], [1, 1]] }] });
    const [[a, b]] = ofKind(chart, "path")[0]!.runs as [[number, number][]];
    expect(b![0]).toBeGreaterThan(a![0]);
    expect(b![1]).toBeLessThan(a![1]);
  });

  it("draws markers at every point when asked, with a dot in the legend too", () => {
    const chart = lineChart({ ...base, markers: true, series: [{ name: "σ", points: [[1, 3], [2, 2], [3, 1]] }] });
    const dots = ofKind(chart, "markers");
    expect(dots.map((d) => d.points.length)).toEqual([3, 1]);
  });

  it("says 'no data' when there is nothing to draw, and keeps empty series in the legend", () => {
    expect(texts(lineChart({ ...base, series: [] }))).toContain("no data");
    const chart = lineChart({ ...base, series: [{ name: "empty", points: [] }, { name: "nan", points: [[NaN, NaN]] }] });
    expect(texts(chart)).toEqual(expect.arrayContaining(["no data", "empty", "nan"]));
    // Only the two legend swatches: no data paths.
    expect(ofKind(chart, "path")).toHaveLength(2);
  });

  it("handles a single point", () => {
    const chart = lineChart({ ...base, series: [{ name: "one", points: [[3, 2]] }] });
    expect(ofKind(chart, "markers")[0]!.points).toHaveLength(1);
    expect(texts(chart)).not.toContain("no data");
  });

  it("shortens long text and summarises a legend that does not fit", () => {
    const series = Array.from({ length: 40 }, (_, i) => ({ name: `transformer.h.${i}.attn.c_attn.lora_B`, points: [[0, i], [1, i + 1]] as [number, number][] }));
    const chart = lineChart({ ...base, title: "x".repeat(200), series, height: 300 });
    const all = texts(chart);
    expect(all.find((t) => t.startsWith("xxx"))).toMatch(/^x+\.\.\.$/);
    // Legend names (19 characters fit at this width) lose their middle, keeping both ends.
    expect(all).toContain("transfor...n.lora_B");
    expect(all.some((t) => /^\+\d+ more$/.test(t))).toBe(true);
  });

  it("keeps every rectangle and every piece of text inside the image", () => {
    const charts = [
      lineChart({ ...base, series: [{ name: "r=4", points: [[1, 3.4], [500, 1.6]] }] }),
      lineChart({ ...base, logY: true, width: 320, height: 240, series: [{ name: "a rather long layer name", points: [[1, 3], [768, 1e-9]] }] }),
      lineChart({ ...base, series: [] }),
      lineChart({ ...base, height: 240, series: Array.from({ length: 30 }, (_, i) => ({ name: `${i}`, points: [[0, i]] as [number, number][] })) }),
    ];
    for (const chart of charts) {
      for (const r of ofKind(chart, "rect")) {
        expect(r.x).toBeGreaterThanOrEqual(0);
        expect(r.y).toBeGreaterThanOrEqual(0);
        expect(r.x + r.width).toBeLessThanOrEqual(chart.width);
        expect(r.y + r.height).toBeLessThanOrEqual(chart.height);
      }
      for (const t of ofKind(chart, "text")) {
        const len = [...t.text].length * 6 * t.scale;
        const start = t.anchor === "start" ? 0 : t.anchor === "middle" ? -len / 2 : -len;
        // Along the text: [start, start + len]; across it: 7 font pixels up, 2 down.
        const along: [number, number] = [start, start + len], across: [number, number] = [-7 * t.scale, 2 * t.scale];
        const [xs, ys] = t.rotate === 0 ? [along.map((u) => t.x + u), across.map((v) => t.y + v)] : [across.map((v) => t.x + v), along.map((u) => t.y - u)];
        expect(Math.min(...xs!), t.text).toBeGreaterThanOrEqual(0);
        expect(Math.max(...xs!), t.text).toBeLessThanOrEqual(chart.width);
        expect(Math.min(...ys!), t.text).toBeGreaterThanOrEqual(0);
        expect(Math.max(...ys!), t.text).toBeLessThanOrEqual(chart.height);
      }
    }
  });

  it("refuses sizes it cannot lay out", () => {
    expect(() => lineChart({ ...base, series: [], width: 100 })).toThrow(/width must be an integer/);
    expect(() => lineChart({ ...base, series: [], height: 300.5 })).toThrow(/height must be an integer/);
  });
});
