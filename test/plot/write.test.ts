import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { lineChart, writeChart } from "../../lib/plot/index.js";
import { decodePng } from "./decode-png.js";

const chart = lineChart({ title: "loss", xLabel: "step", yLabel: "loss", series: [{ name: "r=8", points: [[0, 2], [1, 1]] }], width: 320, height: 240 });

describe("writeChart", () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "lowrank-plot-"));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it("writes name.svg and name.png from a path without extension, creating folders", () => {
    const base = join(dir, "plots", "loss");
    expect(writeChart(base, chart)).toEqual([`${base}.svg`, `${base}.png`]);
    expect(readFileSync(`${base}.svg`, "utf8")).toMatch(/^<\?xml[^>]*>\n<svg /);
    const png = decodePng(readFileSync(`${base}.png`));
    expect([png.width, png.height]).toEqual([320, 240]);
    // Atomic writes leave no temporary files behind.
    expect(readdirSync(join(dir, "plots")).sort()).toEqual(["loss.png", "loss.svg"]);
  });

  it("writes only the files asked for", () => {
    const pngPath = join(dir, "only.png");
    expect(writeChart({ pngPath }, chart)).toEqual([pngPath]);
    expect(readdirSync(dir)).toEqual(["only.png"]);
    expect(() => writeChart({}, chart)).toThrow(/at least one of svgPath and pngPath/);
  });
});
