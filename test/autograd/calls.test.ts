// How many JS-to-native calls and storage allocations a training step makes (issue 11: "the number
// of JS-to-native calls per step is counted and kept small"). The profiler (lib/profile.ts) wraps
// every addon function and the Storage constructor when LOWRANK_PROFILE is set as the addon loads,
// so this file turns it on before anything is imported.
import { afterAll, describe, expect, it, vi } from "vitest";

vi.hoisted(() => {
  process.env.LOWRANK_PROFILE = "1";
});

import { AdamW, getPeftModel, LoraConfig, tensor, tidy, type Tensor } from "../../lib/index.js";
import { GPT2Config } from "../../lib/models/gpt2/config.js";
import { GPT2LMHeadModel } from "../../lib/models/gpt2/model.js";
import { LlamaConfig } from "../../lib/models/llama/config.js";
import { LlamaForCausalLM } from "../../lib/models/llama/model.js";
import { add, mul, sum } from "../../lib/ops/index.js";
import { PROFILING, profileEntries, profilePhase, profileReset } from "../../lib/profile.js";
import { Generator } from "../../lib/tensor/random.js";
import { randomValues } from "../helpers.js";

afterAll(() => {
  delete process.env.LOWRANK_PROFILE;
});

/** Calls per "<phase> | <kernel>" key, and the totals, of what fn does. */
function count(fn: () => void): { calls: number; allocations: number; byKey: Map<string, number> } {
  profileReset();
  fn();
  const entries = profileEntries();
  return {
    calls: entries.reduce((n, e) => n + e.calls, 0),
    allocations: entries.filter((e) => e.key.endsWith("(alloc)")).reduce((n, e) => n + e.calls, 0),
    byKey: new Map(entries.map((e) => [e.key, e.calls])),
  };
}

describe("native calls per training step", () => {
  it("the profiler is on in this file", () => expect(PROFILING).toBe(true));

  /** Counts of one training step (after a warm-up step) of `model` with LoRA on `targets`, dropout on. */
  function countStep(model: GPT2LMHeadModel | LlamaForCausalLM, targets: string[] | "all-linear", fanInFanOut: boolean) {
    const peft = getPeftModel(model, new LoraConfig({ taskType: "CAUSAL_LM", r: 4, loraAlpha: 8, loraDropout: 0.05, targetModules: targets, fanInFanOut, bias: "none" }));
    peft.train();
    const opt = new AdamW(peft.trainableParameters(), { lr: 1e-3 });
    const ids = tensor(Int32Array.from({ length: 2 * 16 }, (_, i) => (i * 7) % 97), { shape: [2, 16] });
    const step = () => {
      tidy(() => {
        const out = profilePhase("forward", () => peft.forward({ inputIds: ids, labels: ids }));
        out.loss!.item();
        profilePhase("backward (engine)", () => out.loss!.backward());
      });
      profilePhase("optimizer", () => {
        opt.step();
        opt.zeroGrad();
      });
    };
    step(); // warm-up: the optimizer creates its state
    const counts = count(step);
    ids.dispose();
    opt.dispose();
    return counts;
  }

  it("a 2-layer GPT-2 LoRA step (c_attn + c_proj, dropout on) stays within its call and allocation budget", () => {
    const model = new GPT2LMHeadModel(new GPT2Config({ nLayer: 2, nEmbd: 64, nHead: 4, vocabSize: 101, nPositions: 64 }), { generator: new Generator(1) });
    const { calls, allocations, byKey } = countStep(model, ["c_attn", "c_proj"], true);
    // Before the engine summed in place, slices' backward returned pieces and loraDelta shared one
    // buffer between drop(x) and gx: 288 calls and 137 allocations (commit 5f683ba); 239 and 104
    // before the CPU's fused LoRA calls (native/cpu/lora.cc); 186 and 91 while the q, k, v slices'
    // gradients were copied into one buffer; 174 before bias and gelu went into the GEMM's epilogue.
    expect(calls).toBeLessThanOrEqual(164);
    expect(allocations).toBeLessThanOrEqual(85);
    // Attention writes dq, dk, dv in place in one buffer laid out as the fused qkv: no copies, and no
    // zero fill besides the loss's seed.
    expect(byKey.has("backward (engine) | copyStrided")).toBe(false);
    expect(byKey.get("backward (engine) | fill")).toBe(1);
    expect([...byKey.keys()].filter((k) => k.startsWith("backward slice"))).toEqual([]);
    // Per LoRA layer (6 here): its gradients gx, gA and gB, where there were 6 (v, drop(x), ...) and
    // then 4; the first c_attn's input (layer norm of the frozen embeddings) needs no gradient.
    expect(byKey.get("backward loraDelta | new Storage (alloc)")).toBe(6 * 3 - 1);
    // A linear layer's GEMM with its epilogue is keyed and counted as a GEMM of its shape: GPT-2's
    // c_fc (bias + gelu) and mlp.c_proj (bias), 32 rows, once per layer.
    expect(byKey.get("forward | gemm 32x256x64 +bias +gelu")).toBe(2);
    expect(byKey.get("forward | gemm 32x64x256 +bias")).toBe(2);
    const gemmFlops = profileEntries().find((e) => e.key === "forward | gemm 32x256x64 +bias +gelu")?.flops;
    expect(gemmFlops).toBe(2 * 2 * 32 * 256 * 64);
  });

  it("a 2-layer Llama-family LoRA step (all-linear, dropout on) stays within its budget", () => {
    const config = new LlamaConfig({ vocabSize: 97, hiddenSize: 48, intermediateSize: 100, numHiddenLayers: 2, numAttentionHeads: 6, numKeyValueHeads: 2, initializerRange: 0.05 });
    const { calls, allocations } = countStep(new LlamaForCausalLM(config, { generator: new Generator(1) }), "all-linear", false);
    expect(calls).toBeLessThanOrEqual(302); // 484 before (commit 5f683ba), 425 before the fused CPU LoRA calls
    expect(allocations).toBeLessThanOrEqual(158); // 234, then 189
  });

  it("three slices that tile a tensor (a fused q/k/v) cost one allocation and three copies in backward, and give its gradient", () => {
    const [B, T, C] = [2, 3, 4];
    const x = tensor(randomValues(B * T * 3 * C, 1), { shape: [B, T, 3 * C] }).requireGrad();
    const w = [0, 1, 2].map((i) => tensor(randomValues(B * T * C, 2 + i), { shape: [B, T, C] }));
    const { calls, byKey } = count(() =>
      tidy(() => {
        const loss = w.map((wi, i) => sum(mul(x.slice(2, i * C, (i + 1) * C), wi))).reduce((a, b) => add(a, b));
        profilePhase("backward (engine)", () => loss.backward());
      }),
    );
    // d loss / d x[.., i·C + c] = w_i[.., c]
    const want = new Float32Array(B * T * 3 * C);
    for (let row = 0; row < B * T; row++) {
      for (let i = 0; i < 3; i++) want.set(w[i]!.dataSync().subarray(row * C, (row + 1) * C), row * 3 * C + i * C);
    }
    expect(Array.from(x.grad!.dataSync())).toEqual(Array.from(want));
    expect(byKey.get("backward (engine) | copyStrided")).toBe(3);
    expect(byKey.get("backward (engine) | fill")).toBe(1); // the seed of the scalar loss, not a zero gradient
    expect(byKey.has("backward (engine) | binary")).toBe(false);
    expect(calls).toBeGreaterThan(0);
    [x, ...w].forEach((t: Tensor) => t.dispose());
  });
});
