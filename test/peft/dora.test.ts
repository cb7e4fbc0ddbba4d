// DoRA (useDora) against PEFT 0.21 on the tiny GPT-2 (test/fixtures/peft-extra/dora): magnitudes
// at init, logits of a saved adapter with B ≠ 0 and moved magnitudes, merge / unmerge, and three
// AdamW steps. Logit tolerance 1e-4 relative: float32 against float32 with different summation
// orders differs by ~1e-6, a wrong term (bias counted twice, the norm over the wrong axis of
// Conv1D's [in, out] weight, an undetached norm in training) by far more.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import {
  AdamW, Conv1D, copyInto, dropout, Generator, getPeftModel, Linear, linear, LoraConfig, LoraLinear, memory, noGrad, PeftModel, readSafetensors, tensor,
  tidy, toTensor, type Tensor,
} from "../../lib/index.js";
import { relError } from "../helpers.js";
import { EXTRA, fixtureTensors, loadGpt2, logitsOf, lossOf, PEFT_TINY, quiet, readJson } from "./extra-fixtures.js";

const DIR = join(EXTRA, "dora");
const TOL = 1e-4;
const T = fixtureTensors(DIR);
const weightOf = (peft: PeftModel, path: string) => (peft.model.getSubmodule(`${path}.base_layer`) as Conv1D).weight;

describe("DoRA against PEFT", () => {
  it("getPeftModel(useDora) starts each magnitude at ‖W‖ per output feature (per column of Conv1D's [in, out] weight)", () => {
    const config = new LoraConfig({ r: 4, loraAlpha: 8, targetModules: ["c_attn", "c_proj"], useDora: true });
    const peft = getPeftModel(loadGpt2(), config, "default", quiet);
    const inits = T.names.filter((n) => n.startsWith("init."));
    expect(inits).toHaveLength(6);
    for (const key of inits) {
      const path = key.slice("init.".length, -".lora_magnitude_vector".length);
      const m = (peft.loraLayers.get(path) as LoraLinear).magnitude("default")!;
      expect(m.requiresGrad, path).toBe(true);
      expect(relError(m.dataSync(), T.get(key)), path).toBeLessThan(1e-6);
    }
    // B = 0 and m = ‖W‖: the adapter starts as a no-op
    peft.eval();
    const plain = loadGpt2();
    plain.eval();
    expect(relError(logitsOf(peft), logitsOf(plain))).toBeLessThan(1e-6);
    expect(peft.trainableParameters()).toHaveLength(18); // A, B, m on 6 layers
    plain.dispose();
    peft.dispose();
  });

  it("a DoRA adapter saved by PEFT gives PEFT's logits; merging gives its merged weight and logits; unmerging restores W", () => {
    const peft = PeftModel.fromPretrainedSync(loadGpt2(), join(DIR, "adapter"), quiet);
    peft.eval();
    expect(relError(logitsOf(peft), T.get("logits"))).toBeLessThan(TOL);
    const w = weightOf(peft, "transformer.h.0.attn.c_attn");
    const w0 = Float32Array.from(w.dataSync());
    peft.mergeAdapter();
    expect(relError(w.dataSync(), T.get("merged.transformer.h.0.attn.c_attn.weight"))).toBeLessThan(1e-6);
    expect(relError(logitsOf(peft), T.get("logits_merged"))).toBeLessThan(TOL);
    peft.unmergeAdapter();
    expect(relError(w.dataSync(), w0)).toBeLessThan(1e-6);
    expect(relError(logitsOf(peft), T.get("logits_unmerged"))).toBeLessThan(TOL);
    peft.dispose();
  });

  it("3 AdamW steps train A, B and the magnitudes as PEFT does (the norm is a constant in backward)", () => {
    const ref = readJson<{ losses: number[]; final_loss: number; trainable_parameter_names: string[] }>(join(DIR, "reference.json"));
    const peft = PeftModel.fromPretrainedSync(loadGpt2(), join(DIR, "adapter"), { isTrainable: true, ...quiet });
    peft.eval(); // the reference ran in eval mode (no dropout)
    const trainable = peft.namedParameters().filter(([, p]) => p.requiresGrad).map(([n]) => n);
    expect(trainable).toEqual(ref.trainable_parameter_names);
    const opt = new AdamW(peft.trainableParameters(), { lr: 1e-2, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0.01 });
    const losses: number[] = [];
    for (let step = 0; step < 3; step++) {
      tidy(() => {
        const loss = lossOf(peft);
        losses.push(loss.item());
        loss.backward();
      });
      opt.step();
      opt.zeroGrad();
    }
    expect(relError(losses, ref.losses)).toBeLessThan(TOL);
    const final = noGrad(() => tidy(() => lossOf(peft).item()));
    expect(Math.abs(final - ref.final_loss) / ref.final_loss).toBeLessThan(TOL);
    const want = readSafetensors(join(DIR, "adapter-after-3-steps", "adapter_model.safetensors"));
    const state = peft.adapterStateDict();
    expect(Object.keys(state).sort()).toEqual([...want.names].sort());
    for (const key of want.names) expect(relError(state[key]!.dataSync(), toTensor(want.get(key)).dataSync()), key).toBeLessThan(TOL);
    opt.dispose();
    peft.dispose();
  });

  it("saves lora_magnitude_vector under PEFT's keys, and the saved adapter loads back to the same logits", () => {
    const out = mkdtempSync(join(tmpdir(), "lowrank-dora-"));
    try {
      const peft = PeftModel.fromPretrainedSync(loadGpt2(), join(DIR, "adapter"), quiet);
      peft.savePretrainedSync(out);
      const saved = readSafetensors(join(out, "adapter_model.safetensors"));
      const original = readSafetensors(join(DIR, "adapter", "adapter_model.safetensors"));
      expect([...saved.names].sort()).toEqual([...original.names].sort());
      expect(saved.names).toContain("base_model.model.transformer.h.1.mlp.c_proj.lora_magnitude_vector");
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

  it("a DoRA adapter and a plain one, both active: merging them in either order gives the unmerged output", () => {
    for (const order of [["dora", "plain"], ["plain", "dora"]]) {
      const peft = PeftModel.fromPretrainedSync(loadGpt2(), join(DIR, "adapter"), { adapterName: "dora", ...quiet });
      peft.loadAdapter(join(PEFT_TINY, "adapter-c_attn"), "plain");
      peft.setAdapter(order);
      peft.eval();
      const w = weightOf(peft, "transformer.h.1.attn.c_attn");
      const w0 = Float32Array.from(w.dataSync());
      const unmerged = logitsOf(peft);
      peft.mergeAdapter({ adapterNames: order });
      expect(relError(logitsOf(peft), unmerged), order.join(" then ")).toBeLessThan(1e-5);
      peft.unmergeAdapter();
      expect(relError(w.dataSync(), w0), order.join(" then ")).toBeLessThan(1e-6);
      peft.dispose();
    }
  });
});

describe("DoRA layer", () => {
  /** A Linear or Conv1D LoRA layer with one DoRA adapter whose B and m are moved off their init. */
  function doraLayer(kind: "linear" | "conv1d", dropoutP: number, seed: number): { layer: LoraLinear; generator: Generator } {
    const generator = new Generator(seed);
    const base = kind === "linear" ? new Linear(6, 5, { generator }) : new Conv1D(5, 6, { generator });
    const layer = new LoraLinear(base);
    layer.addAdapter("d", { r: 3, alpha: 6, scaling: 2, dropout: dropoutP, init: true, useDora: true, generator });
    noGrad(() => {
      const B = layer.loraB("d"), m = layer.magnitude("d")!;
      overwrite(B, Float32Array.from({ length: B.size }, (_, i) => Math.sin(i + 1) / 3));
      overwrite(m, Float32Array.from(m.dataSync(), (v, i) => v * (1 + 0.2 * Math.cos(i))));
    });
    layer.activeAdapters = ["d"];
    return { layer, generator };
  }

  it("with dropout while training, the base term runs on the dropped input (PEFT's DoRA forward)", () => {
    for (const kind of ["linear", "conv1d"] as const) {
      const { layer, generator } = doraLayer(kind, 0.5, 11);
      layer.train();
      const x = tensor(Float32Array.from({ length: 4 * 6 }, (_, i) => Math.cos(0.7 * i)), { shape: [4, 6] });
      const state = generator.getState();
      const y = noGrad(() => layer.forward(x));
      // the same mask again, and the formula written out: y = base(x) + (mag − 1)·x_d·Wᵀ + mag·s·x_d·Aᵀ·Bᵀ
      generator.setState(state);
      const want = noGrad(() => tidy(() => {
        const xd = dropout(x, 0.5, { training: true, generator });
        const W = kind === "linear" ? layer.base_layer.weight : layer.base_layer.weight.transpose(0, 1);
        const Wd = kind === "linear" ? W : W.contiguous();
        const delta = linear(linear(xd, layer.loraA("d")), layer.loraB("d")).dataSync();
        const baseDropped = linear(xd, Wd).dataSync();
        const base = layer.base_layer.forward(x).dataSync();
        const norm = rowNorms(Wd.dataSync(), layer.loraA("d").dataSync(), layer.loraB("d").dataSync(), 5, 6, 3, 2);
        const m = layer.magnitude("d")!.dataSync();
        return Float32Array.from(base, (v, i) => {
          const mag = m[i % 5]! / norm[i % 5]!;
          return v + (mag - 1) * baseDropped[i]! + mag * 2 * delta[i]!;
        });
      }));
      expect(relError(y.dataSync(), want), kind).toBeLessThan(1e-6);
      // in eval mode the same layer uses the undropped input
      layer.eval();
      const yEval = noGrad(() => layer.forward(x));
      expect(relError(yEval.dataSync(), y.dataSync()), kind).toBeGreaterThan(1e-2);
      layer.dispose();
    }
  });

  it("a training step with DoRA leaks nothing", () => {
    const peft = getPeftModel(loadGpt2(), new LoraConfig({ r: 4, loraDropout: 0.1, targetModules: ["c_attn", "c_proj"], useDora: true }), "default", quiet);
    const opt = new AdamW(peft.trainableParameters(), { lr: 1e-3 });
    const step = () => {
      tidy(() => lossOf(peft).backward());
      opt.step();
      opt.zeroGrad();
    };
    step();
    const before = memory().cpu!;
    step();
    step();
    peft.mergeAdapter();
    peft.unmergeAdapter();
    expect(memory().cpu).toMatchObject({ bytes: before.bytes, buffers: before.buffers, tensors: before.tensors });
    opt.dispose();
    peft.dispose();
  });

  it("refuses DoRA on embeddings", () => {
    const model = loadGpt2();
    expect(() => getPeftModel(model, new LoraConfig({ targetModules: ["wte"], useDora: true }), "default", quiet)).toThrow(/DoRA.*not embeddings/);
    model.dispose();
  });
});

// ---- helpers -------------------------------------------------------------------------------------

/** Writes values into an existing tensor (a parameter) in place. */
function overwrite(dst: Tensor, values: Float32Array): void {
  const src = tensor(values, { shape: dst.shape });
  copyInto(dst, src);
  src.dispose();
}

/** ‖W + s·B·A‖ per output row, float64 (W [out, in], A [r, in], B [out, r]). */
function rowNorms(W: ArrayLike<number>, A: ArrayLike<number>, B: ArrayLike<number>, out: number, inDim: number, r: number, s: number): Float64Array {
  const norms = new Float64Array(out);
  for (let o = 0; o < out; o++) {
    let sq = 0;
    for (let i = 0; i < inDim; i++) {
      let v = W[o * inDim + i]!;
      for (let k = 0; k < r; k++) v += s * B[o * r + k]! * A[k * inDim + i]!;
      sq += v * v;
    }
    norms[o] = Math.sqrt(sq);
  }
  return norms;
}
