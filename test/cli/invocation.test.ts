// The command the CLI prints to continue a run starts the way that works where it was run:
// `npx lowrank` under npm/npx, `lowrank` for a global install (the `lowrank` on PATH is this
// script), `node <script>` otherwise.
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { cliInvocation } from "../../lib/cli/invocation.js";

const dir = mkdtempSync(join(tmpdir(), "lowrank-invocation-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const script = join(dir, "pkg", "dist", "cli", "main.js");
mkdirSync(join(dir, "pkg", "dist", "cli"), { recursive: true });
writeFileSync(script, "");

describe("cliInvocation", () => {
  it("says npx lowrank when run through npm or npx", () => {
    expect(cliInvocation({ npm_execpath: "/usr/lib/node_modules/npm/bin/npx-cli.js", PATH: "" }, script, dir)).toEqual(["npx", "lowrank"]);
    expect(cliInvocation({ npm_lifecycle_event: "demo", PATH: "" }, script, dir)).toEqual(["npx", "lowrank"]);
    const bin = join(dir, "app", "node_modules", ".bin");
    mkdirSync(bin, { recursive: true });
    symlinkSync(script, join(bin, "lowrank"));
    expect(cliInvocation({ PATH: "" }, join(bin, "lowrank"), dir)).toEqual(["npx", "lowrank"]);
  });

  it("says lowrank when the lowrank on PATH is this script (a global install)", () => {
    const globalBin = join(dir, "global-bin");
    mkdirSync(globalBin);
    symlinkSync(script, join(globalBin, "lowrank"));
    expect(cliInvocation({ PATH: `/nonexistent:${globalBin}` }, join(globalBin, "lowrank"), "/")).toEqual(["lowrank"]);
    // a lowrank on PATH that is another installation does not count
    const otherBin = join(dir, "other-bin");
    mkdirSync(otherBin);
    writeFileSync(join(otherBin, "lowrank"), "");
    expect(cliInvocation({ PATH: otherBin }, script, dir)).toEqual(["node", join("pkg", "dist", "cli", "main.js")]);
  });

  it("says node <script> otherwise, relative to the working directory when below it", () => {
    expect(cliInvocation({ PATH: "" }, script, dir)).toEqual(["node", join("pkg", "dist", "cli", "main.js")]);
    expect(cliInvocation({ PATH: "" }, script, join(dir, "elsewhere"))).toEqual(["node", script]);
  });
});
