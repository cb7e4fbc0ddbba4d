// Strict JSON, for headers whose every byte matters (safetensors). JSON.parse would silently keep
// the last of two duplicate names, round integers above 2^53, and accept 1.0 or 1e3 as a size.
// This parser reports duplicates, keeps integer literals exact as bigint, limits nesting, and
// gives objects as Maps (no prototype keys such as "__proto__").

/** A name for an error message: JSON-quoted (so newlines cannot split the line) and shortened. */
export function quote(name: string): string {
  const q = JSON.stringify(name);
  return q.length > 120 ? `${q.slice(0, 117)}..."` : q;
}

export type Json = null | boolean | number | bigint | string | Json[] | JsonObject;
export type JsonObject = Map<string, Json>;

const MAX_JSON_DEPTH = 64;
const NUMBER = /-?(?:0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/y;
/** An unpaired UTF-16 surrogate, which no UTF-8 text (so no JSON file) can hold. */
export const LONE_SURROGATE = /\p{Cs}/u;

/**
 * Parses JSON text strictly (see the file comment); throws "<what> at character <n>" on bad input.
 */
export function parseStrictJson(text: string): Json {
  return new JsonParser(text).parse();
}

class JsonParser {
  private pos = 0;
  constructor(private readonly text: string) {}

  parse(): Json {
    const value = this.value(0);
    this.skipSpace();
    if (this.pos < this.text.length) this.fail("unexpected text after the JSON value");
    return value;
  }

  private fail(what: string): never {
    throw new Error(`${what} at character ${this.pos}`);
  }

  private skipSpace(): void {
    const t = this.text;
    while (this.pos < t.length) {
      const c = t.charCodeAt(this.pos);
      if (c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) break;
      this.pos++;
    }
  }

  private value(depth: number): Json {
    this.skipSpace();
    const c = this.text[this.pos];
    if (c === "{" || c === "[") {
      if (depth >= MAX_JSON_DEPTH) this.fail(`nesting deeper than ${MAX_JSON_DEPTH} levels`);
      return c === "{" ? this.object(depth + 1) : this.array(depth + 1);
    }
    if (c === '"') return this.string();
    for (const [word, v] of [["true", true], ["false", false], ["null", null]] as const) {
      if (this.text.startsWith(word, this.pos)) {
        this.pos += word.length;
        return v;
      }
    }
    NUMBER.lastIndex = this.pos;
    const m = NUMBER.exec(this.text);
    if (!m) this.fail(c === undefined ? "unexpected end of the text" : `unexpected character U+${c.charCodeAt(0).toString(16).toUpperCase().padStart(4, "0")}`);
    this.pos += m[0].length;
    // Integer literals stay exact; anything with a fraction or exponent is not a valid size anyway.
    return m[1] === undefined && m[2] === undefined ? BigInt(m[0]) : Number(m[0]);
  }

  private object(depth: number): JsonObject {
    const out: JsonObject = new Map();
    this.pos++; // {
    this.skipSpace();
    if (this.text[this.pos] === "}") {
      this.pos++;
      return out;
    }
    for (;;) {
      this.skipSpace();
      if (this.text[this.pos] !== '"') this.fail("expected a string key");
      const key = this.string();
      if (out.has(key)) this.fail(`duplicate key ${quote(key)}`);
      this.skipSpace();
      if (this.text[this.pos] !== ":") this.fail("expected ':'");
      this.pos++;
      out.set(key, this.value(depth));
      this.skipSpace();
      const c = this.text[this.pos++];
      if (c === "}") return out;
      if (c !== ",") {
        this.pos--;
        this.fail("expected ',' or '}'");
      }
    }
  }

  private array(depth: number): Json[] {
    const out: Json[] = [];
    this.pos++; // [
    this.skipSpace();
    if (this.text[this.pos] === "]") {
      this.pos++;
      return out;
    }
    for (;;) {
      out.push(this.value(depth));
      this.skipSpace();
      const c = this.text[this.pos++];
      if (c === "]") return out;
      if (c !== ",") {
        this.pos--;
        this.fail("expected ',' or ']'");
      }
    }
  }

  private string(): string {
    const t = this.text;
    const start = this.pos;
    let escaped = false;
    for (let i = start + 1; i < t.length; i++) {
      const c = t.charCodeAt(i);
      if (c === 0x22 /* " */) {
        this.pos = i + 1;
        const raw = t.slice(start, i + 1);
        let s: string;
        try {
          s = escaped ? (JSON.parse(raw) as string) : raw.slice(1, -1);
        } catch {
          this.pos = start;
          this.fail("invalid escape in string");
        }
        if (LONE_SURROGATE.test(s)) {
          this.pos = start;
          this.fail("string holds an unpaired UTF-16 surrogate escape");
        }
        return s;
      }
      if (c === 0x5c /* \ */) {
        escaped = true;
        i++;
      } else if (c < 0x20) {
        this.pos = i;
        this.fail("control character in string");
      }
    }
    this.pos = start;
    return this.fail("unterminated string");
  }
}

/** A short rendering of a parsed value for error messages (bigints exact, Maps as objects). */
export function describeJson(v: Json | undefined): string {
  const render = (x: Json): string =>
    typeof x === "bigint" ? x.toString()
      : Array.isArray(x) ? `[${x.map(render).join(",")}]`
        : x instanceof Map ? `{${[...x].map(([k, y]) => `${JSON.stringify(k)}:${render(y)}`).join(",")}}`
          : JSON.stringify(x);
  const text = v === undefined ? "nothing" : render(v);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}
