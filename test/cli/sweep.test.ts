// `lowrank sweep` as a user runs it, on the tiny model: two ranks trained, the table, summary.json,
// the loss-curve plots; a rank is exactly `lowrank train --r <r>`; Ctrl-C and --resume; errors.
import { existsSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { decodePng } from "../plot/decode-png.js";
import { CLI_CWD, runCli, startCli, workspace } from "./helpers.js";

let ws: Awaited<ReturnType<typeof workspace>>;
beforeAll(async () => {
  ws = await workspace("lowrank-cli-sweep-");
});
afterAll(() => ws?.cleanup());

const common = (...more: string[]) => ["--model", ws.model, "--data", ws.data, "--template", ws.template, "--lr", "1e-2", "--seed", "3", ...more];

interface Summary {
  ranks: number[];
  results: { r: number; alpha: number; out: string; trainable: number; all: number; steps: number; finalLoss: number; lastLoss: number; evalLoss: number; trainSeconds: number; tokens: number; tokensPerSec: number }[];
  charts: string[];
}

describe("lowrank sweep", () => {
  let out: string;
  beforeAll(() => {
    out = join(ws.dir, "sweep");
  });

  it("trains one adapter per rank and compares them in a table, summary.json and loss curves", async () => {
    const r = await runCli(ws.main, ["sweep", ...common("--out", out, "--ranks", "2,8", "--steps", "6", "--eval-every", "3", "--quiet")]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const summary = JSON.parse(readFileSync(join(out, "summary.json"), "utf8")) as Summary;
    expect(summary.ranks).toEqual([2, 8]);
    for (const x of summary.results) {
      expect(existsSync(join(out, `rank-${x.r}`, "adapter_model.safetensors"))).toBe(true);
      expect(x.out).toBe(join(out, `rank-${x.r}`));
      expect(x.alpha).toBe(32);
      expect(x.steps).toBe(6);
      for (const v of [x.finalLoss, x.lastLoss, x.evalLoss, x.tokensPerSec]) expect(Number.isFinite(v) && v > 0).toBe(true);
      // the two layers' c_attn (32 → 96) and attn.c_proj and mlp.c_proj (32 → 32, 128 → 32): r·(in + out) each
      expect(x.trainable).toBe(2 * x.r * (32 + 96 + 32 + 32 + 128 + 32));
    }
    // the table: one row per rank, aligned under its header
    const lines = r.stdout.trimEnd().split("\n");
    const head = lines.findIndex((l) => /^ *r +alpha +trainable +trainable% +steps +train loss +eval loss +time +tok\/s$/.test(l));
    expect(head).toBeGreaterThanOrEqual(0);
    const [r2, r8] = summary.results;
    expect(lines[head + 2]!.trim().split(/ +/).slice(0, 7)).toEqual(["2", "32", r2!.trainable.toLocaleString("en-US"), expect.stringMatching(/^\d+\.\d{4}$/), "6", r2!.finalLoss.toFixed(4), r2!.evalLoss.toFixed(4)]);
    expect(lines[head + 3]!.trim().split(/ +/)[0]).toBe("8");
    expect(lines[head + 3]!.length).toBe(lines[head + 1]!.length);
    expect(r8!.trainable).toBe(4 * r2!.trainable);
    expect(r.stdout).toContain(`summary: ${join(out, "summary.json")}`);
    // the plots: train loss and eval loss, one curve per rank; the PNGs decode
    expect(summary.charts).toEqual(["loss-curves.svg", "loss-curves.png", "eval-loss-curves.svg", "eval-loss-curves.png"].map((f) => join(out, f)));
    for (const png of summary.charts.filter((p) => p.endsWith(".png"))) expect(decodePng(readFileSync(png)).width).toBe(900);
    const svg = readFileSync(join(out, "loss-curves.svg"), "utf8");
    expect(svg).toContain("r=2");
    expect(svg).toContain("r=8");
  });

  it("trains each rank exactly as lowrank train --r <r> does", async () => {
    const single = join(ws.dir, "single");
    const r = await runCli(ws.main, ["train", ...common("--out", single, "--r", "2", "--steps", "6", "--eval-every", "3", "--quiet")]);
    expect(r.code).toBe(0);
    expect(readFileSync(join(single, "adapter_model.safetensors")).equals(readFileSync(join(out, "rank-2", "adapter_model.safetensors")))).toBe(true);
  });

  it("refuses to overwrite a sweep; --resume keeps finished ranks and trains the new ones", async () => {
    const again = await runCli(ws.main, ["sweep", ...common("--out", out, "--ranks", "2,8,4", "--steps", "6")]);
    expect(again.code).toBe(2);
    expect(again.stderr.split("\n")[0]).toBe(`lowrank sweep: --out ${out} already holds runs for rank 2, 8; add --resume to continue the sweep, or choose another --out`);
    const before = readFileSync(join(out, "rank-8", "adapter_model.safetensors"));
    const r = await runCli(ws.main, ["sweep", ...common("--out", out, "--ranks", "2,8,4", "--steps", "6", "--eval-every", "3", "--resume")]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`rank 8 (2/3): finished in an earlier run, kept (${join(out, "rank-8")})`);
    expect(r.stdout).toContain(`== rank 4 (3/3), alpha 32: ${join(out, "rank-4")}`);
    expect(readFileSync(join(out, "rank-8", "adapter_model.safetensors")).equals(before)).toBe(true);
    const summary = JSON.parse(readFileSync(join(out, "summary.json"), "utf8")) as Summary;
    expect(summary.results.map((x) => x.r)).toEqual([2, 8, 4]);
  });

  it("Ctrl-C stops at a checkpoint with exit code 130 and the command line that resumes the sweep", async () => {
    const dir = join(ws.dir, "interrupted");
    const args = ["sweep", ...common("--out", dir, "--ranks", "2,4", "--steps", "40", "--log-every", "1", "--checkpoint-every", "5")];
    let sent = false;
    const run = startCli(ws.main, args, (text, child) => {
      if (!sent && text.includes("== rank 4") && /step 2\/40/.test(text.slice(text.indexOf("== rank 4")))) {
        sent = true;
        child.kill("SIGINT");
      }
    });
    const r = await run.done;
    expect(r.code).toBe(130);
    expect(r.stdout).toMatch(/^interrupted at step \d+\/40/m);
    expect(r.stdout).toContain(`resume with: node ${relative(CLI_CWD, ws.main)} ${args.join(" ")} --resume\n`);
    expect(existsSync(join(dir, "summary.json"))).toBe(false);
    const resumed = await runCli(ws.main, [...args, "--resume"]);
    expect(resumed.code).toBe(0);
    expect(resumed.stdout).toContain("rank 2 (1/2): finished in an earlier run, kept");
    expect(resumed.stdout).toMatch(/resuming at step \d+ from /);
    const summary = JSON.parse(readFileSync(join(dir, "summary.json"), "utf8")) as Summary;
    expect(summary.results.map((x) => [x.r, x.steps])).toEqual([[2, 40], [4, 40]]);
  });

  it.each([
    [["--ranks", "4,x"], 2, /option '--ranks <list>' argument '4,x' is invalid\. "x" is not a rank/],
    [["--ranks", "1,2,3,4,5,6,7,8,9,10,11"], 2, /^lowrank sweep: --ranks: at most 10 ranks per sweep/],
    [["--alpha", "16", "--alpha-ratio", "2"], 2, /option '--alpha-ratio <x>' cannot be used with option '--alpha <x>'/],
    [["--steps", "2", "--epochs", "1"], 2, /^lowrank sweep: give --steps or --epochs, not both$/],
  ])("refuses %j with exit code %i and one line", async (args, code, message) => {
    const r = await runCli(ws.main, ["sweep", ...common("--out", join(ws.dir, "bad")), ...args]);
    expect(r.code).toBe(code);
    expect(r.stderr.split("\n")[0]).toMatch(message);
    expect(r.stderr.trimEnd().split("\n").slice(1)).toEqual(['(run "lowrank sweep --help" for usage)']);
  });

  it("names the missing model folder and data file (exit code 1)", async () => {
    const noModel = await runCli(ws.main, ["sweep", "--model", join(ws.dir, "nope"), "--data", ws.data, "--out", join(ws.dir, "bad")]);
    expect(noModel.code).toBe(1);
    expect(noModel.stderr.trimEnd()).toBe(`lowrank sweep: --model ${join(ws.dir, "nope")}: no such directory`);
    const noData = await runCli(ws.main, ["sweep", ...common("--out", join(ws.dir, "bad2"), "--steps", "2"), "--data", join(ws.dir, "nope.jsonl")]);
    expect(noData.code).toBe(1);
    expect(noData.stderr.trimEnd().split("\n")[0]).toMatch(/nope\.jsonl/);
  });
});
