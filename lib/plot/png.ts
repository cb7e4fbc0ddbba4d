// PNG backend: a small pure-TypeScript rasterizer (RGBA framebuffer, anti-aliased lines and
// dots, opaque rectangles, the bitmap font of font.ts) and a PNG encoder over node:zlib.
import { deflateSync } from "node:zlib";
import { textWidth, type Chart, type ChartItem, type Point, type Rgb } from "./chart.js";
import { GLYPH_ADVANCE, GLYPH_ASCENT, GLYPH_DESCENT, GLYPH_WIDTH, glyphFor } from "./font.js";

// Long segments are covered piece by piece so that each piece's bounding box stays small; the
// union of the pieces' round-capped outlines is exactly the whole segment's outline.
const PIECE = 8;

class Raster {
  readonly pixels: Uint8Array;
  // Anti-aliased shapes first collect their coverage (0…1 per pixel, the maximum where parts
  // overlap) and are blended once: a polyline's joints and a cluster of dots are then no darker
  // than a single stroke.
  private readonly coverage: Float32Array;
  private minX = Infinity;
  private minY = Infinity;
  private maxX = -Infinity;
  private maxY = -Infinity;

  constructor(readonly width: number, readonly height: number, background: Rgb) {
    this.pixels = new Uint8Array(width * height * 4);
    this.coverage = new Float32Array(width * height);
    this.pixels.fill(255); // opaque everywhere; only the colour channels change from here on
    this.fillRect(0, 0, width, height, background);
  }

  /** Opaque fill of whole pixels, clipped to the image. */
  fillRect(x: number, y: number, w: number, h: number, color: Rgb): void {
    const x0 = Math.max(0, Math.round(x)), x1 = Math.min(this.width, Math.round(x + w));
    const y0 = Math.max(0, Math.round(y)), y1 = Math.min(this.height, Math.round(y + h));
    for (let py = y0; py < y1; py++) {
      for (let i = (py * this.width + x0) * 4; i < (py * this.width + x1) * 4; i += 4) {
        this.pixels[i] = color[0];
        this.pixels[i + 1] = color[1];
        this.pixels[i + 2] = color[2];
      }
    }
  }

  /**
   * Adds coverage for a capsule: the pixels whose centres lie within `radius` of the segment
   * from (ax, ay) to (bx, by), with a one-pixel ramp around the edge as the anti-aliasing
   * (coverage = radius + 0.5 − distance, clamped to 0…1). A dot is a capsule of zero length.
   */
  private coverCapsule(ax: number, ay: number, bx: number, by: number, radius: number): void {
    const x0 = Math.max(0, Math.floor(Math.min(ax, bx) - radius - 1)), x1 = Math.min(this.width - 1, Math.ceil(Math.max(ax, bx) + radius + 1));
    const y0 = Math.max(0, Math.floor(Math.min(ay, by) - radius - 1)), y1 = Math.min(this.height - 1, Math.ceil(Math.max(ay, by) + radius + 1));
    if (x0 > x1 || y0 > y1) return;
    const dx = bx - ax, dy = by - ay, len2 = dx * dx + dy * dy;
    for (let y = y0; y <= y1; y++) {
      for (let x = x0; x <= x1; x++) {
        const qx = x + 0.5 - ax, qy = y + 0.5 - ay;
        const t = len2 === 0 ? 0 : Math.max(0, Math.min(1, (qx * dx + qy * dy) / len2));
        const ex = qx - t * dx, ey = qy - t * dy;
        const c = Math.min(1, radius + 0.5 - Math.sqrt(ex * ex + ey * ey));
        const i = y * this.width + x;
        if (c > this.coverage[i]!) this.coverage[i] = c;
      }
    }
    this.minX = Math.min(this.minX, x0);
    this.minY = Math.min(this.minY, y0);
    this.maxX = Math.max(this.maxX, x1);
    this.maxY = Math.max(this.maxY, y1);
  }

  /** A round-capped line from a to b, `width` pixels thick. */
  coverSegment(a: Point, b: Point, width: number): void {
    const pieces = Math.max(1, Math.ceil(Math.hypot(b[0] - a[0], b[1] - a[1]) / PIECE));
    const dx = (b[0] - a[0]) / pieces, dy = (b[1] - a[1]) / pieces;
    for (let k = 0; k < pieces; k++) {
      this.coverCapsule(a[0] + dx * k, a[1] + dy * k, a[0] + dx * (k + 1), a[1] + dy * (k + 1), width / 2);
    }
  }

  coverDisk(c: Point, radius: number): void {
    this.coverCapsule(c[0], c[1], c[0], c[1], radius);
  }

  /** Blends the collected coverage in `color` and clears it for the next shape. */
  composite(color: Rgb): void {
    for (let y = this.minY; y <= this.maxY; y++) {
      for (let x = this.minX; x <= this.maxX; x++) {
        const i = y * this.width + x;
        const a = this.coverage[i]!;
        if (a <= 0) continue;
        this.coverage[i] = 0;
        for (let ch = 0; ch < 3; ch++) {
          const p = this.pixels[i * 4 + ch]!;
          this.pixels[i * 4 + ch] = Math.round(p + (color[ch]! - p) * a);
        }
      }
    }
    this.minX = this.minY = Infinity;
    this.maxX = this.maxY = -Infinity;
  }

  /** Bitmap-font text, each font pixel a scale × scale square, as laid out by chart.ts. */
  drawText(item: Extract<ChartItem, { kind: "text" }>): void {
    const s = item.scale;
    const w = textWidth(item.text, s);
    const start = item.anchor === "start" ? 0 : item.anchor === "middle" ? -Math.round(w / 2) : -w;
    // The 5 ink columns sit centred in the 6-column advance, like a monospace font's glyphs.
    const inset = Math.floor(s / 2);
    [...item.text].forEach((ch, n) => {
      const glyph = glyphFor(ch);
      for (let r = 0; r < GLYPH_ASCENT + GLYPH_DESCENT; r++) {
        for (let c = 0; c < GLYPH_WIDTH; c++) {
          if (((glyph[r]! >> (GLYPH_WIDTH - 1 - c)) & 1) === 0) continue;
          // (u, v): offset from the anchor along the text and down from the baseline.
          const u = start + n * GLYPH_ADVANCE * s + inset + c * s;
          const v = (r - GLYPH_ASCENT) * s;
          // Turned −90°, "along the text" points up the image and "down" points right.
          if (item.rotate === 0) this.fillRect(item.x + u, item.y + v, s, s, item.color);
          else this.fillRect(item.x + v, item.y - u - s, s, s, item.color);
        }
      }
    });
  }
}

/** The chart rendered to an RGBA framebuffer (width × height × 4 bytes, row-major, opaque). */
export function rasterize(chart: Chart): Uint8Array {
  const raster = new Raster(chart.width, chart.height, chart.background);
  for (const item of chart.items) {
    switch (item.kind) {
      case "rect":
        raster.fillRect(item.x, item.y, item.width, item.height, item.color);
        break;
      case "path":
        for (const run of item.runs) {
          for (let i = 1; i < run.length; i++) raster.coverSegment(run[i - 1]!, run[i]!, item.lineWidth);
        }
        raster.composite(item.color);
        break;
      case "markers":
        for (const p of item.points) raster.coverDisk(p, item.radius);
        raster.composite(item.color);
        break;
      case "text":
        raster.drawText(item);
        break;
    }
  }
  return raster.pixels;
}

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC-32 (ISO 3309, as PNG chunks use it). */
export function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

// A chunk: length, type, data, and the CRC of type + data.
function chunk(type: string, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + data.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, data.length);
  out.set(Buffer.from(type, "latin1"), 4);
  out.set(data, 8);
  view.setUint32(8 + data.length, crc32(out.subarray(4, 8 + data.length)));
  return out;
}

const SIGNATURE = new Uint8Array([137, 80, 78, 71, 13, 10, 26, 10]);

/** PNG bytes for an RGBA framebuffer: 8-bit truecolour with alpha, no interlace, filter 0 on every row. */
export function encodePng(width: number, height: number, rgba: Uint8Array): Uint8Array {
  if (rgba.length !== width * height * 4) {
    throw new Error(`encodePng: expected ${width}×${height}×4 = ${width * height * 4} bytes of RGBA, got ${rgba.length}`);
  }
  const header = new Uint8Array(13);
  const view = new DataView(header.buffer);
  view.setUint32(0, width);
  view.setUint32(4, height);
  header.set([8, 6, 0, 0, 0], 8); // bit depth 8, colour type 6 (RGBA), deflate, filter method 0, no interlace
  const stride = width * 4;
  const raw = new Uint8Array(height * (1 + stride)); // each row: filter type 0 (none), then its pixels
  for (let y = 0; y < height; y++) raw.set(rgba.subarray(y * stride, (y + 1) * stride), y * (1 + stride) + 1);
  const parts = [SIGNATURE, chunk("IHDR", header), chunk("IDAT", deflateSync(raw)), chunk("IEND", new Uint8Array(0))];
  return Buffer.concat(parts);
}

/** The chart as PNG bytes. */
export function renderPng(chart: Chart): Uint8Array {
  return encodePng(chart.width, chart.height, rasterize(chart));
}
