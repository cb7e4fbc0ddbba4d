// End-to-end training on the CPU with the nn modules and ops: an MLP with plain SGD, a 2-layer
// GPT-style transformer with Adam (both optimizers written here with the ops), and proof that a
// full training step leaks nothing. Seeds are fixed, so the runs are deterministic.
import { describe, expect, it } from "vitest";
import { arange, Generator, keep, memory, noGrad, randn, tensor, tidy, zerosLike, type Tensor } from "../../lib/index.js";
import { Conv1D, Embedding, LayerNorm, Linear, Module, ModuleList } from "../../lib/nn/index.js";
import { scaledDotProductAttention } from "../../lib/ops/attention.js";
import { add, addInPlace, div, gelu, scale, sqrt, square, sub } from "../../lib/ops/elementwise.js";
import { crossEntropy } from "../../lib/ops/crossentropy.js";
import { mean } from "../../lib/ops/reduce.js";
import { split } from "../../lib/ops/shape.js";
import { randomValues } from "../helpers.js";

/** p -= lr · grad for every parameter, in place. */
function sgdStep(params: Tensor[], lr: number): void {
  noGrad(() => tidy(() => params.forEach((p) => p.grad && addInPlace(p, scale(p.grad, -lr)))));
}

/** Adam (no weight decay) with bias correction; the moments are replaced each step, old ones freed. */
class Adam {
  private m = new Map<Tensor, Tensor>();
  private v = new Map<Tensor, Tensor>();
  private t = 0;
  constructor(private readonly params: Tensor[], private readonly lr: number, private readonly betas = [0.9, 0.999] as const, private readonly eps = 1e-8) {}

  step(): void {
    this.t++;
    const [b1, b2] = this.betas;
    const c1 = 1 - b1 ** this.t, c2 = 1 - b2 ** this.t;
    noGrad(() =>
      tidy(() => {
        for (const p of this.params) {
          if (!p.grad) continue;
          const m0 = this.m.get(p) ?? zerosLike(p), v0 = this.v.get(p) ?? zerosLike(p);
          const m = keep(add(scale(m0, b1), scale(p.grad, 1 - b1)));
          const v = keep(add(scale(v0, b2), scale(square(p.grad), 1 - b2)));
          m0.dispose();
          v0.dispose();
          this.m.set(p, m);
          this.v.set(p, v);
          // p -= lr · m̂ / (√v̂ + eps)
          addInPlace(p, scale(div(scale(m, 1 / c1), add(sqrt(scale(v, 1 / c2)), this.eps)), -this.lr));
        }
      }),
    );
  }

  dispose(): void {
    for (const t of [...this.m.values(), ...this.v.values()]) t.dispose();
  }
}

class MLP extends Module {
  declare fc: Linear;
  declare out: Linear;
  constructor(inF: number, hidden: number, outF: number, g: Generator) {
    super();
    this.registerModule("fc", new Linear(inF, hidden, { generator: g }));
    this.registerModule("out", new Linear(hidden, outF, { generator: g }));
  }
  forward(x: Tensor): Tensor {
    return this.out.forward(gelu(this.fc.forward(x)));
  }
}

// ---- a GPT-2-style transformer, names as in transformers' GPT2LMHeadModel ---------------------------

class CausalSelfAttention extends Module {
  declare c_attn: Conv1D;
  declare c_proj: Conv1D;
  constructor(readonly d: number, readonly heads: number, g: Generator) {
    super();
    this.registerModule("c_attn", new Conv1D(3 * d, d, { generator: g }));
    this.registerModule("c_proj", new Conv1D(d, d, { generator: g }));
  }
  /** x [B, T, C] -> [B, T, C]. Every reshape and permute here is a view; only attention allocates. */
  forward(x: Tensor): Tensor {
    const [B, T, C] = x.shape as [number, number, number];
    const H = this.heads, D = C / H;
    const qkv = this.c_attn.forward(x).reshape([B, T, 3, H, D]).permute(2, 0, 3, 1, 4); // [3, B, H, T, D]
    const [q, k, v] = split(qkv, 1, 0).map((t) => t.squeeze(0));
    const y = scaledDotProductAttention(q!, k!, v!, { causal: true }); // [B, H, T, D], stored [B, T, H, D]
    return this.c_proj.forward(y.permute(0, 2, 1, 3).reshape([B, T, C]));
  }
}

class FeedForward extends Module {
  declare c_fc: Conv1D;
  declare c_proj: Conv1D;
  constructor(d: number, g: Generator) {
    super();
    this.registerModule("c_fc", new Conv1D(4 * d, d, { generator: g }));
    this.registerModule("c_proj", new Conv1D(d, 4 * d, { generator: g }));
  }
  forward(x: Tensor): Tensor {
    return this.c_proj.forward(gelu(this.c_fc.forward(x)));
  }
}

class Block extends Module {
  declare ln_1: LayerNorm;
  declare attn: CausalSelfAttention;
  declare ln_2: LayerNorm;
  declare mlp: FeedForward;
  constructor(d: number, heads: number, g: Generator) {
    super();
    this.registerModule("ln_1", new LayerNorm(d));
    this.registerModule("attn", new CausalSelfAttention(d, heads, g));
    this.registerModule("ln_2", new LayerNorm(d));
    this.registerModule("mlp", new FeedForward(d, g));
  }
  forward(x: Tensor): Tensor {
    const h = add(x, this.attn.forward(this.ln_1.forward(x)));
    return add(h, this.mlp.forward(this.ln_2.forward(h)));
  }
}

class TinyGPT extends Module {
  declare wte: Embedding;
  declare wpe: Embedding;
  declare h: ModuleList<Block>;
  declare ln_f: LayerNorm;
  declare lm_head: Linear;
  constructor(vocab: number, context: number, d: number, heads: number, layers: number, seed: number) {
    super();
    const g = new Generator(seed);
    this.registerModule("wte", new Embedding(vocab, d, { generator: g }));
    this.registerModule("wpe", new Embedding(context, d, { generator: g }));
    this.registerModule("h", new ModuleList(Array.from({ length: layers }, () => new Block(d, heads, g))));
    this.registerModule("ln_f", new LayerNorm(d));
    this.registerModule("lm_head", new Linear(d, vocab, { bias: false, generator: g }));
    // GPT-2 initializes embeddings N(0, 0.02²) (nn.Embedding's N(0, 1) would make the tied head's
    // first logits huge), then ties the head to the token embedding.
    for (const e of [this.wte, this.wpe]) {
      e.weight.dispose();
      e.weight = randn([...e.weight.shape], { std: 0.02, generator: g });
    }
    this.lm_head.weight.dispose();
    this.lm_head.weight = this.wte.weight; // tied input and output embeddings, as in GPT-2
  }
  /** ids int32 [B, T] -> logits [B, T, vocab]. */
  forward(ids: Tensor): Tensor {
    const T = ids.shape[1]!;
    let x = add(this.wte.forward(ids), this.wpe.forward(arange(T)));
    for (const block of this.h) x = block.forward(x);
    return this.lm_head.forward(this.ln_f.forward(x));
  }
}

/**
 * Sequences that repeat a random block of `period` tokens. From position period-1 on, the next
 * token is the one `period` places back: predicting it takes attention to a fixed relative offset.
 * The first period-1 targets are unpredictable and ignored (-100).
 */
function repeatTask(batch: number, T: number, period: number, vocab: number, seed: number): { ids: Tensor; targets: Tensor } {
  const r = randomValues(batch * period, seed).map((v) => Math.floor(((v + 1) / 2) * vocab) % vocab);
  const seq = Array.from({ length: batch }, (_, b) => Array.from({ length: T + 1 }, (_, t) => r[b * period + (t % period)]!));
  const ids = seq.flatMap((s) => s.slice(0, T));
  const targets = seq.flatMap((s) => s.slice(1).map((tok, t) => (t < period - 1 ? -100 : tok)));
  return { ids: tensor(Int32Array.from(ids), { shape: [batch, T] }), targets: tensor(Int32Array.from(targets), { shape: [batch, T] }) };
}

describe("training", () => {
  it("an MLP (Linear-gelu-Linear) fits a regression target with plain SGD", () => {
    // Targets from a fixed random teacher of the same shape, so the student can reach ~0 loss.
    const teacher = new MLP(8, 32, 2, new Generator(100)), student = new MLP(8, 32, 2, new Generator(1));
    const x = tensor(randomValues(256 * 8, 2).map((v) => 2 * v), { shape: [256, 8] });
    const y = noGrad(() => teacher.forward(x));
    const losses: number[] = [];
    for (let step = 0; step < 300; step++) {
      losses.push(
        tidy(() => {
          const loss = mean(square(sub(student.forward(x), y)));
          loss.backward();
          sgdStep(student.parameters(), 0.2);
          student.zeroGrad();
          return loss.item();
        }),
      );
    }
    expect(losses[losses.length - 1]!).toBeLessThan(losses[0]! / 20); // 0.11 -> 0.002 in this run
    for (const t of [x, y]) t.dispose();
    teacher.dispose();
    student.dispose();
  });

  it("a 2-layer transformer learns to continue a repeating sequence", () => {
    const [V, T, P, B] = [16, 16, 4, 16];
    const model = new TinyGPT(V, T, 32, 4, 2, 7);
    const opt = new Adam(model.parameters(), 3e-3);
    const losses: number[] = [];
    for (let step = 0; step < 150; step++) {
      losses.push(
        tidy(() => {
          const { ids, targets } = repeatTask(B, T, P, V, 1000 + step); // fresh sequences every step
          const loss = crossEntropy(model.forward(ids), targets);
          loss.backward();
          opt.step();
          model.zeroGrad();
          return loss.item();
        }),
      );
    }
    const first = losses[0]!, last = losses.slice(-10).reduce((a, b) => a + b, 0) / 10;
    expect(Math.abs(first - Math.log(V))).toBeLessThan(0.2); // starts at chance: ln 16 ≈ 2.77
    expect(last).toBeLessThan(first / 8); // ~0.06 in this run
    // Held-out sequences, in eval mode and without a graph.
    model.eval();
    const heldOut = noGrad(() => tidy(() => {
      const { ids, targets } = repeatTask(B, T, P, V, 1);
      return crossEntropy(model.forward(ids), targets).item();
    }));
    expect(heldOut).toBeLessThan(first / 8);
    opt.dispose();
    model.dispose();
  });

  it("a training step leaves memory exactly as it found it, from the second step on", () => {
    const baseline = memory().cpu!;
    const model = new TinyGPT(12, 8, 16, 2, 2, 3);
    const opt = new Adam(model.parameters(), 1e-3);
    const { ids, targets } = repeatTask(4, 8, 3, 12, 5);
    const step = () =>
      tidy(() => {
        crossEntropy(model.forward(ids), targets).backward();
        opt.step();
        model.zeroGrad();
      });
    step(); // creates the optimizer state
    const after = [];
    for (let i = 0; i < 4; i++) {
      step();
      const { bytes, buffers, tensors } = memory().cpu!;
      after.push({ bytes, buffers, tensors });
    }
    expect(after.slice(1)).toEqual([after[0], after[0], after[0]]);
    for (const t of [ids, targets]) t.dispose();
    opt.dispose();
    model.dispose();
    expect(memory().cpu).toMatchObject({ bytes: baseline.bytes, buffers: baseline.buffers, tensors: baseline.tensors });
  });
});
