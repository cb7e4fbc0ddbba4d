// Prompt templates given by name or by file path: resolveTemplate reads the file (text, or JSON
// with both variants) rather than taking the path for template text.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { ALPACA_TEMPLATE, formatPrompt, resolveTemplate } from "../../lib/train/template.js";

const dir = mkdtempSync(join(tmpdir(), "lowrank-template-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const file = (name: string, text: string) => {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
};

describe("resolveTemplate with a name or a file", () => {
  it("reads a text template file given its path", () => {
    const path = file("t.txt", "### Q:\n{instruction}\n{input}\n### A:\n");
    expect(formatPrompt(resolveTemplate(path), "Sort.", "b,a")).toBe("### Q:\nSort.\nb,a\n### A:\n");
  });

  it("reads a JSON template file with both variants", () => {
    const path = file("t.json", JSON.stringify({ withInput: "[{instruction}|{input}]", withoutInput: "[{instruction}]" }));
    const t = resolveTemplate(path);
    expect(formatPrompt(t, "x")).toBe("[x]");
    expect(formatPrompt(t, "x", "y")).toBe("[x|y]");
  });

  it('takes "alpaca" for the Alpaca template', () => {
    expect(resolveTemplate("alpaca")).toEqual(resolveTemplate(ALPACA_TEMPLATE));
  });

  it("names the file when its content is not a template", () => {
    const noPlaceholder = file("bad.txt", "just text");
    expect(() => resolveTemplate(noPlaceholder)).toThrow(`prompt template file ${noPlaceholder}: withInput has no {instruction} placeholder: "just text"`);
    const badJson = file("bad.json", "{nope");
    expect(() => resolveTemplate(badJson)).toThrow(new RegExp(`^prompt template file ${badJson}: not valid JSON \\(.*\\); a JSON template is`));
  });
});
