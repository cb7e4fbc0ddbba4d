// `lowrank svd` as a user runs it: an adapter (rank ≤ r, charts), a checkpoint pair with a known
// rank-2 update, --json, and one-line errors with exit code 2 (command line) or 1 (files).
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { getPeftModel, GPT2LMHeadModel, LoraConfig } from "../../lib/index.js";
import { readSafetensors, toTensor } from "../../lib/io/safetensors.js";
import { LlamaForCausalLM } from "../../lib/models/llama/model.js";
import { decodePng } from "../plot/decode-png.js";
import { makeRankTwoPair, TINY } from "../analysis/pair.js";
import { buildCli, runCli } from "./helpers.js";

const ADAPTER = "test/fixtures/peft-tiny/adapter-c_attn";
let cli: { main: string; cleanup: () => void };
let tmp: string;
beforeAll(async () => {
  cli = await buildCli();
  tmp = mkdtempSync(join(tmpdir(), "lowrank-svd-"));
  makeRankTwoPair(join(tmp, "tuned"));
});
afterAll(() => {
  cli?.cleanup();
  rmSync(tmp, { recursive: true, force: true });
});

/** The cells of the layer table's row for `layer`, keyed by the header's column names. */
function row(stdout: string, layer: string): Record<string, string> {
  const lines = stdout.split("\n");
  const h = lines.findIndex((l) => l.startsWith("layer "));
  // column boundaries from the rule line under the header
  const spans = [...lines[h + 1]!.matchAll(/-+/g)].map((m) => [m.index!, m.index! + m[0].length] as const);
  const cells = (line: string) => spans.map(([a, b], i) => line.slice(i === 0 ? a : a - 1, b).trim());
  const names = cells(lines[h]!.padEnd(lines[h + 1]!.length));
  const line = lines.find((l) => l.startsWith(`${layer} `));
  expect(line, `a row for ${layer}`).toBeDefined();
  return Object.fromEntries(cells(line!.padEnd(lines[h + 1]!.length)).map((c, i) => [names[i]!, c]));
}

describe("lowrank svd", () => {
  it("--adapter: rank ≤ r per layer, summary, verdict and charts that decode", async () => {
    const prefix = join(tmp, "adapter");
    const r = await runCli(cli.main, ["svd", "--adapter", ADAPTER, "--model", TINY, "--top-k", "1,4", "--out", prefix]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout.split("\n")[0]).toBe(`adapter ${ADAPTER}: 2 adapted matrices, r = 4, ΔW = s·B·A with s = 2`);
    const h0 = row(r.stdout, "h.0.attn.c_attn");
    expect(h0).toMatchObject({ shape: "192×64", r: "4", rank: "4", "top-4": "100.0%" });
    expect(Number(h0["‖ΔW‖/‖W‖"])).toBeGreaterThan(0);
    expect(r.stdout).toMatch(/^attn\.c_attn +2 +192×64 +4 /m); // the summary by module type
    expect(r.stdout).toContain("every ΔW has rank ≤ r, as LoRA's B·A guarantees");
    for (const kind of ["spectrum", "energy"]) {
      expect(r.stdout).toContain(`  ${prefix}-${kind}.{svg,png}`);
      expect(decodePng(readFileSync(`${prefix}-${kind}.png`)).width).toBe(1000);
      expect(readFileSync(`${prefix}-${kind}.svg`, "utf8")).toContain("<svg");
    }
  });

  it("--adapter on a Llama-family model: its module names, and ‖ΔW‖/‖W‖ against the base weights as the checkpoint stores them", async () => {
    const model = "test/fixtures/chat-tiny";
    const dir = join(tmp, "llama-adapter");
    // nn.Linear's init for A and B (not PEFT's B = 0), so ΔW is not zero
    const peft = getPeftModel(await LlamaForCausalLM.fromPretrained(model), new LoraConfig({ r: 2, loraAlpha: 4, targetModules: ["q_proj", "v_proj"], initLoraWeights: false }));
    await peft.savePretrained(dir);
    const lora = peft.loraLayers.get("model.layers.1.self_attn.v_proj")!;
    const [A, B] = lora.parametersOf("default").map((t) => ({ shape: t.shape, data: t.dataSync() }));
    peft.dispose();
    const r = await runCli(cli.main, ["svd", "--adapter", dir, "--model", model, "--json"]);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { layers: { name: string; shape: number[]; r: number; relativeNorm: number }[] };
    expect(out.layers.map((l) => l.name)).toEqual(["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj", "model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"]);
    // ‖s·B·A‖_F / ‖W‖_F of layer 1's v_proj (32 in, 2 key/value heads of 16 out), from the factors and the file
    const [out_, r_] = B!.shape as [number, number], in_ = A!.shape[1]!;
    let dw = 0;
    for (let i = 0; i < out_; i++) {
      for (let j = 0; j < in_; j++) {
        let v = 0;
        for (let k = 0; k < r_; k++) v += B!.data[i * r_ + k]! * A!.data[k * in_ + j]!;
        dw += (2 * v) ** 2; // s = alpha / r = 2
      }
    }
    const w = readSafetensors(join(model, "model.safetensors")).entries.find((e) => e.name === "model.layers.1.self_attn.v_proj.weight")!;
    const ww = Float32Array.from(toTensor(w).dataSync()).reduce((s, x) => s + x * x, 0);
    const layer = out.layers.at(-1)!;
    expect(layer.shape).toEqual([out_, in_]);
    expect(layer.relativeNorm).toBeCloseTo(Math.sqrt(dw / ww), 5);
  });

  it("--base/--tuned: finds the known rank-2 update of each c_attn (2 nonzero singular values, r99 = 2)", async () => {
    const r = await runCli(cli.main, ["svd", "--base", TINY, "--tuned", join(tmp, "tuned"), "--out", join(tmp, "full")]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("2 changed matrices, 8 unchanged");
    for (const layer of ["h.0.attn.c_attn", "h.1.attn.c_attn"]) expect(row(r.stdout, layer)).toMatchObject({ shape: "192×64", rank: "2", "top-2": "100.0%", r99: "2" });
    expect(r.stdout).toContain("99% needs a median of 2 of 64 directions");
    expect(existsSync(join(tmp, "full-spectrum.png")) && existsSync(join(tmp, "full-energy.svg"))).toBe(true);
  });

  it("says when an adapter is untrained (B = 0)", async () => {
    const dir = join(tmp, "zero");
    const peft = getPeftModel(GPT2LMHeadModel.fromPretrainedSync(TINY), new LoraConfig({ r: 2, targetModules: ["c_proj"], fanInFanOut: true }));
    peft.savePretrainedSync(dir);
    peft.dispose();
    const r = await runCli(cli.main, ["svd", "--adapter", dir]);
    expect(r.code).toBe(0);
    expect(row(r.stdout, "h.1.mlp.c_proj")).toMatchObject({ r: "2", "‖ΔW‖": "0.000", rank: "0" });
    expect(r.stdout).toContain("every ΔW is exactly zero: B = 0, as LoRA initialises it, so this adapter has not been trained.");
  });

  it("--json: per layer values, ranks and energies by k", async () => {
    const r = await runCli(cli.main, ["svd", "--base", TINY, "--tuned", join(tmp, "tuned"), "--target", "c_attn", "--top-k", "1,2", "--json"]);
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout) as { mode: string; layers: { name: string; shape: number[]; numericalRank: number; rankFor99: number; energy: Record<string, number>; singularValues: number[] }[]; unchanged: string[]; charts: string[] };
    expect(out.mode).toBe("checkpoints");
    expect(out.layers.map((l) => [l.name, l.shape, l.numericalRank, l.rankFor99])).toEqual([
      ["transformer.h.0.attn.c_attn", [192, 64], 2, 2], ["transformer.h.1.attn.c_attn", [192, 64], 2, 2],
    ]);
    expect(out.layers[0]!.singularValues).toHaveLength(64);
    expect(out.layers[0]!.energy["2"]).toBeCloseTo(1, 12);
    expect(out.unchanged).toEqual([]); // --target c_attn: the other matrices were not looked at
    expect(out.charts).toEqual([]);
  });

  it.each([
    [[], 2, /^lowrank svd: give --adapter DIR, or --base DIR and --tuned DIR$/],
    [["--base", TINY], 2, /^lowrank svd: --base needs --tuned/],
    [["--adapter", ADAPTER, "--base", TINY], 2, /option '--adapter <dir>' cannot be used with option '--base <dir>'/],
    [["--base", TINY, "--tuned", TINY, "--model", TINY], 2, /--model goes with --adapter/],
    [["--adapter", ADAPTER, "--top-k", "1,0"], 2, /argument '1,0' is invalid\. "0" is not a k/],
    [["--adapter", ADAPTER, "--target", "c_fc"], 2, /^lowrank svd: --target c_fc: the adapter adapts none of these; it adapts attn\.c_attn$/],
    [["--adapter", "no/such/adapter"], 1, /^lowrank svd: --adapter no\/such\/adapter: no such directory$/],
    [["--adapter", TINY], 1, /^lowrank svd: --adapter .*gpt2-tiny: no adapter_config\.json in it; is it a PEFT adapter folder\?$/],
    [["--adapter", ADAPTER, "--model", "test/fixtures/peft-tiny"], 1, /^lowrank svd: --model test\/fixtures\/peft-tiny: no weights in test\/fixtures\/peft-tiny: expected model\.safetensors/],
    [["--base", TINY, "--tuned", TINY], 1, /no weight matrix differs/],
  ])("refuses %j with exit code %i and one line", async (args, code, message) => {
    const r = await runCli(cli.main, ["svd", ...args]);
    expect(r.code).toBe(code);
    expect(r.stdout).toBe("");
    const lines = r.stderr.trimEnd().split("\n");
    expect(lines[0]).toMatch(message);
    expect(lines.slice(1)).toEqual(lines.length > 1 ? ['(run "lowrank svd --help" for usage)'] : []);
  });
});
