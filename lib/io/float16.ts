// IEEE 754 half precision (binary16) <-> float32 conversions, bit-exact, for reading and writing
// F16 tensors in safetensors files. lowrank has no float16 tensors: F16 data is widened to float32
// on load and narrowed again on save.

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** Every one of the 65536 half values as float32, built on first use (256 KiB). */
let decodeTable: Float32Array | undefined;

/** The float32 value of half-precision bits: exact, including subnormals, ±0, ±Inf and NaN. */
export function f16BitsToF32(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >>> 10) & 0x1f;
  const fraction = bits & 0x3ff;
  if (exponent === 0) return sign * fraction * 2 ** -24;
  if (exponent === 0x1f) return fraction ? NaN : sign * Infinity;
  return sign * (1024 + fraction) * 2 ** (exponent - 25);
}

/** Decodes many half values at once through a lookup table. */
export function decodeF16(bits: Uint16Array): Float32Array {
  if (!decodeTable) {
    decodeTable = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) decodeTable[h] = f16BitsToF32(h);
  }
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) out[i] = decodeTable[bits[i]!]!;
  return out;
}

/**
 * float32 -> half-precision bits, rounding to nearest even (as PyTorch's .half() does): values
 * from 65520 up overflow to Inf, tiny values become subnormals or ±0, NaN stays a quiet NaN.
 */
export function f32ToF16Bits(value: number): number {
  f32[0] = value;
  const x = u32[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exponent = (x >>> 23) & 0xff;
  const mantissa = x & 0x7fffff;
  if (exponent === 0xff) return sign | 0x7c00 | (mantissa ? 0x200 | (mantissa >>> 13) : 0);
  const e = exponent - 127 + 15; // the half-precision biased exponent
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    // Subnormal half (or zero): the value is significand · 2^(exponent - 150); counted in units of
    // the smallest subnormal, 2^-24, that is significand · 2^(e - 14) = significand >> (14 - e).
    if (e < -10) return sign; // below half the smallest subnormal: rounds to ±0
    const significand = mantissa | 0x800000;
    const shift = 14 - e;
    let h = significand >>> shift;
    const rest = significand & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rest > half || (rest === half && h & 1)) h++;
    return sign | h;
  }
  let h = (e << 10) | (mantissa >>> 13);
  const rest = mantissa & 0x1fff;
  // A carry out of the mantissa bumps the exponent, and from the largest finite value gives Inf.
  if (rest > 0x1000 || (rest === 0x1000 && h & 1)) h++;
  return sign | h;
}

/** Encodes many float32 values as half-precision bits. */
export function encodeF16(values: Float32Array): Uint16Array {
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = f32ToF16Bits(values[i]!);
  return out;
}
