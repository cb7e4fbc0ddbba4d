// Python's json.dumps, byte for byte: PEFT writes adapter_config.json with
// json.dumps(indent=2, sort_keys=True), and lowrank writes the same bytes (lib/peft/config.ts).

/**
 * Marks a number that Python holds as a float, so it is written as one ("0.0", "1e-05") even
 * when its value is integral. Plain JS numbers are written as ints when integral.
 */
export class PyFloat {
  constructor(readonly value: number) {}
}

/** A value json.dumps can write: JSON values, with PyFloat for Python floats. */
export type PyJson = null | boolean | number | string | PyFloat | readonly PyJson[] | { readonly [key: string]: PyJson };

/**
 * `repr(float)` as json.dumps writes it: the shortest digits that round-trip (JS and Python
 * agree on those), but Python's layout: fixed notation with a ".0" for 1e-4 <= |x| < 1e16,
 * otherwise "1e-05" / "1.5e+16" (two exponent digits at least). NaN and ±Infinity are written as
 * json.dumps does by default (allow_nan=True).
 */
export function pythonFloatRepr(x: number): string {
  if (Number.isNaN(x)) return "NaN";
  if (x === Infinity) return "Infinity";
  if (x === -Infinity) return "-Infinity";
  const sign = x < 0 || Object.is(x, -0) ? "-" : "";
  if (x === 0) return `${sign}0.0`;
  const [mantissa, expText] = Math.abs(x).toExponential().split("e") as [string, string];
  const digits = mantissa.replace(".", "");
  const exp = Number(expText);
  if (exp < -4 || exp >= 16) {
    const m = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    const e = Math.abs(exp).toString().padStart(2, "0");
    return `${sign}${m}e${exp < 0 ? "-" : "+"}${e}`;
  }
  if (exp < 0) return `${sign}0.${"0".repeat(-exp - 1)}${digits}`;
  const intPart = digits.slice(0, exp + 1).padEnd(exp + 1, "0");
  const frac = digits.slice(exp + 1);
  return `${sign}${intPart}.${frac.length > 0 ? frac : "0"}`;
}

/**
 * A JSON string literal as json.dumps writes it with ensure_ascii=True (the default): every
 * character outside printable ASCII becomes \uXXXX (UTF-16 units, so astral characters become
 * surrogate pairs), with the short forms \" \\ \n \r \t \b \f.
 */
export function pythonJsonString(s: string): string {
  let out = '"';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    const ch = s[i]!;
    if (ch === '"') out += '\\"';
    else if (ch === "\\") out += "\\\\";
    else if (ch === "\n") out += "\\n";
    else if (ch === "\r") out += "\\r";
    else if (ch === "\t") out += "\\t";
    else if (ch === "\b") out += "\\b";
    else if (ch === "\f") out += "\\f";
    else if (c < 0x20 || c > 0x7e) out += `\\u${c.toString(16).padStart(4, "0")}`;
    else out += ch;
  }
  return out + '"';
}

/** Python compares str by code point; JS's default sort compares UTF-16 units. */
function compareCodePoints(a: string, b: string): number {
  const x = [...a], y = [...b];
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    const d = x[i]!.codePointAt(0)! - y[i]!.codePointAt(0)!;
    if (d !== 0) return d;
  }
  return x.length - y.length;
}

/**
 * `json.dumps(value, indent=2, sort_keys=True)`, the way PEFT writes adapter_config.json
 * (no trailing newline). Integral JS numbers are written as Python ints, others and PyFloat as
 * Python floats.
 */
export function pythonJsonDumps(value: PyJson, indent = 2): string {
  const write = (v: PyJson, level: number): string => {
    if (v === null) return "null";
    if (v === true) return "true";
    if (v === false) return "false";
    if (typeof v === "string") return pythonJsonString(v);
    if (v instanceof PyFloat) return pythonFloatRepr(v.value);
    if (typeof v === "number") {
      // BigInt keeps every digit of large integers, which Number#toString would put in e-notation
      return Number.isInteger(v) ? BigInt(v).toString() : pythonFloatRepr(v);
    }
    const inner = " ".repeat(indent * (level + 1));
    const outer = " ".repeat(indent * level);
    if (Array.isArray(v)) {
      if (v.length === 0) return "[]";
      return `[\n${v.map((x) => inner + write(x, level + 1)).join(",\n")}\n${outer}]`;
    }
    const obj = v as { readonly [key: string]: PyJson };
    const keys = Object.keys(obj).sort(compareCodePoints);
    if (keys.length === 0) return "{}";
    return `{\n${keys.map((k) => `${inner}${pythonJsonString(k)}: ${write(obj[k]!, level + 1)}`).join(",\n")}\n${outer}}`;
  };
  return write(value, 0);
}
