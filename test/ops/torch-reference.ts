// PyTorch's numbers for the row-wise ops, written by test/fixtures/make_fixtures.py into
// test/fixtures/ops/reference.json. A missing file is an error, not a skip: these checks are what
// ties the kernels to PyTorch.
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { tensor } from "../../lib/index.js";

const fixturePath = join(dirname(fileURLToPath(import.meta.url)), "../fixtures/ops/reference.json");

/** The fixture set; throws (naming the file and how to make it) when it is missing. */
export function torchReference(): Record<string, any> {
  if (!existsSync(fixturePath))
    throw new Error(`${fixturePath} is missing: run \`python3 test/fixtures/make_fixtures.py ops\` (needs torch) or restore it from git`);
  return JSON.parse(readFileSync(fixturePath, "utf8"));
}

// Numbers are float32 values written in shortest form; "NaN" is a string.
export const flat = (v: unknown): number[] => (Array.isArray(v) ? v.flatMap(flat) : [v === "NaN" ? NaN : Number(v)]);
export const fromJson = (v: unknown, shape?: number[]) => {
  const values = flat(v);
  return tensor(values, { shape: shape ?? [values.length] });
};
