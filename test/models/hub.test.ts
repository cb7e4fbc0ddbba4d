// Loading a model by its Hugging Face name from a local cache laid out as huggingface_hub writes
// it (models--owner--name/refs/<ref> -> snapshots/<hash>/), found through HF_HUB_CACHE or HF_HOME.
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { AutoModelForCausalLM, GPT2LMHeadModel } from "../../lib/index.js";
import { hfHubCacheDir, resolveModelDir } from "../../lib/models/hub.js";
import { LlamaForCausalLM } from "../../lib/models/llama/model.js";

const FIXTURE = "test/fixtures/llama-tiny/llama-gqa";
const NAME = "tiny-org/llama-gqa";
const HASH = "0123456789abcdef0123456789abcdef01234567";
const OTHER = "fedcba9876543210fedcba9876543210fedcba98";

/** A cache holding NAME: snapshots HASH (refs/main) and OTHER (no ref), each with the fixture's files. */
function makeCache(cache: string, { withMainRef = true } = {}): string {
  const repo = join(cache, "models--tiny-org--llama-gqa");
  for (const hash of [HASH, OTHER]) {
    const snap = join(repo, "snapshots", hash);
    mkdirSync(snap, { recursive: true });
    for (const f of ["config.json", "model.safetensors"]) copyFileSync(join(FIXTURE, f), join(snap, f));
  }
  mkdirSync(join(repo, "refs"), { recursive: true });
  if (withMainRef) writeFileSync(join(repo, "refs", "main"), HASH); // huggingface_hub writes no newline
  return repo;
}

describe("Hugging Face cache names", () => {
  let tmp: string;
  const saved = { HF_HUB_CACHE: process.env.HF_HUB_CACHE, HF_HOME: process.env.HF_HOME };
  beforeEach(() => {
    tmp = mkdtempSync(join(tmpdir(), "lowrank-hub-"));
    delete process.env.HF_HUB_CACHE;
    delete process.env.HF_HOME;
  });
  afterEach(() => {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
    rmSync(tmp, { recursive: true, force: true });
  });

  it("resolves a name to its refs/main snapshot and loads it through every fromPretrained", () => {
    const repo = makeCache(join(tmp, "hub"));
    process.env.HF_HUB_CACHE = join(tmp, "hub");
    expect(resolveModelDir(NAME, "test")).toBe(join(repo, "snapshots", HASH));
    const auto = AutoModelForCausalLM.fromPretrainedSync(NAME);
    const direct = LlamaForCausalLM.fromPretrainedSync(FIXTURE);
    expect(auto).toBeInstanceOf(LlamaForCausalLM);
    // the same weights as loading the fixture folder itself
    const want = new Map(direct.namedParameters());
    for (const [n, p] of auto.namedParameters()) expect(Array.from(p.dataSync()), n).toEqual(Array.from(want.get(n)!.dataSync()));
    expect(LlamaForCausalLM.fromPretrainedSync(NAME).config.numHiddenLayers).toBe(direct.config.numHiddenLayers);
    auto.dispose();
    direct.dispose();
  });

  it("takes a revision by commit hash, and by a ref other than main", () => {
    const repo = makeCache(join(tmp, "hub"));
    process.env.HF_HUB_CACHE = join(tmp, "hub");
    expect(resolveModelDir(NAME, "test", OTHER)).toBe(join(repo, "snapshots", OTHER));
    writeFileSync(join(repo, "refs", "v1"), `${OTHER}\n`);
    expect(resolveModelDir(NAME, "test", "v1")).toBe(join(repo, "snapshots", OTHER));
    const model = AutoModelForCausalLM.fromPretrainedSync(NAME, { revision: OTHER });
    expect(model).toBeInstanceOf(LlamaForCausalLM);
    model.dispose();
    expect(() => resolveModelDir(NAME, "test", "0000000000000000000000000000000000000000")).toThrow(/has no snapshot: .*snapshots.0{40} is missing/);
  });

  it("HF_HUB_CACHE wins over HF_HOME, which means $HF_HOME/hub", () => {
    makeCache(join(tmp, "home", "hub"));
    process.env.HF_HOME = join(tmp, "home");
    expect(hfHubCacheDir()).toBe(join(tmp, "home", "hub"));
    expect(resolveModelDir(NAME, "test")).toBe(join(tmp, "home", "hub", "models--tiny-org--llama-gqa", "snapshots", HASH));
    process.env.HF_HUB_CACHE = join(tmp, "empty");
    expect(hfHubCacheDir()).toBe(join(tmp, "empty"));
    expect(() => resolveModelDir(NAME, "test")).toThrow(join(tmp, "empty", "models--tiny-org--llama-gqa"));
    expect(hfHubCacheDir({ HOME: "/h" } as NodeJS.ProcessEnv)).toMatch(/[/\\]\.cache[/\\]huggingface[/\\]hub$/);
  });

  it("a name missing from the cache names the folders looked at and how to download it", () => {
    process.env.HF_HUB_CACHE = join(tmp, "hub");
    let message = "";
    try {
      GPT2LMHeadModel.fromPretrainedSync("nobody/nothing");
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toMatch(/^GPT2LMHeadModel\.fromPretrained: nobody\/nothing is neither a folder/);
    expect(message).toContain(join(process.cwd(), "nobody/nothing"));
    expect(message).toContain(join(tmp, "hub", "models--nobody--nothing"));
    expect(message).toContain("does not download");
    expect(message).toContain("huggingface-cli download nobody/nothing");
    expect(message).toContain("hf download nobody/nothing");
    // a path that is no repo id keeps the plain error
    expect(() => AutoModelForCausalLM.fromPretrainedSync("./no/such/dir")).toThrow(/model directory \.\/no\/such\/dir does not exist/);
  });

  it("a repo folder without refs/main says so", () => {
    const repo = makeCache(join(tmp, "hub"), { withMainRef: false });
    process.env.HF_HUB_CACHE = join(tmp, "hub");
    expect(() => AutoModelForCausalLM.fromPretrainedSync(NAME)).toThrow(
      `AutoModelForCausalLM.fromPretrained: ${NAME} is in the Hugging Face cache (${repo}) but has no ref "main": ${join(repo, "refs", "main")} is missing`,
    );
  });
});
