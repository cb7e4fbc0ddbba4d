// What lowrank saves, compared with what Python saved for the same tensors: transformers'
// save_pretrained (gpt2-tiny/) and PEFT's PeftModel.save_pretrained (every adapter folder under
// peft-tiny/, peft-extra/, peft-embedding/). The fixtures are made by make_fixtures.py all.
// Byte for byte where the formats allow; config.json by parsed content (see below why).
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { GPT2Config, GPT2LMHeadModel, LoraConfig, getPeftModel, PeftModel, noGrad } from "../../lib/index.js";
import { readSafetensors, toTensor } from "../../lib/io/safetensors.js";
import { copyInto } from "../../lib/tensor/tensor.js";

const FIXTURES = join(import.meta.dirname, "..", "fixtures");
const TINY = join(FIXTURES, "gpt2-tiny");
const quiet = { onWarning: () => {} };
const out = mkdtempSync(join(tmpdir(), "lowrank-format-files-"));
afterAll(() => rmSync(out, { recursive: true, force: true }));

/** Every folder PEFT saved an adapter into, below `dir`. */
function adapterDirs(dir: string): string[] {
  const found: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (!statSync(p).isDirectory()) continue;
    if (existsSync(join(p, "adapter_model.safetensors"))) found.push(p);
    found.push(...adapterDirs(p));
  }
  return found;
}

function expectSameBytes(ours: string, python: string): void {
  const a = readFileSync(ours), b = readFileSync(python);
  // the first differing byte, to make a failure readable
  const at = a.findIndex((x, i) => x !== b[i]);
  expect({ bytes: a.length, firstDifference: at === -1 && a.length !== b.length ? Math.min(a.length, b.length) : at }, `${ours} vs ${python}`)
    .toEqual({ bytes: b.length, firstDifference: -1 });
}

describe("GPT2LMHeadModel.savePretrained, against transformers' save_pretrained", () => {
  const dst = join(out, "model");
  const python = JSON.parse(readFileSync(join(TINY, "config.json"), "utf8")) as Record<string, unknown>;
  const ref = JSON.parse(readFileSync(join(TINY, "reference.json"), "utf8")) as { config_defaults: Record<string, unknown> };

  it("writes model.safetensors byte for byte for the same tensors", () => {
    // a model built from the config, given transformers' tensors, not one loaded from the folder
    const model = new GPT2LMHeadModel(GPT2Config.fromHF(python));
    const file = readSafetensors(join(TINY, "model.safetensors"));
    const params = Object.fromEntries(model.namedParameters());
    expect(file.names.sort()).toEqual(Object.keys(params).sort());
    noGrad(() => {
      for (const name of file.names) {
        const t = toTensor({ ...file.get(name), name });
        copyInto(params[name]!, t);
        t.dispose();
      }
    });
    model.savePretrainedSync(dst);
    model.dispose();
    expectSameBytes(join(dst, "model.safetensors"), join(TINY, "model.safetensors"));
  });

  it("writes a config.json that transformers reads as the one it wrote", () => {
    // Not byte for byte: transformers writes its own version ("transformers_version"), every field
    // of GPT2Config including those lowrank does not implement (the summary_* head, use_cache,
    // add_cross_attention), and floats as Python's repr (1e-05). So: every key we write has
    // transformers' value, and every key we leave out is one transformers fills in with the same
    // value when it is absent (config_defaults = GPT2Config().to_dict(), recorded by make_fixtures.py).
    const ours = JSON.parse(readFileSync(join(dst, "config.json"), "utf8")) as Record<string, unknown>;
    for (const [k, v] of Object.entries(ours)) expect(v, k).toEqual(python[k]);
    const omitted = Object.keys(python).filter((k) => !(k in ours)).sort();
    expect(omitted.length).toBeLessThan(Object.keys(python).length / 2);
    for (const k of omitted) {
      if (k === "transformers_version") continue; // provenance only; transformers does not read it back
      // without dtype, from_pretrained loads in torch's default float32, which these F32 weights are
      if (k === "dtype") {
        expect(python[k]).toBe("float32");
        continue;
      }
      expect(k in ref.config_defaults, `${k}: not a GPT2Config field`).toBe(true);
      expect(ref.config_defaults[k], `${k}: transformers' default differs from what it saved`).toEqual(python[k]);
    }
  });
});

describe("PeftModel.savePretrained, against PEFT's save_pretrained", () => {
  it("writes adapter_model.safetensors and adapter_config.json byte for byte for the same tensors", () => {
    // an adapter built from LoraConfig (not read from PEFT's folder) and given PEFT's tensors
    const dir = join(FIXTURES, "peft-tiny", "adapter-c_attn");
    const config = new LoraConfig({
      r: 4, loraAlpha: 8, targetModules: ["c_attn"], loraDropout: 0, taskType: "CAUSAL_LM", baseModelNameOrPath: "gpt2-tiny",
      peftVersion: "0.21.0",
    });
    const peft = getPeftModel(GPT2LMHeadModel.fromPretrainedSync(TINY), config, "default", quiet);
    const file = readSafetensors(join(dir, "adapter_model.safetensors"));
    const state = peft.adapterStateDict();
    expect(file.names.sort()).toEqual(Object.keys(state).sort());
    noGrad(() => {
      for (const name of file.names) {
        const t = toTensor({ ...file.get(name), name });
        copyInto(state[name]!, t);
        t.dispose();
      }
    });
    peft.savePretrainedSync(join(out, "c_attn"));
    peft.dispose();
    for (const f of ["adapter_model.safetensors", "adapter_config.json"]) expectSameBytes(join(out, "c_attn", f), join(dir, f));
  });

  // The adapters loaded and saved again: every layout PEFT wrote (several targets, patterns, two
  // adapters, DoRA magnitudes, embeddings, modules_to_save copies, trained adapters).
  const dirs = ["peft-tiny", "peft-extra", "peft-embedding"].flatMap((d) => {
    const root = join(FIXTURES, d);
    return existsSync(join(root, "adapter_model.safetensors")) ? [root, ...adapterDirs(root)] : adapterDirs(root);
  });

  it("covers the fixtures' adapter folders", () => {
    expect(dirs.length).toBeGreaterThanOrEqual(10);
  });

  for (const dir of dirs) {
    const name = relative(FIXTURES, dir);
    const config = JSON.parse(readFileSync(join(dir, "adapter_config.json"), "utf8")) as { base_model_name_or_path: string | null };
    // peft-extra/mlp is a plain nn.Linear MLP, not GPT-2: lowrank has no such model class
    if (config.base_model_name_or_path !== "gpt2-tiny") continue;
    it(`writes ${name} back byte for byte`, () => {
      const peft = PeftModel.fromPretrainedSync(GPT2LMHeadModel.fromPretrainedSync(TINY), dir, quiet);
      const dst = join(out, name.replaceAll("/", "_"));
      peft.savePretrainedSync(dst);
      peft.dispose();
      for (const f of ["adapter_model.safetensors", "adapter_config.json"]) expectSameBytes(join(dst, f), join(dir, f));
    });
  }
});
