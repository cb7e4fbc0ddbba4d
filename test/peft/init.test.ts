// initLoraWeights "pissa", "pissa_niter_N" and "olora" against PEFT 0.21
// (test/fixtures/peft-extra/pissa and mlp): the factors, the residual base weight, and loading a
// PiSSA adapter saved by PEFT (which re-runs the init on the fresh base before loading A and B).
//
// Tolerances: PEFT factors in float32, lowrank in float64. PEFT's singular vectors then carry an
// error of about eps₃₂·σ₁/gap; the tiny GPT-2's random weights have a flat spectrum (σ₄ − σ₅ ≈ 0.01
// to 0.04 for σ₁ ≈ 3.2), and PEFT's B·A there is 3e-6 to 1.4e-5 away from the exact float64 one
// (measured with torch in float64), so B·A is compared at 5e-5. On the MLP (a clear gap) PEFT's B·A
// is within 4e-7 of exact. The residual W − s·B·A is compared relative to ‖W‖: it is a difference,
// and where the top-r part dominates W (the MLP) its own norm is small. A wrong transpose or sign
// shows as an error near 1.
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { getPeftModel, Linear, LoraConfig, LoraEmbedding, LoraLinear, Module, noGrad, PeftModel, readSafetensors, relu, tensor, tidy, toTensor, type Tensor } from "../../lib/index.js";
import { relError } from "../helpers.js";
import { alignSigns, EXTRA, fixtureTensors, loadGpt2, logitsOf, product, quiet, readJson } from "./extra-fixtures.js";

const TOL = 1e-4;

/** ‖a − b‖ / ‖scale‖. */
function errorRelativeTo(a: ArrayLike<number>, b: ArrayLike<number>, scale: ArrayLike<number>): number {
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) num += (a[i]! - b[i]!) ** 2;
  for (let i = 0; i < scale.length; i++) den += scale[i]! ** 2;
  return Math.sqrt(num / den);
}

describe("PiSSA on GPT-2's Conv1D layers", () => {
  const DIR = join(EXTRA, "pissa");
  const T = fixtureTensors(DIR);

  it("factors each weight as PEFT does (transposed to [out, in]) and leaves W − s·B·A as the base", () => {
    const config = new LoraConfig({ r: 4, loraAlpha: 8, targetModules: ["c_attn", "c_proj"], initLoraWeights: "pissa" });
    const peft = getPeftModel(loadGpt2(), config, "default", quiet);
    const layers = T.names.filter((n) => n.startsWith("init.") && n.endsWith(".lora_A")).map((n) => n.slice(5, -7));
    expect(layers).toHaveLength(6);
    for (const path of layers) {
      const layer = peft.loraLayers.get(path) as LoraLinear;
      const A = layer.loraA("default").dataSync() as Float32Array, B = layer.loraB("default").dataSync() as Float32Array;
      const refA = T.get(`init.${path}.lora_A`), refB = T.get(`init.${path}.lora_B`);
      const { inFeatures: k, outFeatures: d } = layer;
      expect(relError(product(B, A, d, 4, k), product(refB, refA, d, 4, k)), path).toBeLessThan(5e-5);
      const aligned = alignSigns(A, B, refA, 4);
      expect(relError(aligned.A, refA), path).toBeLessThan(1e-4);
      expect(relError(aligned.B, refB), path).toBeLessThan(1e-4);
    }
    for (const key of T.names.filter((n) => n.startsWith("residual."))) {
      const path = key.slice("residual.".length, -".weight".length);
      const w = (peft.loraLayers.get(path) as LoraLinear).base_layer.weight;
      // inherits PEFT's float32 error in B·A (above), which is up to 1.4e-5 of the top-r part of W
      expect(relError(w.dataSync(), T.get(key)), key).toBeLessThan(2e-5);
    }
    // the adapted model starts out as the base model
    peft.eval();
    expect(relError(logitsOf(peft), T.get("logits_base"))).toBeLessThan(1e-5);
    peft.dispose();
  });

  it("loads a PiSSA adapter saved by PEFT onto the original base: the init runs again, then A and B load (PEFT's logits)", () => {
    const peft = PeftModel.fromPretrainedSync(loadGpt2(), join(DIR, "adapter"), quiet);
    peft.eval();
    expect(relError(logitsOf(peft), T.get("logits_reloaded"))).toBeLessThan(TOL);
    expect(relError(logitsOf(peft), T.get("logits_trained"))).toBeLessThan(TOL);
    const merged = peft.mergeAndUnload();
    expect(relError(logitsOf(merged), T.get("logits_reloaded_merged"))).toBeLessThan(TOL);
    merged.dispose();
  });

  it("warns, as PEFT does, when a PiSSA adapter shares the model with other adapters", () => {
    const warnings: string[] = [];
    const peft = PeftModel.fromPretrainedSync(loadGpt2(), join(DIR, "adapter"), { onWarning: (m) => warnings.push(m) });
    expect(warnings.filter((w) => w.includes("changes the base weights"))).toEqual([]);
    peft.addAdapter("other", new LoraConfig({ r: 2, targetModules: ["c_fc"] }));
    expect(warnings.filter((w) => w.includes('"pissa" changes the base weights of the model'))).toHaveLength(1);
    peft.dispose();
  });

  it("refuses OLoRA on Conv1D, where PEFT's init makes A [r, out] and B [in, r]", () => {
    const ref = readJson<{ olora_on_gpt2_conv1d: { lora_A_shape: number[]; forward_error: string } }>(join(EXTRA, "mlp", "reference.json"));
    expect(ref.olora_on_gpt2_conv1d.lora_A_shape).toEqual([4, 192]); // what PEFT does: [r, out], unusable
    expect(ref.olora_on_gpt2_conv1d.forward_error).toMatch(/cannot be multiplied/);
    const model = loadGpt2();
    expect(() => getPeftModel(model, new LoraConfig({ r: 4, targetModules: ["c_attn"], initLoraWeights: "olora" }), "default", quiet)).toThrow(
      /"olora" on a Conv1D layer.*"pissa"/s,
    );
    model.dispose();
  });

  it("on embeddings, PiSSA falls back to the default init and leaves the table alone, as in PEFT", () => {
    const model = loadGpt2();
    const wte = Float32Array.from(model.transformer.wte.weight.dataSync());
    const peft = getPeftModel(model, new LoraConfig({ r: 2, targetModules: ["wte"], initLoraWeights: "pissa" }), "default", quiet);
    const layer = peft.loraLayers.get("transformer.wte") as LoraEmbedding;
    expect(layer.base_layer.weight.dataSync()).toEqual(wte);
    expect(layer.loraA("default").dataSync().every((v) => v === 0)).toBe(true);
    peft.dispose();
  });
});

/** test/fixtures/peft-extra/mlp: fc1 = Linear(16, 24), relu, fc2 = Linear(24, 12). */
class MLP extends Module {
  declare fc1: Linear;
  declare fc2: Linear;
  constructor() {
    super();
    this.registerModule("fc1", new Linear(16, 24));
    this.registerModule("fc2", new Linear(24, 12));
  }
  forward(x: Tensor): Tensor {
    return this.fc2.forward(relu(this.fc1.forward(x)));
  }
}

describe("pissa_niter_N and OLoRA on nn.Linear (a model with a clear spectral gap)", () => {
  const DIR = join(EXTRA, "mlp");
  const T = fixtureTensors(DIR);
  const file = readSafetensors(join(DIR, "model.safetensors"));
  const loadMlp = () => {
    const m = new MLP();
    const state = Object.fromEntries(file.names.map((n) => [n, toTensor(file.get(n))]));
    m.loadStateDict(state);
    for (const t of Object.values(state)) t.dispose();
    return m;
  };
  const originalWeight = (fc: string) => toTensor(file.get(`${fc}.weight`)).dataSync();
  const x = () => tensor(T.get("x"), { shape: [5, 16] });
  const outputOf = (m: { forward(x: Tensor): Tensor }) => noGrad(() => tidy(() => m.forward(x()).dataSync()));
  const peftFor = (init: "pissa_niter_4" | "olora") =>
    getPeftModel(loadMlp(), new LoraConfig({ r: 3, loraAlpha: 6, targetModules: ["fc1", "fc2"], initLoraWeights: init }), "default", quiet);

  it("pissa_niter_4: B·A and the residual equal PEFT's randomized PiSSA (which found the top-r subspace)", () => {
    const ref = readJson<{ cases: Record<string, Record<string, number>> }>(join(DIR, "reference.json"));
    // PEFT's randomized factors are this close to exact PiSSA here, so comparing with them is meaningful
    expect(ref.cases.pissa_niter_4!.fc1_BA_rel_diff_vs_exact_pissa).toBeLessThan(1e-5);
    const peft = peftFor("pissa_niter_4");
    for (const [fc, inDim, out] of [["fc1", 16, 24], ["fc2", 24, 12]] as const) {
      const layer = peft.loraLayers.get(fc) as LoraLinear;
      const ours = product(layer.loraB("default").dataSync(), layer.loraA("default").dataSync(), out, 3, inDim);
      const theirs = product(T.get(`pissa_niter_4.${fc}.lora_B`), T.get(`pissa_niter_4.${fc}.lora_A`), out, 3, inDim);
      expect(relError(ours, theirs), fc).toBeLessThan(1e-5);
      expect(errorRelativeTo(layer.base_layer.weight.dataSync(), T.get(`pissa_niter_4.residual.${fc}.weight`), originalWeight(fc)), fc).toBeLessThan(1e-6);
    }
    expect(relError(outputOf(peft), T.get("y_base"))).toBeLessThan(1e-5);
    peft.dispose();
  });

  it("olora: A = R[:r], B = Q[:, :r] of W = Q·R with torch's signs, and the residual, as PEFT", () => {
    const peft = peftFor("olora");
    for (const fc of ["fc1", "fc2"]) {
      const layer = peft.loraLayers.get(fc) as LoraLinear;
      expect(relError(layer.loraA("default").dataSync(), T.get(`olora.${fc}.lora_A`)), fc).toBeLessThan(1e-5);
      expect(relError(layer.loraB("default").dataSync(), T.get(`olora.${fc}.lora_B`)), fc).toBeLessThan(1e-5);
      expect(errorRelativeTo(layer.base_layer.weight.dataSync(), T.get(`olora.residual.${fc}.weight`), originalWeight(fc)), fc).toBeLessThan(1e-6);
    }
    expect(relError(outputOf(peft), T.get("olora.y_init"))).toBeLessThan(1e-5);
    // merging folds the factors back: W − s·B·A + s·B·A = W
    const merged = peft.mergeAndUnload();
    expect(relError(outputOf(merged), T.get("y_base"))).toBeLessThan(1e-5);
    merged.dispose();
  });

  it("exact and randomized PiSSA are the same here: lowrank always computes the exact truncated SVD", () => {
    const a = peftFor("pissa_niter_4");
    const b = getPeftModel(loadMlp(), new LoraConfig({ r: 3, loraAlpha: 6, targetModules: ["fc1", "fc2"], initLoraWeights: "pissa" }), "default", quiet);
    for (const fc of ["fc1", "fc2"]) {
      const [la, lb] = [a.loraLayers.get(fc)!, b.loraLayers.get(fc)!];
      expect(la.loraA("default").dataSync()).toEqual(lb.loraA("default").dataSync());
      expect(la.loraB("default").dataSync()).toEqual(lb.loraB("default").dataSync());
    }
    a.dispose();
    b.dispose();
  });
});
