// PeftModel against Python PEFT 0.21: adapters saved by PEFT load here and give PEFT's logits
// (fixtures in test/fixtures/peft-tiny, made by test/fixtures/make_fixtures.py), parameter
// counts print PEFT's line, merging agrees with the unmerged model, training matches PEFT+AdamW.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import {
  AdamW, copyInto, fromTensor, GPT2Config, GPT2LMHeadModel, getPeftModel, LoraConfig, memory, noGrad, PeftModel, readSafetensors, tensor, tidy, toTensor,
  UnsafeMergeError, writeSafetensors, type Tensor,
} from "../../lib/index.js";
import { relError } from "../helpers.js";
import { expectTrainsLikePeft } from "./train-fixture.js";

const MODEL = "test/fixtures/gpt2-tiny";
const FIX = "test/fixtures/peft-tiny";
const ids = (rows: number[][]) => tensor(Int32Array.from(rows.flat()), { shape: [rows.length, rows[0]!.length] });
const flat = (x: unknown): number[] => (Array.isArray(x) ? x.flatMap(flat) : [x as number]);
const load = () => GPT2LMHeadModel.fromPretrainedSync(MODEL);
const quiet = { onWarning: () => {} };
// float32 against float32 with different summation orders: ~1e-6; the bar is 1e-4 relative.
const TOL = 1e-4;

function logitsOf(model: { forward(i: { inputIds: Tensor; attentionMask?: Tensor }): { logits: Tensor } }, ref: { input_ids: number[][]; attention_mask: number[][] }): Float32Array {
  return noGrad(() => tidy(() => model.forward({ inputIds: ids(ref.input_ids), attentionMask: ids(ref.attention_mask) }).logits.dataSync() as Float32Array));
}

describe("adapters saved by PEFT", () => {
  for (const name of ["adapter-c_attn", "adapter-rslora", "adapter-all-linear", "adapter-patterns"]) {
    it(`${name}: same logits, parameter line, merged logits`, () => {
      const ref = JSON.parse(readFileSync(join(FIX, name, "reference.json"), "utf8"));
      const peft = PeftModel.fromPretrainedSync(load(), join(FIX, name), { isTrainable: true, ...quiet });
      peft.eval();
      expect(relError(logitsOf(peft, ref), flat(ref.logits_mask))).toBeLessThan(TOL);
      expect(peft.trainableParametersLine()).toBe(ref.print_trainable_parameters);
      // scaling per module as PEFT computed it
      for (const [module, s] of Object.entries(ref.scaling as Record<string, { default: number }>)) {
        const layer = peft.loraLayers.get(module.replace(/^base_model\.model\./, ""))!;
        expect(layer.specs.get("default")!.scaling).toBeCloseTo(s.default, 12);
      }
      const merged = peft.mergeAndUnload();
      expect(merged.namedParameters().some(([n]) => n.includes("lora_"))).toBe(false);
      expect(relError(logitsOf(merged, ref), flat(ref.logits_merged_mask))).toBeLessThan(TOL);
      merged.dispose();
    });
  }

  it("merge_and_unload writes W + s·(B·A)ᵀ into GPT-2's Conv1D weight, as PEFT does", () => {
    const peft = PeftModel.fromPretrainedSync(load(), join(FIX, "adapter-c_attn"), quiet);
    const merged = peft.mergeAndUnload();
    const want = readSafetensors(join(FIX, "adapter-c_attn", "merged_weights.safetensors"));
    const got = merged.getSubmodule("transformer.h.0.attn.c_attn") as unknown as { weight: Tensor };
    expect(relError(got.weight.dataSync(), toTensor(want.get("transformer.h.0.attn.c_attn.weight")).dataSync())).toBeLessThan(1e-6);
    merged.dispose();
  });

  it("two adapters: default at the root, the other in <dir>/second; both active sum", () => {
    const ref = JSON.parse(readFileSync(join(FIX, "adapter-two", "reference.json"), "utf8"));
    const peft = PeftModel.fromPretrainedSync(load(), join(FIX, "adapter-two"), quiet);
    peft.loadAdapter(join(FIX, "adapter-two", "second"), "second");
    peft.eval();
    const input = JSON.parse(readFileSync(join(FIX, "adapter-c_attn", "reference.json"), "utf8"));
    expect(relError(logitsOf(peft, input), flat(ref.adapters.default.logits_mask))).toBeLessThan(TOL);
    peft.setAdapter("second");
    expect(relError(logitsOf(peft, input), flat(ref.adapters.second.logits_mask))).toBeLessThan(TOL);
    peft.setAdapter(["default", "second"]);
    expect(relError(logitsOf(peft, input), flat(ref.logits_mask_both_active))).toBeLessThan(TOL);
    peft.dispose();
  });
});

describe("training matches PEFT + torch.optim.AdamW", () => {
  it("5 AdamW steps on adapter-c_attn give PEFT's losses and final adapter", () => {
    const batch = JSON.parse(readFileSync(join(MODEL, "reference.json"), "utf8"));
    const peft = PeftModel.fromPretrainedSync(load(), join(FIX, "adapter-c_attn"), { isTrainable: true, ...quiet });
    const loss = () => peft.forward({ inputIds: ids(batch.input_ids), attentionMask: ids(batch.attention_mask), labels: ids(batch.labels_masked) }).loss!;
    expectTrainsLikePeft(peft, loss, join(FIX, "train-c_attn"), TOL);
    peft.dispose();
  });
});

describe("PeftModel", () => {
  it("prints PEFT's lines for GPT-2 124M", () => {
    // Counting needs shapes, not values: skip the seconds-long random init of 124M weights.
    const model = new GPT2LMHeadModel(new GPT2Config(), { initialize: false });
    const peft = getPeftModel(model, new LoraConfig({ taskType: "CAUSAL_LM", r: 8, targetModules: ["c_attn"] }), "default", quiet);
    expect(peft.trainableParametersLine()).toBe("trainable params: 294,912 || all params: 124,734,720 || trainable%: 0.2364");
    const unloaded = peft.unload();
    const peft2 = getPeftModel(unloaded, new LoraConfig({ taskType: "CAUSAL_LM", r: 16, loraAlpha: 32, targetModules: ["c_attn", "c_proj"] }), "default", quiet);
    expect(peft2.trainableParametersLine()).toBe("trainable params: 1,622,016 || all params: 126,061,824 || trainable%: 1.2867");
    peft2.dispose();
  });

  it("freezes the base, starts as a no-op, and names parameters as PEFT does", () => {
    const peft = getPeftModel(load(), new LoraConfig({ r: 4, targetModules: ["c_attn"] }), "default", quiet);
    const names = peft.namedParameters().map(([n]) => n);
    expect(names).toContain("base_model.model.transformer.h.0.attn.c_attn.base_layer.weight");
    expect(names).toContain("base_model.model.transformer.h.0.attn.c_attn.lora_A.default.weight");
    expect(names).toContain("base_model.model.transformer.h.1.attn.c_attn.lora_B.default.weight");
    expect(peft.trainableParameters()).toHaveLength(4);
    const ref = JSON.parse(readFileSync(join(MODEL, "reference.json"), "utf8"));
    peft.eval();
    expect(relError(logitsOf(peft, ref), flat(ref.logits_mask))).toBeLessThan(1e-6);
    peft.dispose();
  });

  it("merged and unmerged outputs agree; unmerge restores the base weights exactly enough", () => {
    const peft = PeftModel.fromPretrainedSync(load(), join(FIX, "adapter-rslora"), quiet);
    peft.eval();
    const ref = JSON.parse(readFileSync(join(FIX, "adapter-rslora", "reference.json"), "utf8"));
    const before = peft.model.stateDict();
    const base = Object.fromEntries(Object.entries(before).map(([k, t]) => [k, Array.from(t.dataSync())]));
    const unmerged = logitsOf(peft, ref);
    peft.mergeAdapter();
    const merged = logitsOf(peft, ref);
    expect(relError(merged, unmerged)).toBeLessThan(1e-5);
    peft.unmergeAdapter();
    const after = peft.model.stateDict();
    for (const k of Object.keys(base)) expect(relError(after[k]!.dataSync(), base[k]!), k).toBeLessThan(1e-6);
    // disabling the adapter gives the base model
    const plain = load();
    plain.eval();
    expect(relError(peft.disableAdapter(() => logitsOf(peft, ref)), logitsOf(plain, ref))).toBeLessThan(1e-6);
    plain.dispose();
    peft.dispose();
  });

  it("safe merge refuses a NaN adapter and leaves the model untouched; deleteAdapter refuses while merged", () => {
    const peft = PeftModel.fromPretrainedSync(load(), join(FIX, "adapter-c_attn"), quiet);
    const w = (peft.model.getSubmodule("transformer.h.1.attn.c_attn.base_layer") as unknown as { weight: Tensor }).weight;
    const w0 = Array.from(w.dataSync());
    const B = peft.loraLayers.get("transformer.h.1.attn.c_attn")!.parametersOf("default")[1]!;
    noGrad(() => {
      const poisoned = Float32Array.from(B.dataSync());
      poisoned[3] = NaN;
      const t = tensor(poisoned, { shape: B.shape });
      copyInto(B, t);
      t.dispose();
    });
    expect(() => peft.mergeAdapter({ safeMerge: true })).toThrow(UnsafeMergeError);
    expect(Array.from(w.dataSync())).toEqual(w0);
    const w00 = (peft.model.getSubmodule("transformer.h.0.attn.c_attn.base_layer") as unknown as { weight: Tensor }).weight;
    const layer0 = peft.loraLayers.get("transformer.h.0.attn.c_attn")!;
    expect(layer0.merged).toEqual([]);
    expect(w00.dataSync().every(Number.isFinite)).toBe(true);
    peft.loraLayers.get("transformer.h.0.attn.c_attn")!.merge(["default"]);
    expect(() => peft.deleteAdapter("default")).toThrow(/Cannot delete adapter\(s\) \['default'\] while they are merged/);
    peft.dispose();
  });

  it("savePretrained writes PEFT's files, and they load back to the same adapter", () => {
    const out = mkdtempSync(join(tmpdir(), "lowrank-adapter-"));
    try {
      const peft = PeftModel.fromPretrainedSync(load(), join(FIX, "adapter-c_attn"), { isTrainable: true, ...quiet });
      peft.savePretrainedSync(out);
      const saved = readSafetensors(join(out, "adapter_model.safetensors"));
      const original = readSafetensors(join(FIX, "adapter-c_attn", "adapter_model.safetensors"));
      expect(saved.names.sort()).toEqual(original.names.sort());
      expect(saved.metadata).toEqual({ format: "pt" });
      for (const k of original.names) expect(toTensor(saved.get(k)).dataSync()).toEqual(toTensor(original.get(k)).dataSync());
      const config = JSON.parse(readFileSync(join(out, "adapter_config.json"), "utf8"));
      expect(config).toMatchObject({ peft_type: "LORA", r: 4, lora_alpha: 8, fan_in_fan_out: true, inference_mode: true });
      const again = PeftModel.fromPretrainedSync(load(), out, quiet);
      expect(again.adapterStateDict()["base_model.model.transformer.h.1.attn.c_attn.lora_B.weight"]!.dataSync()).toEqual(
        peft.adapterStateDict()["base_model.model.transformer.h.1.attn.c_attn.lora_B.weight"]!.dataSync(),
      );
      again.dispose();
      peft.dispose();
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });

  it("fromPretrained is in inference (eval) mode unless isTrainable, as PEFT's from_pretrained and load_adapter", () => {
    const frozen = PeftModel.fromPretrainedSync(load(), join(FIX, "adapter-c_attn"), quiet);
    expect(frozen.modules().filter((m) => m.training)).toEqual([]);
    expect(frozen.trainableParameters()).toEqual([]);
    frozen.train();
    frozen.loadAdapter(join(FIX, "adapter-two", "second"), "second");
    expect(frozen.modules().filter((m) => m.training)).toEqual([]);
    frozen.dispose();
    // isTrainable leaves the modes alone: the base loads in eval mode, the new LoRA layers train (as in PyTorch)
    const trainable = PeftModel.fromPretrainedSync(load(), join(FIX, "adapter-c_attn"), { isTrainable: true, ...quiet });
    expect(trainable.model.transformer.h.at(0)!.attn.c_proj.training).toBe(false);
    expect(trainable.loraLayers.get("transformer.h.0.attn.c_attn")!.training).toBe(true);
    trainable.dispose();
  });

  it("refuses adapter weights stored as integers, naming the tensor and its dtype", () => {
    const out = mkdtempSync(join(tmpdir(), "lowrank-adapter-"));
    try {
      const src = join(FIX, "adapter-c_attn");
      writeFileSync(join(out, "adapter_config.json"), readFileSync(join(src, "adapter_config.json")));
      const file = readSafetensors(join(src, "adapter_model.safetensors"));
      const key = "base_model.model.transformer.h.0.attn.c_attn.lora_B.weight";
      const entries = Object.fromEntries(file.names.map((n) => [n, file.get(n)]));
      entries[key] = { name: key, ...noGrad(() => tidy(() => fromTensor(toTensor(file.get(key)).to("cpu", "int32")))) };
      writeSafetensors(join(out, "adapter_model.safetensors"), entries);
      const model = load();
      expect(() => PeftModel.fromPretrainedSync(model, out, quiet)).toThrow(/"base_model\.model\.transformer\.h\.0\.attn\.c_attn\.lora_B\.weight" \[192, 4\] is stored as I32 where float32 values are expected/);
      model.dispose();
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });

  it("explains bad adapters: missing folder, wrong model, unknown target", () => {
    const model = load();
    expect(() => PeftModel.fromPretrainedSync(model, "/nonexistent/adapter")).toThrow(/adapter directory \/nonexistent\/adapter does not exist/);
    expect(() => getPeftModel(model, new LoraConfig({ targetModules: ["q_proj"] }), "default", quiet)).toThrow(/q_proj/);
    model.dispose();
  });

  it("a LoRA training step leaks nothing", () => {
    const peft = getPeftModel(load(), new LoraConfig({ r: 4, loraDropout: 0.1, targetModules: ["c_attn", "c_proj"] }), "default", quiet);
    const opt = new AdamW(peft.trainableParameters(), { lr: 1e-3 });
    const batch = JSON.parse(readFileSync(join(MODEL, "reference.json"), "utf8"));
    const step = () => {
      tidy(() => peft.forward({ inputIds: ids(batch.input_ids), attentionMask: ids(batch.attention_mask), labels: ids(batch.labels_masked) }).loss!.backward());
      opt.step();
      opt.zeroGrad();
    };
    step();
    const before = memory().cpu!;
    step();
    step();
    expect(memory().cpu).toMatchObject({ bytes: before.bytes, buffers: before.buffers, tensors: before.tensors });
    opt.dispose();
    peft.dispose();
  });
});
