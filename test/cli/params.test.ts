// `lowrank params` as a user runs it: the table, --json, and the errors (exit 2 for a bad command
// line, 1 for a missing folder), each on one line naming the flag.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildCli, makeTinyModel, runCli } from "./helpers.js";

let cli: { main: string; cleanup: () => void };
let tmp: string;
beforeAll(async () => {
  cli = await buildCli();
  tmp = mkdtempSync(join(tmpdir(), "lowrank-params-"));
});
afterAll(() => {
  cli?.cleanup();
  rmSync(tmp, { recursive: true, force: true });
});

describe("lowrank params", () => {
  it("prints PEFT's numbers for GPT-2 124M in an aligned table", async () => {
    const r = await runCli(cli.main, ["params", "--config", "124m", "--ranks", "8,16", "--target-sets", "c_attn;c_attn,c_proj"]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const lines = r.stdout.trimEnd().split("\n");
    expect(lines[0]).toBe("GPT-2 (preset 124m): 124,439,808 parameters, 12 layers, n_embd 768, vocab 50,257");
    const table = lines.slice(2);
    expect(table).toHaveLength(6); // header, rule, 2 sets × 2 ranks
    expect(table[2]!.split(/\s+/)).toEqual(["c_attn", "8", "12", "294,912", "124,734,720", "0.2364", "1.39%", "1.18"]);
    expect(table[5]!.split(/\s+/)).toEqual(["c_attn,c_proj", "16", "36", "1,622,016", "126,061,824", "1.2867", "2.86%", "6.49"]);
    // aligned: every column ends at the same offset on every line (numbers are right-aligned)
    const ends = (line: string) => [...line.matchAll(/\S+/g)].map((m) => m.index! + m[0].length).slice(1);
    for (const line of table.slice(2)) expect(ends(line)).toEqual(ends(table[1]!)); // the rule under the header
  });

  it("--json gives one object per row, and --model reads only config.json", async () => {
    const dir = join(tmp, "model");
    makeTinyModel(dir);
    rmSync(join(dir, "model.safetensors")); // the weights are not needed
    const r = await runCli(cli.main, ["params", "--model", dir, "--ranks", "2", "--target", "all-linear", "--json"]);
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout) as { model: { source: string; parameters: number; nLayer: number }; rows: Record<string, unknown>[] };
    expect(out.model).toMatchObject({ source: dir, nLayer: 2 });
    // vocab 400, 128 positions, width 32, 2 layers: (400 + 128)·32 + 2·(4·32 + 12,704) + 64
    expect(out.model.parameters).toBe(528 * 32 + 2 * (128 + 32 * 96 + 96 + 32 * 32 + 32 + 32 * 128 + 128 + 128 * 32 + 32) + 64);
    // 2 layers × 4 matrices, r = 2: 2·(32+96) + 2·(32+32) + 2·(32+128) + 2·(128+32) per layer
    const trainable = 2 * (2 * (32 + 96) + 2 * (32 + 32) + 2 * (32 + 128) + 2 * (128 + 32));
    expect(out.rows).toEqual([expect.objectContaining({ targets: "all-linear", r: 2, modules: 8, trainable, all: out.model.parameters + trainable, adapterBytes: 4 * trainable })]);
  });

  it.each([
    [["--ranks", "4,x"], 2, /option '--ranks <list>' argument '4,x' is invalid\. "x" is not a rank/],
    [["--ranks", "8,8"], 2, /rank 8 is listed twice/],
    [["--target", "c_atn,c_proj"], 2, /^lowrank params: --target: no module named "c_atn" in the model; modules LoRA can wrap: .*c_attn/],
    [["--target-sets", "c_attn;;c_proj"], 2, /option '--target-sets <sets>' argument .* is invalid/],
    [["--target", "c_attn", "--target-sets", "c_attn"], 2, /cannot be used with/],
    [["--model", "test/fixtures/gpt2-tiny", "--config", "tiny"], 2, /option '--model <dir>' cannot be used with option '--config <preset>'/],
    [["--config", "7b"], 2, /argument '7b' is invalid\. Allowed choices are 124m, 355m, 774m, 1558m, tiny/],
    [["--model", "no/such/dir"], 1, /^lowrank params: --model no\/such\/dir: no such directory/],
    [["--model", "test/fixtures"], 1, /^lowrank params: --model test\/fixtures: no config\.json in it/],
    // sizes no memory holds: named in the user's terms, not by an internal function
    [["--ranks", "10000000000"], 1, /^lowrank params: r=10000000000 on c_attn,c_proj \(36 modules\): 1\.01e\+15 trainable parameters \(4\.06 PB of float32\), more than any memory holds; use a smaller rank$/],
  ])("refuses %j with exit code %i and one line", async (args, code, message) => {
    const r = await runCli(cli.main, ["params", ...args]);
    expect(r.code).toBe(code);
    expect(r.stdout).toBe("");
    const lines = r.stderr.trimEnd().split("\n");
    expect(lines[0]).toMatch(message);
    // the message, then at most the pointer to --help
    expect(lines.slice(1)).toEqual(lines.length > 1 ? ['(run "lowrank params --help" for usage)'] : []);
  });

  it("refuses a config.json whose sizes no memory holds, naming its fields", async () => {
    const dir = join(tmp, "absurd");
    mkdirSync(dir);
    writeFileSync(join(dir, "config.json"), JSON.stringify({ model_type: "gpt2", n_embd: 1e20, n_layer: 2, n_head: 2, vocab_size: 100, n_positions: 10 }));
    const r = await runCli(cli.main, ["params", "--model", dir]);
    expect(r.code).toBe(1);
    expect(r.stderr.trimEnd()).toBe(
      `lowrank params: --model ${dir}: ${join(dir, "config.json")}: GPT2Config: n_embd 100000000000000000000, n_layer 2, vocab_size 100, n_positions 10 make 2.40e+41 parameters, more than any memory holds; check these fields of config.json`,
    );
  });
});
