// Python's number formatting where lowrank prints what Python prints (PEFT's
// print_trainable_parameters line, the CLI's tables): f"{n:,d}" and f"{x:.Nf}".

/** `f"{n:,d}"`: an integer with comma thousands separators. */
export function formatThousands(n: number): string {
  if (!Number.isSafeInteger(n)) throw new Error(`formatThousands: ${n} is not a safe integer.`);
  return n.toString().replace(/\B(?=(\d{3})+(?!\d))/g, ",");
}

/**
 * `f"{x:.{digits}f}"`: Python rounds the exact binary value of x to `digits` decimals, ties to
 * even. Number#toFixed also rounds the exact value but sends ties up (1/32 = 0.03125 → "0.0313",
 * Python "0.0312"), so the rounding is done here exactly with BigInt.
 */
export function formatFixed(x: number, digits: number): string {
  if (!Number.isInteger(digits) || digits < 0 || digits > 100) {
    throw new Error(`formatFixed: digits must be an integer in [0, 100]; got ${digits}.`);
  }
  if (Number.isNaN(x)) return "nan";
  if (!Number.isFinite(x)) return x > 0 ? "inf" : "-inf";
  const sign = x < 0 || Object.is(x, -0) ? "-" : "";
  // |x| = mant * 2^exp exactly, from the IEEE-754 fields
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, Math.abs(x));
  const bits = view.getBigUint64(0);
  const biased = Number((bits >> 52n) & 0x7ffn);
  const fraction = bits & ((1n << 52n) - 1n);
  const mant = biased === 0 ? fraction : fraction | (1n << 52n);
  const exp = (biased === 0 ? 1 : biased) - 1075;
  const scaled = mant * 10n ** BigInt(digits);
  let q: bigint;
  if (exp >= 0) {
    q = scaled << BigInt(exp);
  } else {
    const den = 1n << BigInt(-exp);
    q = scaled / den;
    const twice = 2n * (scaled % den);
    if (twice > den || (twice === den && q % 2n === 1n)) q += 1n;
  }
  const s = q.toString().padStart(digits + 1, "0");
  return digits === 0 ? `${sign}${s}` : `${sign}${s.slice(0, -digits)}.${s.slice(-digits)}`;
}
