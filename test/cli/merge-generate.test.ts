// `lowrank merge` and `lowrank generate` on an adapter trained by `lowrank train`: the merged
// checkpoint loads and computes the adapter's logits; generation prints what generate() produces,
// streaming the text token by token.
import { copyFileSync, existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  copyInto, generate, Generator, GPT2LMHeadModel, GPT2Tokenizer, noGrad, PeftModel, tensor, tidy,
} from "../../lib/index.js";
import { TextStreamer } from "../../lib/models/streamer.js";
import { runCli, workspace } from "./helpers.js";

let ws: Awaited<ReturnType<typeof workspace>>;
let adapter: string;
beforeAll(async () => {
  ws = await workspace("lowrank-cli-merge-");
  adapter = join(ws.dir, "adapter");
  const r = await runCli(ws.main, ["train", "--model", ws.model, "--data", ws.data, "--out", adapter, "--template", ws.template, "--steps", "8", "--lr", "2e-2", "--quiet"]);
  expect(r.code, r.stderr).toBe(0);
});
afterAll(() => ws?.cleanup());

const logitsOf = (model: { forward: GPT2LMHeadModel["forward"] }, ids: number[][]) =>
  noGrad(() => tidy(() => model.forward({ inputIds: tensor(Int32Array.from(ids.flat()), { shape: [ids.length, ids[0]!.length] }) }).logits.dataSync() as Float32Array));

describe("lowrank merge", () => {
  it("writes a checkpoint that loads with GPT2LMHeadModel.fromPretrained and gives the adapter's logits", async () => {
    const out = join(ws.dir, "merged");
    const r = await runCli(ws.main, ["merge", "--model", ws.model, "--adapter", adapter, "--out", out]);
    expect(r.code, r.stderr).toBe(0);
    const m = /^check on 4 sequences of 32 tokens: merged vs base\+adapter logits differ by at most (\S+) \(tolerance (\S+)\); the adapter itself moves them by up to (\S+)$/m.exec(r.stdout);
    expect(m, r.stdout).not.toBeNull();
    const [diff, tolerance, effect] = [Number(m![1]), Number(m![2]), Number(m![3])];
    expect(diff).toBeLessThanOrEqual(tolerance);
    expect(effect).toBeGreaterThan(100 * diff); // the check can tell a merged adapter from a missing one
    expect(r.stdout).toContain(`merged model: ${join(out, "model.safetensors")} (with tokenizer.json, vocab.json, merges.txt)`);

    const merged = GPT2LMHeadModel.fromPretrainedSync(out).eval();
    const peft = PeftModel.fromPretrainedSync(GPT2LMHeadModel.fromPretrainedSync(ws.model), adapter).eval();
    const tok = GPT2Tokenizer.fromPretrained(out);
    const ids = [tok.encode("Q: Move the first word to the end. net,button,moon\nA: ").slice(0, 20), tok.encode("a completely different sentence, with commas").slice(0, 20)];
    const want = logitsOf(peft, ids), got = logitsOf(merged, ids);
    let maxDiff = 0, scale = 0;
    for (let i = 0; i < want.length; i++) [maxDiff, scale] = [Math.max(maxDiff, Math.abs(got[i]! - want[i]!)), Math.max(scale, Math.abs(want[i]!))];
    expect(maxDiff).toBeLessThan(1e-3 * Math.max(1, scale));
    // and not the base model's
    const base = GPT2LMHeadModel.fromPretrainedSync(ws.model).eval();
    const plain = logitsOf(base, ids);
    expect(Math.max(...plain.map((v, i) => Math.abs(v - want[i]!)))).toBeGreaterThan(100 * maxDiff);
    for (const m of [merged, peft, base]) m.dispose();
  });

  it("refuses an adapter with one NaN in lora_B, with or without --safe, naming the adapter, layer and tensor; nothing is written", async () => {
    const broken = join(ws.dir, "broken");
    const peft = PeftModel.fromPretrainedSync(GPT2LMHeadModel.fromPretrainedSync(ws.model), adapter, { isTrainable: true });
    // One NaN in a row of B that feeds a query: every attention score of that head is NaN (the
    // attention once turned such rows into zeros, and the merge check passed).
    const [, B] = peft.loraLayers.get("transformer.h.1.attn.c_attn")!.parametersOf("default");
    noGrad(() => tidy(() => copyInto(B!, tensor(Float32Array.from(B!.dataSync(), (v, i) => (i === 5 * B!.shape[1]! ? NaN : v)), { shape: B!.shape }))));
    peft.savePretrainedSync(broken);
    peft.dispose();
    for (const [out, extra] of [["m1", ["--safe"]], ["m2", []]] as const) {
      const r = await runCli(ws.main, ["merge", "--model", ws.model, "--adapter", broken, "--out", join(ws.dir, out), ...extra]);
      expect(r.code, r.stderr).toBe(1);
      expect(r.stderr.trimEnd()).toMatch(
        /^lowrank merge: the base model with the adapter gives NaN\/Inf logits on the check sequences: adapter "default" is broken: transformer\.h\.1\.attn\.c_attn\.lora_B \(layer 1\) holds 1 NaN of its \d+ values; nothing was written$/,
      );
      expect(() => readFileSync(join(ws.dir, out, "model.safetensors"))).toThrow(/ENOENT/);
    }
    const gen = await runCli(ws.main, ["generate", "--model", ws.model, "--adapter", broken, "--prompt", "Q: hello", "--max-new-tokens", "4"]);
    expect(gen.code).toBe(1);
    expect(gen.stderr).toMatch(/adapter "default" is broken: transformer\.h\.1\.attn\.c_attn\.lora_B \(layer 1\) holds 1 NaN/);
  });

  it("refuses a base model with NaN weights, naming the base model and the tensor (merge and generate)", async () => {
    const brokenBase = join(ws.dir, "broken-base");
    const base = GPT2LMHeadModel.fromPretrainedSync(ws.model);
    const w = base.transformer.h.at(0)!.mlp.c_fc.weight;
    noGrad(() => tidy(() => copyInto(w, tensor(Float32Array.from(w.dataSync(), (v, i) => (i === 7 ? NaN : v)), { shape: w.shape }))));
    base.savePretrainedSync(brokenBase);
    base.dispose();
    for (const f of ["tokenizer.json", "vocab.json", "merges.txt"]) if (existsSync(join(ws.model, f))) copyFileSync(join(ws.model, f), join(brokenBase, f));
    const r = await runCli(ws.main, ["merge", "--model", brokenBase, "--adapter", adapter, "--out", join(ws.dir, "m4"), "--safe"]);
    expect(r.code).toBe(1);
    expect(r.stderr.trimEnd()).toMatch(/^lowrank merge: the base model alone gives NaN\/Inf logits on the check sequences: the base model is broken: transformer\.h\.0\.mlp\.c_fc\.weight \(layer 0\) holds 1 NaN of its \d+ values; nothing was written$/);
    const gen = await runCli(ws.main, ["generate", "--model", brokenBase, "--prompt", "Q: hello", "--max-new-tokens", "4"]);
    expect(gen.code).toBe(1);
    expect(gen.stderr).toMatch(/the base model is broken: transformer\.h\.0\.mlp\.c_fc\.weight \(layer 0\) holds 1 NaN/);
  });

  it("errors: a missing adapter (1), --out equal to --model (2)", async () => {
    const missing = join(ws.dir, "no-adapter");
    const a = await runCli(ws.main, ["merge", "--model", ws.model, "--adapter", missing, "--out", join(ws.dir, "m3")]);
    expect(a.code).toBe(1);
    expect(a.stderr.trimEnd()).toBe(`lowrank merge: --adapter ${missing}: PeftModel.fromPretrained: adapter directory ${missing} does not exist`);
    const b = await runCli(ws.main, ["merge", "--model", ws.model, "--adapter", adapter, "--out", ws.model]);
    expect(b.code).toBe(2);
    expect(b.stderr).toMatch(/^lowrank merge: --out must differ from --model \(the base checkpoint would be overwritten\)$/m);
  });
});

describe("lowrank generate", () => {
  it("prints the text generate() produces, with and without the adapter and template", async () => {
    const tok = GPT2Tokenizer.fromPretrained(ws.model);
    const expected = (model: GPT2LMHeadModel, prompt: string) =>
      tok.decode(generate(model, tok.encode(prompt), { maxNewTokens: 12, eosTokenId: tok.eosTokenId, generator: new Generator(0) }), { skipSpecialTokens: true }) + "\n";

    const plain = await runCli(ws.main, ["generate", "--model", ws.model, "--prompt", "Q: hello", "--max-new-tokens", "12"]);
    expect(plain.code, plain.stderr).toBe(0);
    const base = GPT2LMHeadModel.fromPretrainedSync(ws.model);
    expect(plain.stdout).toBe(expected(base, "Q: hello"));
    base.dispose();

    const withAdapter = await runCli(ws.main, [
      "generate", "--model", ws.model, "--adapter", adapter, "--template", ws.template, "--prompt", "Move the first word to the end.", "--input", "net,button,moon", "--max-new-tokens", "12",
    ]);
    expect(withAdapter.code, withAdapter.stderr).toBe(0);
    const peft = PeftModel.fromPretrainedSync(GPT2LMHeadModel.fromPretrainedSync(ws.model), adapter);
    expect(withAdapter.stdout).toBe(expected(peft.model, "Q: Move the first word to the end. net,button,moon\nA: "));
    peft.dispose();
  });

  it("samples reproducibly from --seed, and reports bad options", async () => {
    const run = (seed: string) => runCli(ws.main, ["generate", "--model", ws.model, "--prompt", "Q: hi", "--temperature", "1.5", "--top-k", "50", "--seed", seed, "--max-new-tokens", "16"]);
    const [a, b] = await Promise.all([run("1"), run("1")]);
    expect(a.code).toBe(0);
    expect(a.stdout).toBe(b.stdout);
    const bad = await runCli(ws.main, ["generate", "--model", ws.model, "--prompt", "x", "--input", "y"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/^lowrank generate: --input needs a --template \(e\.g\. --template alpaca\) to place it in the prompt$/m);
    const help = await runCli(ws.main, ["generate", "--help"]);
    expect(help.code).toBe(0);
    for (const flag of ["--model", "--adapter", "--prompt", "--max-new-tokens", "--temperature", "--top-k", "--top-p", "--seed", "--template"]) expect(help.stdout).toContain(flag);
  });

  it("streams: each token's text is written as it comes, a split multi-byte character once complete", () => {
    const tok = GPT2Tokenizer.fromPretrained(ws.model);
    const ids = tok.encode("ab é€");
    const chunks: string[] = [];
    const stream = new TextStreamer(tok, (t) => chunks.push(t));
    const afterEach: number[] = [];
    for (const id of ids) {
      stream.push(id);
      afterEach.push(chunks.length);
    }
    stream.end();
    expect(chunks.join("")).toBe("ab é€");
    // "é" (2 bytes) and "€" (3 bytes) span several byte tokens: nothing half is ever written
    expect(chunks.every((c) => !c.includes("\uFFFD"))).toBe(true);
    expect(ids.length).toBeGreaterThan(chunks.length);
    expect(afterEach[0]).toBe(1); // the first token is written at once
  });
});
