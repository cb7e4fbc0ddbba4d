// SVG backend: writes the items of a laid-out Chart as SVG elements, one to one.
import type { Chart, ChartItem, Point, Rgb } from "./chart.js";
import { GLYPH_ADVANCE } from "./font.js";

// The layout assumes a 0.6 em advance per character (font.ts), which these fonts have.
const FONT_FAMILY = "DejaVu Sans Mono, Menlo, Consolas, Liberation Mono, monospace";

/** Text made safe for XML content and attribute values (control characters are not allowed in XML 1.0). */
export function escapeXml(text: string): string {
  return text
    .replace(/[\u0000-\u0008\u000B\u000C\u000E-\u001F]/g, "")
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;")
    .replace(/'/g, "&apos;");
}

function hex(c: Rgb): string {
  return "#" + c.map((v) => v.toString(16).padStart(2, "0")).join("");
}

// Two decimals are far below a pixel and keep long series compact.
function num(v: number): string {
  return String(Math.round(v * 100) / 100);
}

function pathData(runs: readonly (readonly Point[])[]): string {
  return runs.map((run) => run.map((p, i) => `${i === 0 ? "M" : "L"}${num(p[0])} ${num(p[1])}`).join("")).join("");
}

function element(item: ChartItem): string {
  switch (item.kind) {
    case "rect":
      // crispEdges keeps the 1-pixel gridlines and axes sharp, as in the PNG.
      return `<rect x="${item.x}" y="${item.y}" width="${item.width}" height="${item.height}" fill="${hex(item.color)}" shape-rendering="crispEdges"/>`;
    case "path":
      return `<path d="${pathData(item.runs)}" fill="none" stroke="${hex(item.color)}" stroke-width="${item.lineWidth}" stroke-linejoin="round" stroke-linecap="round"/>`;
    case "markers":
      return `<g fill="${hex(item.color)}">${item.points.map((p) => `<circle cx="${num(p[0])}" cy="${num(p[1])}" r="${item.radius}"/>`).join("")}</g>`;
    case "text": {
      // font-size such that one advance (0.6 em) is GLYPH_ADVANCE font pixels × scale.
      const size = num((GLYPH_ADVANCE * item.scale) / 0.6);
      const rotate = item.rotate === 0 ? "" : ` transform="rotate(${item.rotate} ${item.x} ${item.y})"`;
      return `<text x="${item.x}" y="${item.y}" font-size="${size}" text-anchor="${item.anchor}" fill="${hex(item.color)}"${rotate}>${escapeXml(item.text)}</text>`;
    }
  }
}

/** The chart as a standalone SVG document (UTF-8 text). */
export function renderSvg(chart: Chart): string {
  const { width, height } = chart;
  return [
    `<?xml version="1.0" encoding="UTF-8"?>`,
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="${FONT_FAMILY}">`,
    `<title>${escapeXml(chart.title)}</title>`,
    `<rect width="${width}" height="${height}" fill="${hex(chart.background)}"/>`,
    ...chart.items.map(element),
    `</svg>`,
    "",
  ].join("\n");
}
