// Output folders named relative to the working directory: the nearest existing folder above a
// bare name such as "merged" is the working directory itself, ".".
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { checkOutputDir } from "../../lib/cli/common.js";
import { existingAncestor } from "../../lib/io/fs-errors.js";

const home = process.cwd();
afterEach(() => process.chdir(home));

describe("existingAncestor", () => {
  it("is '.' for a bare relative name, and stays relative or absolute as given", () => {
    const dir = mkdtempSync(join(tmpdir(), "lowrank-fs-"));
    try {
      process.chdir(dir);
      expect(existingAncestor("merged")).toBe(".");
      expect(existingAncestor("a/b/c")).toBe(".");
      expect(existingAncestor(join(dir, "merged"))).toBe(dir);
      // `lowrank merge --out merged` once failed here with "cannot read : does not exist"
      expect(() => checkOutputDir("--out", "merged")).not.toThrow();
    } finally {
      process.chdir(home);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
