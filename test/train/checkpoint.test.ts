import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { atomicTempWriterPid } from "../../lib/io/atomic.js";
import { removeStaleTemporaries } from "../../lib/train/checkpoint.js";

describe("checkpoint temporaries", () => {
  it("removes what dead writers left (checkpoint folders and atomic-write files), keeps live ones and checkpoints", () => {
    const dir = mkdtempSync(join(tmpdir(), "lowrank-ckpt-"));
    try {
      const dead = 2 ** 22 + 12345; // above Linux's default pid_max: no such process
      mkdirSync(join(dir, "step-4"));
      writeFileSync(join(dir, "latest"), "step-4");
      mkdirSync(join(dir, `.tmp-${dead}-0a1b2c3d-step-5`));
      writeFileSync(join(dir, `.latest.${dead}.0123456789ab.tmp`), "step-");
      writeFileSync(join(dir, `.latest.${process.pid}.0123456789ab.tmp`), "step-");
      expect(atomicTempWriterPid(`.latest.${dead}.0123456789ab.tmp`)).toBe(dead);
      expect(atomicTempWriterPid("latest")).toBeNull();
      removeStaleTemporaries(dir);
      expect(readdirSync(dir).sort()).toEqual([`.latest.${process.pid}.0123456789ab.tmp`, "latest", "step-4"]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
