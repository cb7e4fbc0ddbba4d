// Models loaded with dtype "bfloat16" (issue 11): the weight matrices of Linear, Conv1D and
// Embedding kept in bf16 and frozen, everything else float32, GEMMs as autocast runs them. Checked
// against the same model in float32 on the same device, and against transformers' logits under
// torch.autocast(bfloat16) (test/fixtures/bf16, make_bf16_fixture.py); CPU here,
// test/gpu/bf16-weights.test.ts runs this file's checks on CUDA.
// Tolerances: bf16 keeps 8 mantissa bits (relative rounding 2^-9 ≈ 2e-3 per weight and per GEMM
// input); through a few layers the logits move by ~1e-2 of their norm, so 3e-2 relative L2 for
// logits and 2e-2 for losses (a loss averages many such errors) leaves room without hiding a
// wrong weight (a mis-read bf16 tensor gives errors of order 1).
import { readFileSync } from "node:fs";
import { basename } from "node:path";
import { describe, expect, it } from "vitest";
import { AdamW, AutoModelForCausalLM, generate, Generator, getPeftModel, KVCache, LoraConfig, noGrad, tensor, tidy, type Tensor } from "../../lib/index.js";
import { randomValues, relError } from "../helpers.js";
import { native } from "../../lib/native/index.js";
import { DTYPE_CODE } from "../../lib/tensor/dtype.js";

const VOCAB = 64; // ids below every fixture's vocabulary
interface AutocastCase { logits_float32: number[][][]; logits_autocast_bf16: number[][][]; rel_autocast_vs_float32: number }
const AUTOCAST = JSON.parse(readFileSync("test/fixtures/bf16/reference.json", "utf8")) as { input_ids: number[][]; cases: Record<string, AutocastCase> };
const CASES = [
  { dir: "test/fixtures/gpt2-tiny", targets: ["c_attn", "c_proj"], fanInFanOut: true },
  { dir: "test/fixtures/llama-tiny/llama-gqa", targets: ["q_proj", "v_proj", "down_proj"], fanInFanOut: false },
];

export function describeBf16Weights(device: string, skipReason?: string): void {
  if (skipReason) {
    describe(`bfloat16 weights on ${device}`, () => it.skip(skipReason, () => {}));
    return;
  }
  describe.each(CASES)(`bfloat16 weights on ${device}: $dir`, ({ dir, targets, fanInFanOut }) => {
    // the same dropout stream for both dtypes (GPT-2's dropout draws from it in training mode)
    const load = (dtype: "float32" | "bfloat16") => AutoModelForCausalLM.fromPretrainedSync(dir, { device, dtype, generator: new Generator(5) });
    const batch = (V: number) => tensor(Int32Array.from(randomValues(2 * 11, 3), (u) => Math.floor(((u + 1) / 2) * V) % V), { shape: [2, 11], device });

    it("keeps the weight matrices in bf16 and frozen, the rest float32; logits within 3e-2 of float32", () => {
      const f32 = load("float32"), bf = load("bfloat16");
      const byName = new Map(f32.namedParameters());
      for (const [name, t] of bf.namedParameters()) {
        const matrix = t.ndim === 2 && name.endsWith("weight") && !name.includes("norm") && !/\bln_/.test(name);
        expect(t.dtype, name).toBe(matrix ? "bfloat16" : "float32");
        if (matrix) expect(t.requiresGrad, name).toBe(false);
        expect(t.shape, name).toEqual(byName.get(name)!.shape);
      }
      const ids = batch(VOCAB);
      const [a, b] = noGrad(() => tidy(() => [f32, bf].map((m) => m.forward({ inputIds: ids }).logits.dataSync())));
      const err = relError(b!, a!);
      expect(err).toBeGreaterThan(0); // the weights really are rounded
      expect(err).toBeLessThan(3e-2);
      ids.dispose();
      f32.dispose();
      bf.dispose();
    });

    it("attention runs at bf16 precision with bf16 weights (float32 with float32 weights), forward and backward", () => {
      // the precision every attention call of a training step passes to the addon
      const precisions = (dtype: "float32" | "bfloat16") => {
        const addon = native(), forward = addon.attentionForward, backward = addon.attentionBackward;
        const seen: number[] = [];
        addon.attentionForward = (a) => (seen.push(a.precision), forward.call(addon, a));
        addon.attentionBackward = (a) => (seen.push(a.precision), backward.call(addon, a));
        try {
          const peft = getPeftModel(load(dtype), new LoraConfig({ r: 2, targetModules: targets, fanInFanOut }), "default", { generator: new Generator(7) });
          const ids = batch(VOCAB);
          tidy(() => peft.forward({ inputIds: ids, labels: ids }).loss!.backward());
          ids.dispose();
          peft.dispose();
        } finally {
          addon.attentionForward = forward;
          addon.attentionBackward = backward;
        }
        return seen;
      };
      const bf = precisions("bfloat16"), f32 = precisions("float32");
      expect(bf.length).toBeGreaterThanOrEqual(4); // a forward and a backward per layer
      expect(new Set(bf)).toEqual(new Set([DTYPE_CODE.bfloat16]));
      expect(new Set(f32)).toEqual(new Set([DTYPE_CODE.float32]));
    });

    // Decoding runs every weight product at m = 1, where the CPU reads the bf16 weights directly
    // (native/cpu/gemv.cc) instead of the GEMM's packing: a cached single-token step must give the
    // bf16 model's own full-forward logits at that position to float32 summation order (1e-5
    // relative), and greedy decoding the float32 model's tokens (on these fixtures no step's two
    // top logits are as close as bf16's 3e-2 moves them).
    it("decoding: a cached step matches the full forward (1e-5), greedy tokens equal float32's", () => {
      const f32 = load("float32"), bf = load("bfloat16");
      const prompt = AUTOCAST.input_ids[0]!, T = prompt.length;
      const row = (r: number[]) => tensor(Int32Array.from(r), { shape: [1, r.length], device });
      const cache = new KVCache(bf.generationSpec().numLayers);
      noGrad(() => tidy(() => {
        const full = bf.forward({ inputIds: row(prompt) }).logits.dataSync();
        const V = full.length / T;
        bf.forward({ inputIds: row(prompt.slice(0, T - 1)), cache });
        const step = bf.forward({ inputIds: row(prompt.slice(T - 1)), cache }).logits.dataSync();
        expect(relError(step, full.subarray((T - 1) * V))).toBeLessThan(1e-5);
      }));
      cache.dispose();
      const opts = { maxNewTokens: 12, eosTokenId: null };
      const want = generate(f32, prompt, opts);
      expect(generate(bf, prompt, opts)).toEqual(want);
      expect(generate(bf, prompt, { ...opts, useCache: false })).toEqual(want);
      f32.dispose();
      bf.dispose();
    });

    it("the Promise fromPretrained keeps the same parameters in bf16 as fromPretrainedSync (dtype, frozen, values)", async () => {
      const sync = load("bfloat16");
      const promised = await AutoModelForCausalLM.fromPretrained(dir, { device, dtype: "bfloat16", generator: new Generator(5) });
      const want = new Map(sync.namedParameters());
      const got = promised.namedParameters();
      expect(got.map(([n]) => n)).toEqual([...want.keys()]);
      for (const [name, t] of got) {
        const w = want.get(name)!;
        expect([t.dtype, t.requiresGrad], name).toEqual([w.dtype, w.requiresGrad]);
        expect(t.dataSync(), name).toEqual(w.dataSync());
      }
      expect(got.some(([, t]) => t.dtype === "bfloat16")).toBe(true);
      sync.dispose();
      promised.dispose();
    });

    it("logits against transformers' under bf16 autocast (test/fixtures/bf16): as close as autocast is to float32", () => {
      const ref = AUTOCAST.cases[basename(dir)]!;
      const bf = load("bfloat16");
      const ids = tensor(Int32Array.from(AUTOCAST.input_ids.flat()), { shape: [2, 11], device });
      const ours = noGrad(() => tidy(() => bf.forward({ inputIds: ids }).logits.dataSync()));
      const flat = (x: number[][][]) => x.flat(2);
      // autocast also rounds each matmul's output to bf16 (ours stays float32), so the two differ by
      // about as much as autocast differs from float32: 2x that distance bounds it.
      const bound = 2 * ref.rel_autocast_vs_float32;
      expect(relError(ours, flat(ref.logits_autocast_bf16))).toBeLessThan(bound);
      expect(relError(ours, flat(ref.logits_float32))).toBeLessThan(bound);
      ids.dispose();
      bf.dispose();
    });

    it("a LoRA run's losses track the float32 run's (5 AdamW steps, within 2e-2)", () => {
      const losses = (dtype: "float32" | "bfloat16") => {
        const peft = getPeftModel(load(dtype), new LoraConfig({ r: 4, loraAlpha: 8, targetModules: targets, fanInFanOut, initLoraWeights: "gaussian" }), "default", { generator: new Generator(7) });
        peft.train();
        const opt = new AdamW(peft.trainableParameters(), { lr: 1e-2 });
        const ids = batch(VOCAB);
        const out: number[] = [];
        for (let s = 0; s < 5; s++) {
          out.push(tidy(() => {
            const loss = peft.forward({ inputIds: ids, labels: ids }).loss!;
            loss.backward();
            return loss.item();
          }));
          opt.step();
          opt.zeroGrad();
        }
        for (const p of peft.trainableParameters()) expect(p.dtype).toBe("float32");
        ids.dispose();
        peft.dispose();
        return out;
      };
      const a = losses("float32"), b = losses("bfloat16");
      expect(a[4]!).toBeLessThan(a[0]!); // it learns
      for (let s = 0; s < 5; s++) expect(Math.abs(b[s]! - a[s]!) / a[s]!, `step ${s}`).toBeLessThan(2e-2);
    });

    // forwardLoss (the Trainer's call) fuses the head with the loss (linearCrossEntropy): the same
    // loss as forward's (1e-5: another summation order) and the same adapter gradients (1e-5 in
    // float32; in bf16 the head's gradient is rounded to bf16 before its 1/count scale instead of
    // after, about one bf16 rounding: 1e-2).
    it.each(["float32", "bfloat16"] as const)("forwardLoss (%s) gives forward's loss and adapter gradients without the logits", (dtype) => {
      const peft = getPeftModel(load(dtype), new LoraConfig({ r: 4, loraAlpha: 8, targetModules: targets, fanInFanOut, initLoraWeights: "gaussian" }), "default", { generator: new Generator(3) });
      peft.eval(); // no dropout: both passes see the same model
      const ids = batch(VOCAB);
      const run = (fused: boolean) => tidy(() => {
        const loss = fused ? peft.forwardLoss({ inputIds: ids, labels: ids }) : peft.forward({ inputIds: ids, labels: ids }).loss!;
        loss.backward();
        const grads = peft.trainableParameters().map((p) => Array.from(p.grad!.dataSync()));
        peft.zeroGrad();
        return { loss: loss.item(), grads: grads.flat() };
      });
      const fused = run(true), plain = run(false);
      expect(Math.abs(fused.loss - plain.loss) / plain.loss).toBeLessThan(1e-5);
      expect(relError(fused.grads, plain.grads)).toBeLessThan(dtype === "float32" ? 1e-5 : 1e-2);
      ids.dispose();
      peft.dispose();
    });

    it("DoRA and base-changing inits (PiSSA) are refused on bf16 weights, with the fix", () => {
      for (const extra of [{ useDora: true }, { initLoraWeights: "pissa" as const }]) {
        const base = load("bfloat16");
        expect(() => getPeftModel(base, new LoraConfig({ r: 2, targetModules: targets, fanInFanOut, ...extra }))).toThrow(
          /works on the base weight itself, which is bfloat16 here .*load the base model with dtype "float32"/,
        );
        base.dispose();
      }
    });

    it("merging into bf16 weights gives the unmerged model's logits (to bf16 rounding), and unmerge restores them", () => {
      const peft = getPeftModel(load("bfloat16"), new LoraConfig({ r: 4, loraAlpha: 8, targetModules: targets, fanInFanOut, initLoraWeights: "gaussian" }), "default", { generator: new Generator(9) });
      peft.eval();
      const ids = batch(VOCAB);
      const logits = () => noGrad(() => tidy(() => peft.forward({ inputIds: ids }).logits.dataSync()));
      const before = logits();
      const w = (peft.namedParameters().find(([n]) => n.endsWith(`${targets[0]}.base_layer.weight`))![1] as Tensor);
      const w0 = w.dataSync().slice();
      peft.mergeAdapter();
      expect(w.dtype).toBe("bfloat16");
      expect(relError(logits(), before)).toBeLessThan(3e-2);
      peft.unmergeAdapter();
      expect(relError(w.dataSync(), w0)).toBeLessThan(1e-2);
      ids.dispose();
      peft.dispose();
    });
  });
}

describeBf16Weights("cpu");
