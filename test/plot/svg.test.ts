import { describe, expect, it } from "vitest";
import { lineChart, PALETTE, renderSvg, type Rgb, type Series } from "../../lib/plot/index.js";
import { escapeXml } from "../../lib/plot/svg.js";

const hex = (c: Rgb): string => "#" + c.map((v) => v.toString(16).padStart(2, "0")).join("");

/**
 * A small well-formedness check: every element is closed in order, there is one root <svg>,
 * and text content holds no raw "<" and no "&" outside an entity.
 */
function expectWellFormed(svg: string): void {
  const body = svg.replace(/^<\?xml[^?]*\?>\s*/, "");
  const stack: string[] = [];
  let roots = 0;
  for (const m of body.matchAll(/<(\/?)([a-zA-Z][\w:-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>|([^<]+)/g)) {
    const [, closing, name, , selfClosing, content] = m;
    if (content !== undefined) {
      expect(content.replace(/&(amp|lt|gt|quot|apos);/g, "")).not.toMatch(/[<&]/);
      continue;
    }
    if (closing) expect(stack.pop()).toBe(name);
    else if (!selfClosing) {
      if (stack.length === 0) roots++;
      stack.push(name!);
    } else if (stack.length === 0) roots++;
  }
  expect(stack).toEqual([]);
  expect(roots).toBe(1);
  // Everything was consumed by the pattern above: no stray "<" that is not a tag.
  expect(body.replace(/<(\/?)([a-zA-Z][\w:-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>/g, "")).not.toContain("<");
}

describe("SVG chart", () => {
  const series: Series[] = [4, 8, 16, 64].map((r, i) => ({
    name: `r=${r}`,
    points: Array.from({ length: 50 }, (_, k) => [k, 1.5 + 2 * Math.exp(-k / (5 + i))] as [number, number]),
  }));

  it("is a well-formed SVG document with a viewBox of the chart size", () => {
    const svg = renderSvg(lineChart({ title: "sweep", xLabel: "step", yLabel: "loss", series, width: 800, height: 500 }));
    expect(svg.startsWith('<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true);
    expect(svg).toContain('viewBox="0 0 800 500"');
    expectWellFormed(svg);
  });

  it("draws a path per series in its palette color and names each in the legend", () => {
    const svg = renderSvg(lineChart({ title: "sweep", xLabel: "step", yLabel: "loss", series }));
    series.forEach((s, i) => {
      // The data line and the legend swatch.
      expect(svg.split(`stroke="${hex(PALETTE[i]!)}"`)).toHaveLength(3);
      expect(svg).toContain(`>${s.name}</text>`);
    });
  });

  it("escapes text and strips characters XML does not allow", () => {
    const svg = renderSvg(lineChart({ title: "a < b & c", xLabel: 'x "quoted"', yLabel: "it's\u0007", series: [{ name: "<script>", points: [[0, 1], [1, 2]] }] }));
    expect(svg).toContain("a &lt; b &amp; c");
    expect(svg).toContain("x &quot;quoted&quot;");
    expect(svg).toContain(">it&apos;s</text>");
    expect(svg).toContain("&lt;script&gt;");
    expect(svg).not.toContain("<script>");
    expect(svg).not.toContain("a < b");
    expectWellFormed(svg);
    expect(escapeXml("\u0000ok\n")).toBe("ok\n");
  });

  it("starts a new subpath after a NaN gap", () => {
    const svg = renderSvg(lineChart({ title: "", xLabel: "", yLabel: "", series: [{ name: "g", points: [[0, 1], [1, 2], [2, NaN], [3, 2], [4, 1]] }] }));
    const d = svg.match(new RegExp(`<path d="([^"]*)"[^>]*stroke="${hex(PALETTE[0]!)}"`))![1]!;
    expect(d.match(/M/g)).toHaveLength(2);
    expect(d.match(/L/g)).toHaveLength(2);
  });

  it("turns the y label with the same rotation the PNG uses", () => {
    const svg = renderSvg(lineChart({ title: "", xLabel: "", yLabel: "σ", logY: true, series: [{ name: "s", points: [[1, 10], [2, 0.1]] }] }));
    expect(svg).toMatch(/<text x="(\d+)" y="(\d+)" [^>]*transform="rotate\(-90 \1 \2\)">σ<\/text>/);
  });
});
