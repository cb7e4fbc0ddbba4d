// modulesToSave against PEFT 0.21's ModulesToSaveWrapper on the tiny GPT-2
// (test/fixtures/peft-extra/modules-to-save, modules_to_save=["ln_f"]): parameter names and counts,
// the saved keys (wrapper segments removed), logits with the trained copy, disabled, merged and
// unloaded. Logits: 1e-4 relative (float32, different summation orders: ~1e-6).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { AdamW, getPeftModel, LayerNorm, LoraConfig, PeftModel, readSafetensors, tidy, toTensor } from "../../lib/index.js";
import { cloneModule, ModulesToSaveWrapper } from "../../lib/peft/modules-to-save.js";
import { relError } from "../helpers.js";
import { EXTRA, fixtureTensors, loadGpt2, logitsOf, lossOf, PEFT_TINY, quiet, readJson } from "./extra-fixtures.js";

const DIR = join(EXTRA, "modules-to-save");
const TOL = 1e-4;
const T = fixtureTensors(DIR);
const ref = readJson<{ print_trainable_parameters: string; parameter_names: string[]; trainable_parameter_names: string[]; saved_tensors: Record<string, unknown> }>(
  join(DIR, "reference.json"),
);
const config = () => new LoraConfig({ taskType: "CAUSAL_LM", r: 4, loraAlpha: 8, targetModules: ["c_attn"], modulesToSave: ["ln_f"] });

describe("modulesToSave against PEFT", () => {
  it("wraps ln_f as PEFT does: the same parameter names, trainable set and counts line", () => {
    const peft = getPeftModel(loadGpt2(), config(), "default", quiet);
    expect(peft.namedParameters().map(([n]) => n)).toEqual(ref.parameter_names);
    expect(peft.namedParameters().filter(([, p]) => p.requiresGrad).map(([n]) => n)).toEqual(ref.trainable_parameter_names);
    expect(peft.trainableParametersLine()).toBe(ref.print_trainable_parameters);
    peft.dispose();
  });

  it("loads PEFT's adapter (LoRA + ln_f copy): PEFT's logits; disabled gives the base model", () => {
    const peft = PeftModel.fromPretrainedSync(loadGpt2(), join(DIR, "adapter"), quiet);
    peft.eval();
    expect(relError(logitsOf(peft), T.get("logits"))).toBeLessThan(TOL);
    expect(relError(peft.disableAdapter(() => logitsOf(peft)), T.get("logits_disabled"))).toBeLessThan(TOL);
    // the copy is what forward runs, and attributes read through the wrapper come from it too
    const wrapper = peft.modulesToSave.get("transformer.ln_f")!;
    expect(wrapper.current).toBe(wrapper.modules_to_save.getSubmodule("default"));
    expect((wrapper as unknown as LayerNorm).weight).toBe((wrapper.current as LayerNorm).weight);
    peft.dispose();
  });

  it("saves the copy under the module's own keys, as PEFT, and they load back", () => {
    const out = mkdtempSync(join(tmpdir(), "lowrank-mts-"));
    try {
      const peft = PeftModel.fromPretrainedSync(loadGpt2(), join(DIR, "adapter"), quiet);
      peft.savePretrainedSync(out);
      const saved = readSafetensors(join(out, "adapter_model.safetensors"));
      const original = readSafetensors(join(DIR, "adapter", "adapter_model.safetensors"));
      expect([...saved.names].sort()).toEqual(Object.keys(ref.saved_tensors).sort());
      for (const k of original.names) expect(toTensor(saved.get(k)).dataSync(), k).toEqual(toTensor(original.get(k)).dataSync());
      const again = PeftModel.fromPretrainedSync(loadGpt2(), out, quiet);
      again.eval();
      expect(relError(logitsOf(again), T.get("logits"))).toBeLessThan(TOL);
      again.dispose();
      peft.dispose();
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });

  it("mergeAndUnload and unload both leave the trained copy in ln_f's place (PEFT's logits)", () => {
    const merged = PeftModel.fromPretrainedSync(loadGpt2(), join(DIR, "adapter"), quiet).mergeAndUnload();
    merged.eval();
    expect(merged.transformer.ln_f).toBeInstanceOf(LayerNorm);
    expect(merged.namedParameters().map(([n]) => n)).toContain("transformer.ln_f.weight");
    expect(relError(logitsOf(merged), T.get("logits_merged_and_unloaded"))).toBeLessThan(TOL);
    merged.dispose();
    const unloaded = PeftModel.fromPretrainedSync(loadGpt2(), join(DIR, "adapter"), quiet).unload();
    unloaded.eval();
    expect(relError(logitsOf(unloaded), T.get("logits_unloaded"))).toBeLessThan(TOL);
    unloaded.dispose();
  });

  it("training updates the copy and leaves the original ln_f alone", () => {
    const peft = PeftModel.fromPretrainedSync(loadGpt2(), join(DIR, "adapter"), { isTrainable: true, ...quiet });
    const wrapper = peft.modulesToSave.get("transformer.ln_f")!;
    const original = Float32Array.from((wrapper.original_module as LayerNorm).weight!.dataSync());
    const copy = Float32Array.from((wrapper.current as LayerNorm).weight!.dataSync());
    const opt = new AdamW(peft.trainableParameters(), { lr: 1e-2 });
    tidy(() => lossOf(peft).backward());
    opt.step();
    expect((wrapper.original_module as LayerNorm).weight!.dataSync()).toEqual(original);
    expect(relError((wrapper.current as LayerNorm).weight!.dataSync(), copy)).toBeGreaterThan(1e-4);
    opt.dispose();
    peft.dispose();
  });

  it("a second adapter gets its own copy; an adapter without one runs the original; two copies cannot be active together", () => {
    const peft = PeftModel.fromPretrainedSync(loadGpt2(), join(DIR, "adapter"), quiet);
    peft.loadAdapter(join(PEFT_TINY, "adapter-c_attn"), "plain"); // no modules_to_save
    peft.addAdapter("other", config());
    const wrapper = peft.modulesToSave.get("transformer.ln_f")!;
    expect(wrapper.adapterNames).toEqual(["default", "other"]);
    expect(wrapper.activeAdapter).toBe("default"); // adding does not activate
    peft.setAdapter("plain");
    expect(wrapper.current).toBe(wrapper.original_module);
    peft.setAdapter("other");
    expect(wrapper.current).toBe(wrapper.modules_to_save.getSubmodule("other"));
    expect((wrapper.current as LayerNorm).weight!.requiresGrad).toBe(true);
    expect(() => peft.setAdapter(["default", "other"])).toThrow(/default, other each have their own copy of transformer.ln_f/);
    peft.deleteAdapter("other");
    expect(wrapper.adapterNames).toEqual(["default"]);
    expect(wrapper.activeAdapter).toBeNull();
    peft.dispose();
  });

  it("warns about entries that match no module", () => {
    const warnings: string[] = [];
    const peft = getPeftModel(loadGpt2(), config().with({ modulesToSave: ["ln_f", "score"] }), "default", { onWarning: (m) => warnings.push(m) });
    expect(warnings.some((w) => w.includes('["score"] match no module'))).toBe(true);
    peft.dispose();
  });
});

describe("cloneModule", () => {
  it("copies parameters and submodules, shares nothing trainable, keeps the class and its settings", () => {
    const ln = new LayerNorm(8, { eps: 1e-3 });
    const copy = cloneModule(ln);
    expect(copy).toBeInstanceOf(LayerNorm);
    expect(copy.eps).toBe(1e-3);
    expect(copy.weight).not.toBe(ln.weight);
    expect(copy.weight!.dataSync()).toEqual(ln.weight!.dataSync());
    expect(copy.namedParameters().map(([n]) => n)).toEqual(["weight", "bias"]);
    const model = loadGpt2();
    const block = cloneModule(model.transformer.h.at(0));
    expect(block.namedParameters().map(([n]) => n)).toEqual(model.transformer.h.at(0).namedParameters().map(([n]) => n));
    expect(block.getSubmodule("attn.c_attn")).not.toBe(model.transformer.h.at(0).getSubmodule("attn.c_attn"));
    block.dispose();
    model.dispose();
    copy.dispose();
    ln.dispose();
  });

  it("refuses containers and LoRA layers", () => {
    const peft = getPeftModel(loadGpt2(), new LoraConfig({ targetModules: ["c_attn"] }), "default", quiet);
    expect(() => new ModulesToSaveWrapper(peft.model.transformer.h)).toThrow(/cannot be applied to a ModuleList/);
    expect(() => new ModulesToSaveWrapper(peft.loraLayers.get("transformer.h.0.attn.c_attn")!)).toThrow(/already carries adapters/);
    peft.dispose();
  });
});
