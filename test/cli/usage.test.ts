// The command line's edges: what works without the native addon, and the exit code 2 for every
// kind of bad command line (README: 0 done, 1 error, 2 bad command line).
import { spawnSync } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cudaAvailable, GPT2Config, GPT2LMHeadModel, getPeftModel, LoraConfig } from "../../lib/index.js";
import { buildCli, demoLines, makeTinyModel, SHORT_TEMPLATE } from "./helpers.js";

const ROOT = resolve(import.meta.dirname, "../..");
let cli: { main: string; cleanup: () => void };
let tmp: string;
beforeAll(async () => {
  cli = await buildCli();
  tmp = mkdtempSync(join(tmpdir(), "lowrank-usage-"));
});
afterAll(() => {
  cli?.cleanup();
  rmSync(tmp, { recursive: true, force: true });
});

function run(args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, [cli.main, ...args], { cwd: ROOT, encoding: "utf8", env: { ...process.env, LOWRANK_NUM_THREADS: "1", ...env } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe("without the native addon", () => {
  // LOWRANK_BUILD_DIR (README) points the loader at a build folder: an empty one has no addon, one
  // with a broken file has an addon that cannot be loaded.
  const missing = () => ({ LOWRANK_BUILD_DIR: join(tmp, "no-build") });
  const broken = () => {
    const dir = join(tmp, "broken-build");
    mkdirSync(join(dir, "Release"), { recursive: true });
    writeFileSync(join(dir, "Release", "lowrank.node"), "not a shared library");
    return { LOWRANK_BUILD_DIR: dir, LOWRANK_DEVICE: "cpu" };
  };

  it("--help, --version and the shape-only params still work", () => {
    const env = missing();
    const help = run(["--help"], env);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^Usage: lowrank/);
    const version = run(["--version"], env);
    expect(version.code).toBe(0);
    expect(version.stdout.trim()).toBe((JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string }).version);
    const params = run(["params", "--config", "124m", "--ranks", "8", "--target", "c_attn", "--json"], env);
    expect(params.stderr).toBe("");
    expect(params.code).toBe(0);
    expect((JSON.parse(params.stdout) as { rows: { trainable: number }[] }).rows[0]!.trainable).toBe(294_912);
    for (const command of ["train", "merge", "generate", "svd", "sweep", "demo", "info"]) expect(run([command, "--help"], env).code).toBe(0);
  });

  it.each([
    // an explicit LOWRANK_BUILD_DIR is the only place looked (no fallback to the prebuilt addon)
    ["missing", missing, /^lowrank (\w+): no native addon could be loaded; tried \S*no-build\/Release\/lowrank_cuda\.node \(not there\); \S*no-build\/Release\/lowrank\.node \(not there\)\. Run "npm rebuild lowrank"/],
    ["broken", broken, /^lowrank (\w+): no native addon could be loaded; tried \S*broken-build\/Release\/lowrank\.node \(.*(invalid ELF header|file too short)\)\. Run "npm rebuild lowrank"/],
  ])("commands that compute say the addon is %s in one line and exit 1", (_, env, message) => {
    for (const args of [["info"], ["demo", "--steps", "1"], ["train", "--model", "m", "--data", "d.jsonl", "--out", join(tmp, "out")]]) {
      const r = run(args, env());
      expect(r.code).toBe(1);
      expect(r.stdout).toBe("");
      const lines = r.stderr.trimEnd().split("\n");
      expect(lines).toHaveLength(1); // no stack trace
      expect(lines[0]).toMatch(message);
      expect(message.exec(lines[0]!)![1]).toBe(args[0]);
    }
  });
});

describe("a bad command line exits 2 and points at --help", () => {
  it.each([
    [[], /^Usage: lowrank/],
    [["foo"], /^error: unknown command 'foo'/],
    [["--bogus"], /^error: unknown option '--bogus'/],
    [["params", "--bogus"], /^error: unknown option '--bogus'/],
    [["params", "--ranks"], /^error: option '--ranks <list>' argument missing/],
    [["params", "--ranks", "0"], /^error: option '--ranks <list>' argument '0' is invalid/],
    [["info", "--bogus"], /^error: unknown option '--bogus'/],
    [["help", "foo"], /^Usage: lowrank/],
    [["bench", "--device", "gpu"], /^error: option '--device <name>' argument 'gpu' is invalid\. expected cpu, cuda or cuda:N/],
    [["train", "--device", "cuda:x"], /^error: option '--device <name>' argument 'cuda:x' is invalid/],
  ])("%j", (args, message) => {
    const r = run(args);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe("");
    expect(r.stderr).toMatch(message);
    if (args.length > 0 && args[0] !== "help") expect(r.stderr.trimEnd().split("\n").pop()).toMatch(/^\(run "lowrank (\w+ )?--help" for usage\)$/);
  });
});

it("--device cuda:N names a GPU this host does not have, exit 2", () => {
  // A CPU-only build (CI) has no GPU at all; a GPU host has fewer than 99.
  const r = run(["bench", "--device", "cuda:99", "--iters", "1"]);
  expect(r.code).toBe(2);
  expect(r.stderr).toMatch(cudaAvailable() ? /--device: device "cuda:99" does not exist; this host has \d+ CUDA device/ : /^lowrank bench: --device cuda:99: no usable GPU .*use --device cpu/);
});

it("--gpus N picks the GPUs itself: --device cpu or cuda:N beside it exits 2", () => {
  const base = ["train", "--model", "m", "--data", "d.jsonl", "--out", join(tmp, "gpus-out"), "--gpus", "2"];
  const onGpu1 = run([...base, "--device", "cuda:1"]);
  expect(onGpu1.code).toBe(2);
  expect(onGpu1.stderr).toContain("--gpus 2 trains on 2 GPUs, rank r on cuda:r; it cannot go with --device cuda:1 (CUDA_VISIBLE_DEVICES picks which GPUs those are)");
  const onCpu = run([...base, "--device", "cpu"]);
  expect(onCpu.code).toBe(2);
  expect(onCpu.stderr).toContain("it cannot go with --device cpu");
});

describe("train checks sizes before allocating", () => {
  // makeTinyModel: 2 layers 32 wide, so c_attn is 32 -> 96 and attn.c_proj 32 -> 32.
  let model: string, data: string, template: string;
  beforeAll(() => {
    model = join(tmp, "model");
    makeTinyModel(model);
    data = join(tmp, "data.jsonl");
    writeFileSync(data, demoLines(8));
    template = join(tmp, "template.txt");
    writeFileSync(template, SHORT_TEMPLATE);
  });
  const train = (out: string, ...extra: string[]) =>
    ["train", "--model", model, "--data", data, "--template", template, "--out", join(tmp, out), "--steps", "1", "--quiet", "--target", "c_attn", ...extra];

  it("--r above a layer's dimensions trains with a warning", () => {
    const r = run(train("wide", "--r", "40"));
    expect(r.code).toBe(0);
    expect(r.stderr).toContain(
      "warning: r=40 is larger than the smaller dimension of 2 adapted layers (transformer.h.0.attn.c_attn (32 -> 96), transformer.h.1.attn.c_attn (32 -> 96)): " +
        "B·A cannot have a rank above min(in, out), so the extra rank only costs memory and time; use r <= 32.",
    );
  });

  it("--r whose training state cannot fit in memory is refused at once, naming the rank, the layers and the bytes", () => {
    // r = 2^36: 2 layers · 2^36 · (32 + 96) floats · 4 bytes · 4 copies = 281 TB
    const r = run(train("huge", "--r", String(2 ** 36)));
    expect(r.code).toBe(1);
    expect(r.stderr.trimEnd()).toMatch(
      new RegExp(`^lowrank train: LoRA r=${2 ** 36} on 2 layers \\(transformer\\.h\\.0\\.attn\\.c_attn \\(32 -> 96\\), transformer\\.h\\.1\\.attn\\.c_attn \\(32 -> 96\\)\\) ` +
        `for training \\(its weights, their gradients and AdamW's two moments\\) needs 281 TB, more than the .* of memory on cpu; lower r \\(these layers' smaller dimension is 32: a larger r adds no rank\\) or target fewer modules$`),
    );
  });

  it("LOWRANK_PROFILE=1 prints where the native time went after train and generate, on stderr", () => {
    const profile = /\nprofile of lowrank (train|generate) \(LOWRANK_PROFILE\): wall-clock time in native calls, the whole run\n +ms\/run +share +calls +GFLOP\/s +phase \| native call\n[^]*\nby phase:\n[^]*backward[^]*\n +[\d.]+ ms\/run in native calls\n$/;
    const trained = run(train("profiled"), { LOWRANK_PROFILE: "1" });
    expect(trained.code).toBe(0);
    expect(trained.stderr).toMatch(profile);
    expect(trained.stderr).toMatch(/gemm \d+x\d+x\d+/);
    const generated = run(["generate", "--model", model, "--template", template, "--prompt", "go", "--max-new-tokens", "2"], { LOWRANK_PROFILE: "1" });
    expect(generated.code).toBe(0);
    expect(generated.stderr).toMatch(/\nprofile of lowrank generate \(LOWRANK_PROFILE\)/);
    expect(run(train("unprofiled")).stderr).not.toContain("profile");
  });

  it("a config.json too large for memory is refused with its fields, not std::bad_alloc", () => {
    const absurd = join(tmp, "absurd");
    mkdirSync(absurd);
    for (const f of readdirSync(model)) copyFileSync(join(model, f), join(absurd, f));
    const config = JSON.parse(readFileSync(join(model, "config.json"), "utf8")) as Record<string, unknown>;
    writeFileSync(join(absurd, "config.json"), JSON.stringify({ ...config, n_embd: 2_000_000, n_head: 1 }));
    const r = run(["train", "--model", absurd, "--data", data, "--template", template, "--out", join(tmp, "absurd-out"), "--steps", "1"]);
    expect(r.code).toBe(1);
    expect(r.stderr.trimEnd()).toMatch(
      /^lowrank train: --model .*absurd: GPT2LMHeadModel\.fromPretrained\(.*absurd\): GPT2Config \(n_embd 2000000, n_layer 2, vocab_size 400, n_positions 128\): the model's weights \([\d,]+ float32 parameters\) needs 384 TB, more than the .* of memory on cpu; check these fields of config\.json$/,
    );
  });
});

describe("output paths that cannot be written are named with the cause and the fix", () => {
  let file: string, adapter: string;
  beforeAll(() => {
    file = join(tmp, "a-file");
    writeFileSync(file, "not a folder");
    adapter = join(tmp, "adapter");
    const base = new GPT2LMHeadModel(new GPT2Config({ vocabSize: 50, nPositions: 16, nEmbd: 8, nLayer: 1, nHead: 2 }));
    const peft = getPeftModel(base, new LoraConfig({ r: 2, targetModules: ["c_attn"], fanInFanOut: true }), "default", { onWarning: () => {} });
    peft.savePretrainedSync(adapter);
    peft.dispose();
  });

  it.each([
    ["merge, --out under a file (checked before merging)", () => ["merge", "--model", join(tmp, "model"), "--adapter", "unused", "--out", join(file, "sub")],
      () => `lowrank merge: --out ${join(file, "sub")}: cannot write there: ${file} is a file, not a folder (ENOTDIR); choose another --out`],
    ["merge, --out is a file", () => ["merge", "--model", join(tmp, "model"), "--adapter", "unused", "--out", file],
      () => `lowrank merge: --out ${file}: cannot write there: ${file} exists and is a file, not a folder (EEXIST); choose another --out`],
    ["svd, --out under a file", () => ["svd", "--adapter", adapter, "--out", join(file, "x")],
      () => `lowrank svd: --out ${join(file, "x")}: cannot create the folder ${file}: ${file} exists and is a file, not a folder (EEXIST); choose another --out`],
  ])("%s", (_, args, message) => {
    const r = run(args());
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr.trimEnd()).toBe(message());
  });
});

describe("LOWRANK_* variables are checked when the addon loads", () => {
  it.each([
    [{ LOWRANK_NUM_THREADS: "abc" }, /^lowrank info: LOWRANK_NUM_THREADS="abc" is not valid: expected an integer from 1 to 1024/],
    [{ LOWRANK_NUM_THREADS: "0" }, /^lowrank info: LOWRANK_NUM_THREADS="0" is not valid/],
    [{ LOWRANK_SIMD: "foo" }, /^lowrank info: LOWRANK_SIMD="foo" is not valid: expected one of scalar, avx2, avx512, avx512bf16/],
    [{ LOWRANK_PROFILE: "cuda:x" }, /^lowrank info: LOWRANK_PROFILE="cuda:x" is not valid: expected cuda or cuda:N/],
  ])("%j: one line, exit 1", (env, message) => {
    const r = run(["info"], env);
    expect(r.code).toBe(1);
    expect(r.stderr.trimEnd().split("\n")).toEqual([expect.stringMatching(message)]);
  });

  it.skipIf(cudaAvailable())("LOWRANK_PROFILE=cuda without a CUDA build: one line naming the cause, exit 1", () => {
    // (on a CUDA host the profile works: test/gpu/profile.test.ts)
    const r = run(["info"], { LOWRANK_PROFILE: "cuda" });
    expect(r.code).toBe(1);
    expect(r.stderr.trimEnd().split("\n")).toEqual([
      expect.stringMatching(/^lowrank info: LOWRANK_PROFILE=cuda: cannot record CUDA events on cuda:0: profileMark: this addon was built without CUDA/),
    ]);
  });

  it("more threads than cores: a warning, and the command runs", () => {
    const r = run(["info"], { LOWRANK_NUM_THREADS: "1000" });
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("1000 thread(s)");
    expect(r.stderr).toMatch(/LowrankWarning: LOWRANK_NUM_THREADS=1000 is more than the \d+ CPU cores? of this host/);
  });
});
