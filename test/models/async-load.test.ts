// The Promise forms of fromPretrained / savePretrained (GPT-2, Llama, Auto, PeftModel) and of the
// safetensors readers: the same models, files and errors as the blocking forms, with the event loop
// running while they work.
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { buildCli, makeTinyModel, runCli } from "../cli/helpers.js";
import {
  AutoModelForCausalLM, GPT2LMHeadModel, LlamaForCausalLM, LoraConfig, PeftModel, getPeftModel, memory, readSafetensors, readSafetensorsAsync, readShardedSafetensors,
  readShardedSafetensorsAsync, type Module, type SafetensorsFile,
} from "../../lib/index.js";

const GPT2 = "test/fixtures/gpt2-tiny";
const SHARDED = "test/fixtures/gpt2-tiny-sharded";
const LLAMA = "test/fixtures/llama-tiny/llama-gqa";
const ADAPTER = "test/fixtures/peft-tiny/adapter-c_attn";
const scratch = mkdtempSync(join(tmpdir(), "lowrank-async-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** How many times the event loop got to run a setImmediate callback while `work` was pending. */
async function turnsDuring<T>(work: () => Promise<T>): Promise<{ value: T; turns: number }> {
  let turns = 0, running = true;
  const tick = () => {
    if (!running) return;
    turns++;
    setImmediate(tick);
  };
  setImmediate(tick);
  try {
    return { value: await work(), turns };
  } finally {
    running = false;
  }
}

function expectSameWeights(a: Module, b: Module): void {
  const pa = a.namedParameters(), pb = new Map(b.namedParameters());
  expect([...pb.keys()]).toEqual(pa.map(([k]) => k));
  for (const [k, t] of pa) expect(Buffer.from(pb.get(k)!.dataSync().buffer), k).toEqual(Buffer.from(t.dataSync().buffer));
}

function expectSameFile(a: SafetensorsFile, b: SafetensorsFile): void {
  expect(b.source).toBe(a.source);
  expect(b.metadata).toEqual(a.metadata);
  expect(b.entries.map((e) => [e.name, e.dtype, e.shape])).toEqual(a.entries.map((e) => [e.name, e.dtype, e.shape]));
  for (const [i, e] of a.entries.entries()) expect(Buffer.from(b.entries[i]!.bytes), e.name).toEqual(Buffer.from(e.bytes));
}

/** The message of what `f` throws (sync) or rejects with (async). */
async function messageOf(f: () => unknown): Promise<string> {
  try {
    await f();
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error("expected an error");
}

describe("safetensors: readSafetensorsAsync and readShardedSafetensorsAsync", () => {
  it("read what the blocking readers read", async () => {
    expectSameFile(readSafetensors(join(GPT2, "model.safetensors")), await readSafetensorsAsync(join(GPT2, "model.safetensors")));
    expectSameFile(readShardedSafetensors(SHARDED), await readShardedSafetensorsAsync(SHARDED));
  });

  it("reject with the blocking readers' errors: a missing file, a truncated one, a missing shard", async () => {
    const truncated = join(scratch, "truncated.safetensors");
    copyFileSync(join(GPT2, "model.safetensors"), truncated);
    truncateSync(truncated, 5000);
    const shards = join(scratch, "shards");
    mkdirSync(shards);
    for (const f of readdirSync(SHARDED)) if (f.endsWith(".json") || f.endsWith(".safetensors")) copyFileSync(join(SHARDED, f), join(shards, f));
    rmSync(join(shards, "model-00003-of-00004.safetensors"));
    for (const [read, readAsync, path] of [
      [readSafetensors, readSafetensorsAsync, join(scratch, "absent.safetensors")],
      [readSafetensors, readSafetensorsAsync, truncated],
      [readShardedSafetensors, readShardedSafetensorsAsync, shards],
    ] as const) {
      const want = await messageOf(() => read(path));
      expect(want).toContain(path.split("/").at(-1));
      await expect(readAsync(path)).rejects.toThrow(want);
    }
  });
});

describe("fromPretrained returns a Promise and lets the event loop run", () => {
  it("GPT2LMHeadModel: the same weights as fromPretrainedSync, in eval mode, loaded across many event-loop turns", async () => {
    const { value: model, turns } = await turnsDuring(() => GPT2LMHeadModel.fromPretrained(GPT2));
    // one turn per tensor at least: the load is not one blocking stretch
    expect(turns).toBeGreaterThanOrEqual(model.namedParameters().length);
    const sync = GPT2LMHeadModel.fromPretrainedSync(GPT2);
    expect(model.training).toBe(false);
    expectSameWeights(sync, model);
    sync.dispose();
    model.dispose();
  });

  it("LlamaForCausalLM and AutoModelForCausalLM (GPT-2 and Llama folders, sharded too)", async () => {
    for (const [load, loadSync, dir] of [
      [(d: string) => LlamaForCausalLM.fromPretrained(d), (d: string) => LlamaForCausalLM.fromPretrainedSync(d), LLAMA],
      [(d: string) => AutoModelForCausalLM.fromPretrained(d), (d: string) => AutoModelForCausalLM.fromPretrainedSync(d), LLAMA],
      [(d: string) => AutoModelForCausalLM.fromPretrained(d), (d: string) => AutoModelForCausalLM.fromPretrainedSync(d), SHARDED],
    ] as const) {
      const { value: model, turns } = await turnsDuring(() => load(dir));
      expect(turns, dir).toBeGreaterThan(0);
      const sync = loadSync(dir);
      expect(model.constructor).toBe(sync.constructor);
      expectSameWeights(sync, model);
      sync.dispose();
      model.dispose();
    }
  });

  it("rejects (never throws synchronously) with the blocking form's error, and leaks nothing", async () => {
    const before = memory().cpu.tensors;
    const misfit = join(scratch, "misfit");
    mkdirSync(misfit);
    writeFileSync(join(misfit, "config.json"), readFileSync(join(GPT2, "config.json"), "utf8").replace(/"n_layer": 2/, `"n_layer": 3`));
    copyFileSync(join(GPT2, "model.safetensors"), join(misfit, "model.safetensors"));
    for (const dir of [join(scratch, "absent"), misfit]) {
      const want = await messageOf(() => GPT2LMHeadModel.fromPretrainedSync(dir));
      let promise: Promise<unknown> | undefined;
      expect(() => (promise = GPT2LMHeadModel.fromPretrained(dir))).not.toThrow();
      await expect(promise).rejects.toThrow(want);
      let auto: Promise<unknown> | undefined;
      expect(() => (auto = AutoModelForCausalLM.fromPretrained(dir))).not.toThrow();
      await expect(auto).rejects.toThrow(dir);
    }
    expect(await messageOf(() => GPT2LMHeadModel.fromPretrained(misfit))).toMatch(/missing tensors: transformer\.h\.2\./);
    expect(memory().cpu.tensors).toBe(before);
  });
});

describe("savePretrained returns a Promise and writes what savePretrainedSync writes", () => {
  it("GPT2LMHeadModel and LlamaForCausalLM: byte-identical files, no temporary left, and they load back", async () => {
    for (const [model, load] of [
      [GPT2LMHeadModel.fromPretrainedSync(GPT2), (d: string) => GPT2LMHeadModel.fromPretrained(d)],
      [LlamaForCausalLM.fromPretrainedSync(LLAMA), (d: string) => LlamaForCausalLM.fromPretrained(d)],
    ] as const) {
      const a = join(scratch, `sync-${model.constructor.name}`), b = join(scratch, `async-${model.constructor.name}`);
      model.savePretrainedSync(a);
      const { turns } = await turnsDuring(() => model.savePretrained(b));
      expect(turns).toBeGreaterThan(0);
      expect(readdirSync(b).sort()).toEqual(["config.json", "model.safetensors"]);
      for (const f of readdirSync(a)) expect(readFileSync(join(b, f)), f).toEqual(readFileSync(join(a, f)));
      const again = await load(b);
      expectSameWeights(model, again);
      again.dispose();
      model.dispose();
    }
  });

  it("PeftModel: fromPretrained and savePretrained as Promises, the same adapter and files as the blocking forms", async () => {
    const peft = await PeftModel.fromPretrained(await GPT2LMHeadModel.fromPretrained(GPT2), ADAPTER);
    const sync = PeftModel.fromPretrainedSync(GPT2LMHeadModel.fromPretrainedSync(GPT2), ADAPTER);
    expect(peft.training).toBe(false);
    expectSameWeights(sync, peft);
    const a = join(scratch, "adapter-sync"), b = join(scratch, "adapter-async");
    sync.savePretrainedSync(a);
    await peft.savePretrained(b);
    expect(readdirSync(b).sort()).toEqual(["adapter_config.json", "adapter_model.safetensors"]);
    for (const f of readdirSync(a)) expect(readFileSync(join(b, f)), f).toEqual(readFileSync(join(a, f)));
    sync.dispose();
    peft.dispose();
    await expect(PeftModel.fromPretrained(GPT2LMHeadModel.fromPretrainedSync(GPT2), join(scratch, "no-adapter"))).rejects.toThrow(/adapter directory .*no-adapter does not exist/);
  });

  it("PeftModel.fromPretrained reads the files before it wraps the model: an unreadable adapter leaves the model as it was", async () => {
    const broken = join(scratch, "broken-adapter");
    mkdirSync(broken);
    for (const f of ["adapter_config.json", "adapter_model.safetensors"]) copyFileSync(join(ADAPTER, f), join(broken, f));
    truncateSync(join(broken, "adapter_model.safetensors"), 100);
    for (const load of [(m: GPT2LMHeadModel) => PeftModel.fromPretrained(m, broken), async (m: GPT2LMHeadModel) => PeftModel.fromPretrainedSync(m, broken)]) {
      const base = GPT2LMHeadModel.fromPretrainedSync(GPT2);
      const names = base.namedParameters().map(([n]) => n);
      await expect(load(base)).rejects.toThrow(/adapter_model\.safetensors" is not a valid safetensors file/);
      expect(base.namedParameters().map(([n]) => n)).toEqual(names); // no LoRA layer was injected
      base.dispose();
    }
  });

  it("writes the weights as they were when it was called, not as they are when the disk write ends", async () => {
    const model = GPT2LMHeadModel.fromPretrainedSync(GPT2);
    const want = join(scratch, "snapshot-want"), got = join(scratch, "snapshot-got");
    model.savePretrainedSync(want);
    const saving = model.savePretrained(got);
    model.transformer.wte.weight.dispose(); // changed (here: freed) right after the call
    await saving;
    expect(readFileSync(join(got, "model.safetensors"))).toEqual(readFileSync(join(want, "model.safetensors")));
    model.dispose();
  });
});

describe("savePretrained's Promise form under a crash", () => {
  it("a process killed just before model.safetensors is renamed into place leaves no model.safetensors, only its temporary", { timeout: 120_000 }, async () => {
    // lowrank merge saves with `await merged.savePretrained(out)`; LOWRANK_CRASH_AT kills it with SIGKILL at the rename
    const model = join(scratch, "crash-model"), adapter = join(scratch, "crash-adapter"), out = join(scratch, "crash-out");
    makeTinyModel(model);
    const peft = getPeftModel(GPT2LMHeadModel.fromPretrainedSync(model), new LoraConfig({ r: 2, targetModules: ["c_attn"], fanInFanOut: true }));
    peft.savePretrainedSync(adapter);
    peft.dispose();
    const cli = await buildCli();
    try {
      const r = await runCli(cli.main, ["merge", "--model", model, "--adapter", adapter, "--out", out], { LOWRANK_CRASH_AT: "atomic-rename:model.safetensors" });
      expect(r.signal, r.stderr).toBe("SIGKILL");
      const left = readdirSync(out);
      expect(left).not.toContain("model.safetensors");
      expect(left.filter((f) => /^\.model\.safetensors\.\d+\.[0-9a-f]{12}\.tmp$/.test(f))).toHaveLength(1);
    } finally {
      cli.cleanup();
    }
  });
});
