// Python's json.dumps, byte for byte (lib/io/pyjson.ts), against what Python printed
// (test/fixtures/peft-format.json, made by test/fixtures/make_format_fixtures.py).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { PyFloat, pythonFloatRepr, pythonJsonDumps, type PyJson } from "../../lib/io/pyjson.js";

const format = JSON.parse(readFileSync(join(import.meta.dirname, "..", "fixtures", "peft-format.json"), "utf8")) as {
  float_repr: [number, string][];
  json_dumps: { object: PyJson; text: string };
};

describe("Python's json.dumps", () => {
  it("writes floats as Python's repr does", () => {
    for (const [x, repr] of format.float_repr) expect(pythonFloatRepr(x), `${x}`).toBe(repr);
    expect(pythonFloatRepr(NaN)).toBe("NaN");
    expect(pythonFloatRepr(-Infinity)).toBe("-Infinity");
  });

  it("reproduces json.dumps(indent=2, sort_keys=True) byte for byte", () => {
    expect(pythonJsonDumps(format.json_dumps.object)).toBe(format.json_dumps.text);
    expect(pythonJsonDumps({ f: new PyFloat(0), g: [new PyFloat(16)], i: 16 })).toBe('{\n  "f": 0.0,\n  "g": [\n    16.0\n  ],\n  "i": 16\n}');
  });
});
