// A minimal PNG reader for the tests: it checks the structure the encoder must produce and
// returns the pixels, so that tests can look at what was drawn. The CRC here is the plain
// bit-by-bit definition, independent of the table-driven one in lib/plot/png.ts.
import { inflateSync } from "node:zlib";
import { expect } from "vitest";

export interface DecodedPng {
  width: number;
  height: number;
  chunkTypes: string[];
  /** RGBA, row-major. */
  pixels: Uint8Array;
}

export function bitwiseCrc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of bytes) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0xedb88320 : c >>> 1;
  }
  return (c ^ 0xffffffff) >>> 0;
}

/** Parses every chunk (checking its CRC), the IHDR fields and the inflated IDAT size. */
export function decodePng(png: Uint8Array): DecodedPng {
  expect([...png.subarray(0, 8)]).toEqual([137, 80, 78, 71, 13, 10, 26, 10]);
  const view = new DataView(png.buffer, png.byteOffset, png.byteLength);
  const chunkTypes: string[] = [];
  const idat: Uint8Array[] = [];
  let header: Uint8Array | undefined;
  for (let at = 8; at < png.length; ) {
    const length = view.getUint32(at);
    const type = Buffer.from(png.subarray(at + 4, at + 8)).toString("latin1");
    const data = png.subarray(at + 8, at + 8 + length);
    expect(view.getUint32(at + 8 + length), `CRC of ${type}`).toBe(bitwiseCrc32(png.subarray(at + 4, at + 8 + length)));
    chunkTypes.push(type);
    if (type === "IHDR") header = data;
    if (type === "IDAT") idat.push(data);
    at += 12 + length;
  }
  expect(chunkTypes[0]).toBe("IHDR");
  expect(chunkTypes[chunkTypes.length - 1]).toBe("IEND");
  const hv = new DataView(header!.buffer, header!.byteOffset, header!.byteLength);
  const width = hv.getUint32(0), height = hv.getUint32(4);
  expect([...header!.subarray(8)]).toEqual([8, 6, 0, 0, 0]); // 8-bit RGBA, deflate, filter 0, no interlace
  const raw = inflateSync(Buffer.concat(idat));
  expect(raw.length).toBe(height * (1 + 4 * width));
  const pixels = new Uint8Array(width * height * 4);
  for (let y = 0; y < height; y++) {
    const row = y * (1 + 4 * width);
    expect(raw[row], `filter byte of row ${y}`).toBe(0);
    pixels.set(raw.subarray(row + 1, row + 1 + 4 * width), y * 4 * width);
  }
  return { width, height, chunkTypes, pixels };
}

export function pixelAt(png: DecodedPng, x: number, y: number): [number, number, number, number] {
  const i = (Math.floor(y) * png.width + Math.floor(x)) * 4;
  return [png.pixels[i]!, png.pixels[i + 1]!, png.pixels[i + 2]!, png.pixels[i + 3]!];
}
