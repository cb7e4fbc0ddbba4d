// Python `re` patterns translated to JS (lib/io/pyregex.ts), against what Python's re and PEFT
// matched (test/fixtures/peft-format.json, made by test/fixtures/make_format_fixtures.py).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { compilePythonRegex, translatePythonRegex } from "../../lib/io/pyregex.js";

const format = JSON.parse(readFileSync(join(import.meta.dirname, "..", "fixtures", "peft-format.json"), "utf8")) as {
  regex_fullmatch: [string, string, boolean][];
  pattern_key_match: [string, string, boolean][];
};

describe("Python regular expressions", () => {
  const fullmatch = (p: string) => compilePythonRegex(p, "test", (s) => `^(?:${s})$`, true);

  it("matches as Python's re.fullmatch does", () => {
    for (const [p, name, want] of format.regex_fullmatch) expect(fullmatch(p).test(name), `${p} vs ${name}`).toBe(want);
  });

  it("matches pattern keys as PEFT's get_pattern_key does", () => {
    for (const [k, name, want] of format.pattern_key_match) {
      expect(compilePythonRegex(k, "test", (s) => `^(.*\\.)?(${s})$`, false).test(name), `${k} vs ${name}`).toBe(want);
    }
  });

  it("translates Python-only syntax", () => {
    expect(translatePythonRegex("(?P<a>x)(?P=a)\\A\\Z(?#c)[]y]{,2}", "t")).toEqual({ source: "(?<a>x)\\k<a>^$[\\]y]{0,2}", flags: "" });
    expect(translatePythonRegex("(?ims)x", "t")).toEqual({ source: "x", flags: "ims" });
    // escapes and classes are copied as they are
    expect(translatePythonRegex("[\\]A]\\A\\.", "t").source).toBe("[\\]A]^\\.");
  });

  it("refuses what JavaScript cannot express, naming the construct", () => {
    expect(() => translatePythonRegex("(?>a)", "targetModules")).toThrow(/targetModules: .*atomic group/);
    expect(() => translatePythonRegex("a*+", "t")).toThrow(/possessive/);
    expect(() => translatePythonRegex("(?x)a b", "t")).toThrow(/verbose/);
    expect(() => translatePythonRegex("a(?i:b)", "t")).toThrow(/scoped flags/);
    expect(() => translatePythonRegex("(a)(?(1)b)", "t")).toThrow(/conditional/);
    expect(() => translatePythonRegex("[ab", "t")).toThrow(/unterminated character class/);
    expect(() => compilePythonRegex("(?i)a", "rank_pattern", (s) => s, false)).toThrow(/global flags/);
    expect(() => compilePythonRegex("(a", "t", (s) => s, true)).toThrow(/not a valid regular expression/);
  });
});
