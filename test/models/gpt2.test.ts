// GPT-2 against transformers: logits, losses and gradients from test/fixtures/gpt2-tiny
// (made by test/fixtures/make_fixtures.py with transformers 5.18, float32, eval mode).
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generate } from "../../lib/models/generate.js";
import { GPT2Config } from "../../lib/models/gpt2/config.js";
import { GPT2LMHeadModel } from "../../lib/models/gpt2/model.js";
import { KVCache } from "../../lib/models/kvcache.js";
import { fromTensor, Generator, memory, noGrad, readSafetensors, tensor, tidy, toTensor, writeSafetensors, type Tensor } from "../../lib/index.js";
import { relError } from "../helpers.js";

const dir = "test/fixtures/gpt2-tiny";
const ref = JSON.parse(readFileSync(join(dir, "reference.json"), "utf8"));
const ids = (rows: number[][]) => tensor(Int32Array.from(rows.flat()), { shape: [rows.length, rows[0]!.length] });
const flat = (x: unknown): number[] => (Array.isArray(x) ? x.flatMap(flat) : [x as number]);

// float32 on both sides with different summation orders: elements agree to ~1e-6 relative;
// the bar is 1e-4 relative.
const TOL = 1e-4;

/**
 * Logits [B, T, V] against transformers': the relative L2 error over all of them, and per position
 * (one wrong position hides in a global figure over B·T positions).
 */
function expectLogits(got: ArrayLike<number>, want: number[], tol = TOL): void {
  expect(relError(got, want)).toBeLessThan(tol);
  const V = 101;
  for (let row = 0; row < want.length / V; row++) {
    const at = (a: ArrayLike<number>) => Array.from({ length: V }, (_, j) => a[row * V + j]!);
    expect(relError(at(got), at(want)), `position ${row} (batch ${Math.floor(row / ref.input_ids[0].length)})`).toBeLessThan(tol);
  }
}

let model: GPT2LMHeadModel;
beforeAll(() => {
  model = GPT2LMHeadModel.fromPretrainedSync(dir);
  model.eval();
});
afterAll(() => model.dispose());

describe("GPT-2 parity with transformers (tiny fixture)", () => {
  it("reads config.json", () => {
    expect(model.config.nLayer).toBe(2);
    expect(model.config.nEmbd).toBe(64);
    expect(model.config.vocabSize).toBe(101);
    expect(model.namedParameters().map(([n]) => n).slice(0, 4)).toEqual([
      "transformer.wte.weight", "transformer.wpe.weight", "transformer.h.0.ln_1.weight", "transformer.h.0.ln_1.bias",
    ]);
  });

  it("logits without and with an attention mask", () => {
    noGrad(() =>
      tidy(() => {
        const input = ids(ref.input_ids);
        const a = model.forward({ inputIds: input }).logits;
        expect(a.shape).toEqual([2, 11, 101]);
        expectLogits(a.dataSync(), flat(ref.logits_nomask));
        const mask = ids(ref.attention_mask);
        const b = model.forward({ inputIds: input, attentionMask: mask }).logits;
        expectLogits(b.dataSync(), flat(ref.logits_mask));
      }),
    );
  });

  it("losses with labels shifted inside and -100 ignored", () => {
    noGrad(() =>
      tidy(() => {
        const input = ids(ref.input_ids), mask = ids(ref.attention_mask);
        const cases: [Tensor | null, number[][], number][] = [
          [null, ref.input_ids, ref.loss.labels_eq_input_ids_nomask],
          [mask, ref.input_ids, ref.loss.labels_eq_input_ids_with_mask],
          [mask, ref.labels_masked, ref.loss.labels_masked],
          [mask, ref.labels_partial, ref.loss.labels_partial],
        ];
        for (const [m, labels, want] of cases) {
          const { loss } = model.forward({ inputIds: input, attentionMask: m, labels: ids(labels) });
          expect(Math.abs(loss!.item() - want) / want).toBeLessThan(TOL);
        }
      }),
    );
  });

  it("gradients of every parameter match PyTorch's", () => {
    const grads = readSafetensors(join(dir, "reference.safetensors"));
    const names = grads.names.filter((n) => n.startsWith("grad."));
    // the fixture holds one gradient per parameter, and every one is checked
    expect(names.map((n) => n.slice("grad.".length)).sort()).toEqual(model.namedParameters().map(([n]) => n).sort());
    tidy(() => {
      const { loss } = model.forward({ inputIds: ids(ref.input_ids), attentionMask: ids(ref.attention_mask), labels: ids(ref.labels_masked) });
      loss!.backward();
      const params = new Map(model.namedParameters());
      for (const name of names) {
        const p = params.get(name.slice("grad.".length));
        expect(p, name).toBeDefined();
        const want = toTensor(grads.get(name));
        // Gradients sum many more float32 terms than the forward: 1e-4 relative (L2).
        expect(relError(p!.grad!.dataSync(), want.dataSync()), name).toBeLessThan(TOL);
      }
    });
    model.zeroGrad();
  });

  it("loads sharded and hub-style checkpoints (keys without the transformer. prefix, attn.bias buffers) to the same logits", () => {
    for (const other of ["test/fixtures/gpt2-tiny-sharded", "test/fixtures/gpt2-tiny-sharded/hub-style"]) {
      const m = GPT2LMHeadModel.fromPretrainedSync(other);
      m.eval();
      noGrad(() =>
        tidy(() => {
          const input = ids(ref.input_ids);
          expectLogits(m.forward({ inputIds: input }).logits.dataSync(), flat(ref.logits_nomask));
        }),
      );
      m.dispose();
    }
  });

  it("scale_attn_by_inverse_layer_idx", () => {
    const variant = ref.variant_scale_attn_by_inverse_layer_idx;
    const m = GPT2LMHeadModel.fromPretrainedSync(dir);
    const scaled = new GPT2LMHeadModel(new GPT2Config({ ...m.config, ...{ scaleAttnByInverseLayerIdx: true } }));
    scaled.loadStateDict(m.stateDict());
    scaled.eval();
    noGrad(() => tidy(() => expectLogits(scaled.forward({ inputIds: ids(ref.input_ids) }).logits.dataSync(), flat(variant.logits_nomask))));
    m.dispose();
    scaled.dispose();
  });

  it("savePretrained writes a checkpoint that loads back identically", () => {
    const out = mkdtempSync(join(tmpdir(), "lowrank-gpt2-"));
    try {
      model.savePretrainedSync(out);
      const again = GPT2LMHeadModel.fromPretrainedSync(out);
      const a = model.stateDict(), b = again.stateDict();
      expect(Object.keys(b)).toEqual(Object.keys(a));
      for (const k of Object.keys(a)) expect(b[k]!.dataSync(), k).toEqual(a[k]!.dataSync());
      expect(JSON.parse(readFileSync(join(out, "config.json"), "utf8"))).toMatchObject({ model_type: "gpt2", n_embd: 64, n_layer: 2, vocab_size: 101 });
      again.dispose();
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });

  it("loads weights stored as F16 and BF16 (converted exactly, then computed in float32)", () => {
    for (const stored of ["F16", "BF16"] as const) {
      const out = mkdtempSync(join(tmpdir(), "lowrank-gpt2-"));
      try {
        writeFileSync(join(out, "config.json"), readFileSync(join(dir, "config.json")));
        const params = model.namedParameters();
        writeSafetensors(join(out, "model.safetensors"), Object.fromEntries(params.map(([n, t]) => [n, fromTensor(t, stored)])));
        const low = GPT2LMHeadModel.fromPretrainedSync(out);
        // The same rounding done by hand: each weight through the storage format and back.
        const rounded = Object.fromEntries(
          params.map(([n, t]) => [n, toTensor({ name: n, ...fromTensor(t, stored) })]),
        );
        const own = low.stateDict();
        for (const [n] of params) expect(own[n]!.dataSync(), `${stored} ${n}`).toEqual(rounded[n]!.dataSync());
        Object.values(rounded).forEach((t) => t.dispose());
        low.eval();
        // and the model still computes the same function up to the storage rounding
        const err = noGrad(() => tidy(() => relError(low.forward({ inputIds: ids(ref.input_ids) }).logits.dataSync(), flat(ref.logits_nomask))));
        expect(err).toBeLessThan(stored === "F16" ? 5e-3 : 3e-2);
        low.dispose();
      } finally {
        rmSync(out, { recursive: true, force: true });
      }
    }
  });

  it("fromPretrained returns the model in eval mode, as transformers does", () => {
    const m = GPT2LMHeadModel.fromPretrainedSync(dir);
    expect(m.modules().filter((x) => x.training)).toEqual([]);
    // dropout is off: two forwards agree exactly
    noGrad(() => tidy(() => expect(m.forward({ inputIds: ids(ref.input_ids) }).logits.dataSync()).toEqual(m.forward({ inputIds: ids(ref.input_ids) }).logits.dataSync())));
    m.dispose();
  });

  it("refuses a weight stored as integers, naming the tensor and its dtype", () => {
    const out = mkdtempSync(join(tmpdir(), "lowrank-gpt2-"));
    try {
      writeFileSync(join(out, "config.json"), readFileSync(join(dir, "config.json")));
      const tensors = Object.fromEntries(model.namedParameters().map(([n, t]) => [n, fromTensor(t)]));
      tensors["transformer.h.1.attn.c_attn.weight"] = noGrad(() => tidy(() => fromTensor(model.transformer.h.at(1)!.attn.c_attn.weight.to("cpu", "int32"))));
      writeSafetensors(join(out, "model.safetensors"), tensors);
      const before = memory().cpu!;
      expect(() => GPT2LMHeadModel.fromPretrainedSync(out)).toThrow(/"transformer\.h\.1\.attn\.c_attn\.weight" \[64, 192\] is stored as I32 where float32 values are expected/);
      expect(memory().cpu).toMatchObject({ bytes: before.bytes, tensors: before.tensors });
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });

  it("explains missing directories, files and mismatched weights", () => {
    expect(() => GPT2LMHeadModel.fromPretrainedSync("/nonexistent/model")).toThrow(/model directory \/nonexistent\/model does not exist/);
    expect(() => GPT2LMHeadModel.fromPretrainedSync("test/fixtures")).toThrow(/config.json is missing/);
    const out = mkdtempSync(join(tmpdir(), "lowrank-gpt2-"));
    try {
      const small = new GPT2LMHeadModel(new GPT2Config({ nLayer: 1, nEmbd: 64, nHead: 4, vocabSize: 101, nPositions: 64 }));
      small.savePretrainedSync(out);
      small.dispose();
      // config says 1 layer; rewrite it to say 2 so layer 1's tensors are missing
      const cfg = JSON.parse(readFileSync(join(out, "config.json"), "utf8"));
      cfg.n_layer = 2;
      cfg.n_embd = 64;
      writeFileSync(join(out, "config.json"), JSON.stringify(cfg));
      expect(() => GPT2LMHeadModel.fromPretrainedSync(out)).toThrow(/missing tensors: transformer\.h\.1\.ln_1\.weight/);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });
});

describe("generation", () => {
  it("greedy decoding reproduces transformers' generate()", () => {
    const g = ref.greedy;
    const prompt: number[] = g.prompt[0];
    const out = generate(model, prompt, { maxNewTokens: g.max_new_tokens, eosTokenId: null });
    expect([...prompt, ...out]).toEqual(g.output_ids[0]);
  });

  it("the KV cache gives the same tokens as recomputing the prefix, sampling included", async () => {
    const { Generator } = await import("../../lib/index.js");
    const prompt = [3, 14, 15, 92, 65];
    for (const opts of [{}, { temperature: 0.9, topK: 20 }, { temperature: 1.3, topP: 0.8 }]) {
      const a = generate(model, prompt, { ...opts, maxNewTokens: 12, eosTokenId: null, useCache: true, generator: new Generator(5) });
      const b = generate(model, prompt, { ...opts, maxNewTokens: 12, eosTokenId: null, useCache: false, generator: new Generator(5) });
      expect(a).toEqual(b);
      expect(a).toHaveLength(12);
    }
  });

  it("stops at EOS and frees its cache", () => {
    const before = memory().cpu!;
    const out = generate(model, [1, 2, 3], { maxNewTokens: 40, eosTokenId: null });
    const eos = out[2]!;
    const stopped = generate(model, [1, 2, 3], { maxNewTokens: 40, eosTokenId: eos });
    expect(stopped.at(-1)).toBe(eos);
    expect(stopped.length).toBeLessThanOrEqual(3);
    expect(memory().cpu).toMatchObject({ bytes: before.bytes, tensors: before.tensors });
    const cache = new KVCache(2);
    cache.dispose();
  });
});

describe("a fresh model is initialized as transformers' GPT2PreTrainedModel._init_weights", () => {
  // initializer_range 0.05 (not the default 0.02) shows the config is read; 4 layers scale c_proj.
  const config = new GPT2Config({ nLayer: 4, nEmbd: 64, nHead: 4, vocabSize: 1000, nPositions: 64, initializerRange: 0.05 });
  const fresh = () => new GPT2LMHeadModel(config, { generator: new Generator(3) });

  function moments(t: Tensor): { mean: number; std: number } {
    const v = t.dataSync();
    let s = 0, s2 = 0;
    for (const x of v) s += x;
    const mean = s / v.length;
    for (const x of v) s2 += (x - mean) ** 2;
    return { mean, std: Math.sqrt(s2 / v.length) };
  }

  it("weights N(0, initializer_range²), c_proj N(0, (initializer_range/√(2·n_layer))²), biases 0, layer norms 1 and 0", () => {
    const m = fresh();
    const residual = 0.05 / Math.sqrt(2 * 4);
    for (const [name, p] of m.namedParameters()) {
      const { mean, std } = moments(p);
      if (/ln_\w+\.weight$/.test(name)) expect([...p.dataSync()].every((x) => x === 1), name).toBe(true);
      else if (name.endsWith(".bias")) expect([...p.dataSync()].every((x) => x === 0), name).toBe(true);
      else {
        const want = name.endsWith("c_proj.weight") ? residual : 0.05;
        // the sample std of ≥ 4096 normal draws is within 3% of σ (≥ 4 standard errors)
        expect(Math.abs(std - want) / want, `${name}: std ${std}, want ${want}`).toBeLessThan(0.06);
        expect(Math.abs(mean), `${name}: mean ${mean}`).toBeLessThan(4 * want / Math.sqrt(p.size));
      }
    }
    m.dispose();
  });

  it("starts at a loss near ln(vocab): the untrained model predicts about uniformly", () => {
    const m = fresh();
    const tokens = Array.from({ length: 2 * 32 }, (_, i) => (i * 7919) % 1000);
    const input = tensor(Int32Array.from(tokens), { shape: [2, 32] });
    const loss = noGrad(() => tidy(() => m.forward({ inputIds: input, labels: input }).loss!.item()));
    // logits ≈ N(0, (0.05·√64)²) = N(0, 0.16): the expected loss is ln(1000) + 0.16/2 ≈ 6.99
    expect(Math.abs(loss - Math.log(1000)), `loss ${loss}`).toBeLessThan(0.2);
    input.dispose();
    m.dispose();
  });
});
