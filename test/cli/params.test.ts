// `lowrank params` as a user runs it: the table, --json, and the errors (exit 2 for a bad command
// line, 1 for a missing folder), each on one line naming the flag.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readSafetensors } from "../../lib/io/safetensors.js";
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
    // the published totals (tied embeddings once); q_proj,v_proj (PEFT's default) at r=8: per layer
    // 8·(in + out) for each, q hidden→heads·head_dim, v hidden→kv_heads·head_dim
    ["smollm2-135m", "Llama (preset smollm2-135m): 134,515,008 parameters, 30 layers, hidden 576, 9 heads (3 key/value), vocab 49,152", 30 * 8 * (576 + 576 + 576 + 192)],
    ["qwen2.5-0.5b", "Qwen2 (preset qwen2.5-0.5b): 494,032,768 parameters, 24 layers, hidden 896, 14 heads (2 key/value), vocab 151,936", 24 * 8 * (896 + 896 + 896 + 128)],
    ["llama-3.2-1b", "Llama (preset llama-3.2-1b): 1,235,814,400 parameters, 16 layers, hidden 2048, 32 heads (8 key/value), vocab 128,256", 16 * 8 * (2048 + 2048 + 2048 + 512)],
  ])("--config %s prints the model's published total and LoRA on PEFT's default targets", async (preset, header, trainable) => {
    const r = await runCli(cli.main, ["params", "--config", preset, "--ranks", "8", "--json"]);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { model: { parameters: number }; rows: { targets: string; trainable: number; all: number }[] };
    expect(out.rows).toEqual([expect.objectContaining({ targets: "q_proj,v_proj", trainable, all: out.model.parameters + trainable })]);
    const table = await runCli(cli.main, ["params", "--config", preset, "--ranks", "8", "--target", "all-linear"]);
    expect(table.code, table.stderr).toBe(0);
    expect(table.stdout.split("\n")[0]).toBe(header);
  });

  it("--model reads a Llama-family config.json: the parameters its safetensors hold, and its module names as targets", async () => {
    const dir = "test/fixtures/chat-tiny";
    const r = await runCli(cli.main, ["params", "--model", dir, "--ranks", "2", "--target-sets", "q_proj,k_proj;all-linear", "--json"]);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { model: { modelType: string; parameters: number }; rows: { targets: string; modules: number; trainable: number }[] };
    const weights = readSafetensors(join(dir, "model.safetensors")).entries.reduce((n, e) => n + e.shape.reduce((a, b) => a * b, 1), 0);
    expect(out.model).toMatchObject({ modelType: "qwen3", parameters: weights });
    // hidden 32, 4 heads and 2 key/value heads of 16, intermediate 64, 2 layers
    expect(out.rows.map((x) => [x.targets, x.modules, x.trainable])).toEqual([
      ["q_proj,k_proj", 4, 2 * (2 * (32 + 64) + 2 * (32 + 32))],
      ["all-linear", 14, 2 * (2 * (32 + 64) + 2 * 2 * (32 + 32) + 2 * (64 + 32) + 2 * 2 * (32 + 64) + 2 * (64 + 32))],
    ]);
    const bad = await runCli(cli.main, ["params", "--model", dir, "--target", "c_attn"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/^lowrank params: --target: no module named "c_attn" in the model; modules LoRA can wrap: embed_tokens, q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj/);
  });

  it.each([
    [["--ranks", "4,x"], 2, /option '--ranks <list>' argument '4,x' is invalid\. "x" is not a rank/],
    [["--ranks", "8,8"], 2, /rank 8 is listed twice/],
    [["--target", "c_atn,c_proj"], 2, /^lowrank params: --target: no module named "c_atn" in the model; modules LoRA can wrap: .*c_attn/],
    [["--target-sets", "c_attn;;c_proj"], 2, /option '--target-sets <sets>' argument .* is invalid/],
    [["--target", "c_attn", "--target-sets", "c_attn"], 2, /cannot be used with/],
    [["--model", "test/fixtures/gpt2-tiny", "--config", "tiny"], 2, /option '--model <dir\|name>' cannot be used with option '--config <preset>'/],
    [["--config", "7b"], 2, /argument '7b' is invalid\. Allowed choices are 124m, 355m, 774m, 1558m, tiny, smollm2-135m, qwen2\.5-0\.5b, llama-3\.2-1b/],
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
