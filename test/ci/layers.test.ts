// The layer check of .ci/run (npm run check:layers: dependency-cruiser with .dependency-cruiser.cjs)
// run on small planted trees, to show it fails on an upward import, on a cycle made only of
// type imports, and on a folder the layer table does not place, and passes a tree that is clean.
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { afterAll, describe, expect, it } from "vitest";

const ROOT = resolve(import.meta.dirname, "../..");
const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

/** Writes `files` (path -> source) under a fresh folder and runs the layer check there. */
function checkTree(files: Record<string, string>): { status: number | null; output: string } {
  const dir = mkdtempSync(join(tmpdir(), "lowrank-layers-"));
  dirs.push(dir);
  const all = { "tsconfig.json": JSON.stringify({ compilerOptions: { module: "NodeNext", moduleResolution: "NodeNext", strict: true } }), ...files };
  for (const [path, text] of Object.entries(all)) {
    mkdirSync(dirname(join(dir, path)), { recursive: true });
    writeFileSync(join(dir, path), text);
  }
  const run = spawnSync(
    process.execPath,
    [join(ROOT, "node_modules/dependency-cruiser/bin/dependency-cruise.mjs"), "lib", "--config", join(ROOT, ".dependency-cruiser.cjs")],
    { cwd: dir, encoding: "utf8" },
  );
  return { status: run.status, output: run.stdout + run.stderr };
}

describe("layer check", () => {
  it("passes a tree that imports only downward", () => {
    const r = checkTree({
      "lib/tensor/tensor.ts": "export class Tensor {}\n",
      "lib/ops/add.ts": 'import { Tensor } from "../tensor/tensor.js";\nexport const add = (a: Tensor) => a;\n',
      "lib/nn/linear.ts": 'import { add } from "../ops/add.js";\nexport const linear = add;\n',
    });
    expect(r.output).toMatch(/no dependency violations found/);
    expect(r.status).toBe(0);
  });

  it("fails on an upward import, a type-only cycle and an unplaced folder", () => {
    const r = checkTree({
      // upward: the tensor layer reaching into nn
      "lib/tensor/tensor.ts": 'import { linear } from "../nn/linear.js";\nexport const t = linear;\n',
      "lib/nn/linear.ts": "export const linear = 1;\n",
      // a cycle inside ops, one side of it a type-only import
      "lib/ops/a.ts": 'import type { B } from "./b.js";\nexport interface A { b?: B }\n',
      "lib/ops/b.ts": 'import type { A } from "./a.js";\nexport interface B { a?: A }\n',
      // a folder the layer table does not know
      "lib/misc/x.ts": 'import { linear } from "../nn/linear.js";\nexport const x = linear;\n',
    });
    expect(r.status).not.toBe(0);
    expect(r.output).toMatch(/tensor-imports-upward: lib\/tensor\/tensor\.ts → lib\/nn\/linear\.ts/);
    expect(r.output).toMatch(/no-circular: lib\/ops\/(a|b)\.ts →\s+lib\/ops\/(a|b)\.ts/);
    expect(r.output).toMatch(/not-in-a-layer: lib\/misc\/x\.ts/);
  });
});
