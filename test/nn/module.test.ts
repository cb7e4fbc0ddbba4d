// The module tree: names and order, get/setSubmodule, state dicts, modes, gradients and memory.
import { describe, expect, it } from "vitest";
import { Generator, memory, tensor, tidy, zeros, type Tensor } from "../../lib/index.js";
import { Conv1D, Dropout, Embedding, LayerNorm, Linear, Module, ModuleList } from "../../lib/nn/index.js";
import { conv1dLinear, linear } from "../../lib/ops/matmul.js";
import { sum } from "../../lib/ops/reduce.js";
import { randomValues } from "../helpers.js";

// A GPT-2-shaped tree: names follow transformers' GPT2Model.
class Attention extends Module {
  declare c_attn: Conv1D;
  declare c_proj: Conv1D;
  constructor(d: number, g: Generator) {
    super();
    this.registerModule("c_attn", new Conv1D(3 * d, d, { generator: g }));
    this.registerModule("c_proj", new Conv1D(d, d, { generator: g }));
  }
}

class Block extends Module {
  declare ln_1: LayerNorm;
  declare attn: Attention;
  declare mlp: Linear;
  constructor(d: number, g: Generator) {
    super();
    this.registerModule("ln_1", new LayerNorm(d));
    this.registerModule("attn", new Attention(d, g));
    this.registerModule("mlp", new Linear(d, d, { generator: g }));
  }
}

class Tiny extends Module {
  declare wte: Embedding;
  declare h: ModuleList<Block>;
  declare ln_f: LayerNorm;
  declare scale: Tensor;
  declare lm_head: Linear;
  constructor(seed = 1, d = 4, vocab = 6) {
    super();
    const g = new Generator(seed);
    this.registerParameter("scale", tensor([1]));
    this.registerModule("wte", new Embedding(vocab, d, { generator: g }));
    this.registerModule("h", new ModuleList([new Block(d, g), new Block(d, g)]));
    this.registerModule("ln_f", new LayerNorm(d));
    this.registerModule("lm_head", new Linear(d, vocab, { bias: false, generator: g }));
    this.lm_head.weight = this.wte.weight; // tied, as in GPT-2
  }
}

const blockNames = (i: number) =>
  ["ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight", "attn.c_proj.bias", "mlp.weight", "mlp.bias"].map((n) => `h.${i}.${n}`);

const values = (t: Tensor) => Array.from(t.dataSync());

describe("Module tree", () => {
  it("names parameters with dotted paths in registration order, tied weights once", () => {
    const m = new Tiny();
    expect(m.namedParameters().map(([n]) => n)).toEqual(["scale", "wte.weight", ...blockNames(0), ...blockNames(1), "ln_f.weight", "ln_f.bias"]);
    expect(m.parameters()).toHaveLength(20);
    expect(m.namedModules().map(([n]) => n)).toEqual([
      "", "wte", "h", "h.0", "h.0.ln_1", "h.0.attn", "h.0.attn.c_attn", "h.0.attn.c_proj", "h.0.mlp",
      "h.1", "h.1.ln_1", "h.1.attn", "h.1.attn.c_attn", "h.1.attn.c_proj", "h.1.mlp", "ln_f", "lm_head",
    ]);
    expect(m.namedChildren().map(([n]) => n)).toEqual(["wte", "h", "ln_f", "lm_head"]);
    expect(m.h.length).toBe(2);
    expect([...m.h]).toEqual([m.h.at(0), m.h.at(-1)]);
    expect(m.parameters().every((p) => p.requiresGrad && p.isLeaf)).toBe(true);
    m.dispose();
  });

  it("gets and sets submodules by path; the typed fields follow", () => {
    const m = new Tiny();
    const c = m.getSubmodule("h.1.attn.c_attn");
    expect(c).toBe(m.h.at(1).attn.c_attn);
    class Wrapped extends Module {
      declare base: Module;
      declare extra: Tensor;
      constructor(base: Module) {
        super();
        this.registerModule("base", base);
        this.registerParameter("extra", zeros([2]));
      }
    }
    const w = new Wrapped(c);
    expect(m.setSubmodule("h.1.attn.c_attn", w)).toBe(c);
    expect(m.h.at(1).attn.c_attn).toBe(w);
    const names = m.namedParameters().map(([n]) => n);
    expect(names).toContain("h.1.attn.c_attn.base.weight");
    expect(names).toContain("h.1.attn.c_attn.extra");
    expect(names).not.toContain("h.1.attn.c_attn.weight");
    // Assigning a field registers too.
    const fresh = new Attention(4, new Generator(9));
    m.h.at(0).attn = fresh;
    expect(m.getSubmodule("h.0.attn")).toBe(fresh);

    expect(() => m.getSubmodule("h.0.atn.c_attn")).toThrow(`getSubmodule("h.0.atn.c_attn"): Block at "h.0" has no submodule "atn" (it has: ln_1, attn, mlp)`);
    expect(() => m.getSubmodule("h.7")).toThrow(/ModuleList at "h" has no submodule "7" \(it has: 0, 1\)/);
    expect(() => m.setSubmodule("h.0.attn.q_proj", w)).toThrow(/Attention has no submodule "q_proj" to replace \(it has: c_attn, c_proj\); pass \{ strict: false \}/);
    expect(() => m.registerModule("train", new Linear(1, 1))).toThrow(/would shadow a property of Tiny/);
    expect(() => m.registerModule("wte", null)).not.toThrow();
    expect(() => m.registerParameter("h", zeros([1]))).toThrow(/"h" is already registered as a module of Tiny/);
    m.dispose();
    c.dispose();
  });

  it("train() and eval() reach every submodule; Dropout is the identity in eval", () => {
    tidy(() => {
      const net = new ModuleList([new Linear(2, 2), new ModuleList([new Dropout(0.5, { generator: new Generator(3) })])]);
      expect(net.modules().every((m) => m.training)).toBe(true);
      net.eval();
      expect(net.modules().some((m) => m.training)).toBe(false);
      const drop = net.getSubmodule("1.0") as Dropout;
      const x = tensor(randomValues(1000, 4), { shape: [1000] });
      expect(values(drop.call(x))).toEqual(values(x));
      net.train();
      const y = values(drop.forward(x)), xv = values(x);
      const zeroed = y.filter((v) => v === 0).length;
      expect(zeroed).toBeGreaterThan(400);
      expect(zeroed).toBeLessThan(600);
      y.forEach((v, i) => v !== 0 && expect(v).toBeCloseTo(2 * xv[i]!, 5));
      net.dispose();
    });
  });
});

describe("state dicts", () => {
  it("round-trips between models: views out, copies in place, tied keys under both names", () => {
    const a = new Tiny(1), b = new Tiny(2);
    const before = memory().cpu!.buffers;
    tidy(() => {
      const sd = a.stateDict();
      expect(memory().cpu!.buffers).toBe(before); // views, not copies
      expect(Object.keys(sd)).toContain("lm_head.weight");
      expect(Object.keys(sd)).toHaveLength(21);
      const bWeight = b.wte.weight;
      expect(b.loadStateDict(sd)).toEqual({ missingKeys: [], unexpectedKeys: [] });
      expect(b.wte.weight).toBe(bWeight); // same tensor, new values
      for (const [name, p] of b.namedParameters()) expect(values(p), name).toEqual(values(sd[name]!));
    });
    expect(memory().cpu!.buffers).toBe(before);
    a.dispose();
    b.dispose();
  });

  it("lists missing, unexpected and mis-shaped keys, and loads nothing when it throws", () => {
    const m = new Tiny(1);
    tidy(() => {
      const sd = new Tiny(2).stateDict();
      const original = values(m.wte.weight);
      delete sd["h.1.mlp.bias"];
      sd["h.1.mlp.gain"] = zeros([4]);
      expect(() => m.loadStateDict(sd)).toThrow(
        "loadStateDict: cannot load the state dict into Tiny:\n  missing keys (1): h.1.mlp.bias\n  unexpected keys (1): h.1.mlp.gain\n" +
          "  pass { strict: false } to load the keys that match and get the others back",
      );
      expect(values(m.wte.weight)).toEqual(original);
      expect(m.loadStateDict(sd, { strict: false })).toEqual({ missingKeys: ["h.1.mlp.bias"], unexpectedKeys: ["h.1.mlp.gain"] });
      expect(values(m.wte.weight)).toEqual(values(sd["wte.weight"]!));
      sd["h.0.attn.c_attn.weight"] = zeros([12, 4]);
      expect(() => m.loadStateDict(sd, { strict: false })).toThrow(
        /shape mismatches \(1\): "h.0.attn.c_attn.weight": checkpoint \[12, 4\], model \[4, 12\] \(transposed\? Conv1D stores \[in, out\], Linear \[out, in\]\)/,
      );
    });
    m.dispose();
  });

  it("converts dtypes on load, and to() converts in place keeping ties", () => {
    const m = new Tiny(1);
    tidy(() => {
      const src = new Tiny(3);
      const sd = Object.fromEntries(Object.entries(src.stateDict()).map(([k, v]) => [k, v.to("cpu", "bfloat16")]));
      m.loadStateDict(sd);
      expect(m.wte.weight.dtype).toBe("float32");
      expect(values(m.wte.weight)).toEqual(values(sd["wte.weight"]!)); // bf16 values are exact in float32
      src.dispose();
    });
    const h0 = m.h.at(0).mlp.weight;
    m.h.at(0).mlp.weight.requiresGrad = false;
    m.to("cpu", "bfloat16");
    expect(h0.isDisposed).toBe(true);
    expect(m.parameters().every((p) => p.dtype === "bfloat16")).toBe(true);
    expect(m.lm_head.weight).toBe(m.wte.weight);
    expect(m.h.at(0).mlp.weight.requiresGrad).toBe(false);
    expect(m.h.at(0).mlp.bias!.requiresGrad).toBe(true);
    m.dispose();
  });
});

describe("parameters, gradients and memory", () => {
  it("parameters survive tidy(); zeroGrad, freeze and dispose return memory to the baseline", () => {
    const baseline = memory().cpu!;
    let model!: Linear;
    tidy(() => {
      model = new Linear(5, 3, { generator: new Generator(1) });
    });
    expect(model.weight.isDisposed).toBe(false);
    const withModel = memory().cpu!;
    expect(withModel.buffers).toBe(baseline.buffers + 2);
    const x = tensor(randomValues(10, 2), { shape: [2, 5] });
    tidy(() => sum(model.call(x)).backward());
    expect(model.weight.grad).not.toBeNull();
    model.zeroGrad();
    expect(model.parameters().every((p) => p.grad === null)).toBe(true);
    expect(memory().cpu).toMatchObject({ bytes: withModel.bytes + 40, buffers: withModel.buffers + 1, tensors: withModel.tensors + 1 }); // + x
    model.freeze();
    expect(model.parameters().some((p) => p.requiresGrad)).toBe(false);
    tidy(() => expect(() => sum(model.forward(x)).backward()).toThrow(/does not require grad/));
    model.registerParameter("weight", model.weight); // re-registering a frozen parameter keeps it frozen
    expect(model.weight.requiresGrad).toBe(false);
    model.requiresGrad_(true);
    expect(model.weight.requiresGrad).toBe(true);
    x.dispose();
    model.dispose();
    expect(memory().cpu).toMatchObject({ bytes: baseline.bytes, buffers: baseline.buffers, tensors: baseline.tensors });
  });

  it("refuses parameters that cannot be trained", () => {
    tidy(() => {
      const m = new Module();
      expect(() => m.registerParameter("ids", zeros([2], { dtype: "int32" }))).toThrow(/"ids" is int32; parameters are floating tensors \(register it as a buffer\)/);
      const w = zeros([2], { requiresGrad: true });
      expect(() => m.registerParameter("w2", sum(w))).toThrow(/"w2" is the result of an op; register a leaf/);
      expect(() => m.registerModule("a.b", new Module())).toThrow(/invalid name "a.b"/);
      m.registerBuffer("mask", zeros([2], { dtype: "int32" }), { persistent: false });
      m.registerBuffer("count", zeros([1]));
      expect(Object.keys(m.stateDict())).toEqual(["count"]);
      expect(m.namedBuffers().map(([n]) => n)).toEqual(["mask", "count"]);
      m.dispose();
    });
  });
});

describe("layers", () => {
  it("initialize like PyTorch and forward through the ops", () => {
    tidy(() => {
      const g = new Generator(7);
      const lin = new Linear(64, 32, { generator: g });
      const w = values(lin.weight), b = values(lin.bias!);
      const bound = 1 / Math.sqrt(64);
      expect(Math.max(...w.map(Math.abs))).toBeLessThanOrEqual(bound);
      expect(Math.max(...w.map(Math.abs))).toBeGreaterThan(0.95 * bound); // fills the range
      expect(Math.max(...b.map(Math.abs))).toBeLessThanOrEqual(bound);
      expect(lin.weight.shape).toEqual([32, 64]);
      expect(new Linear(3, 2, { bias: false }).bias).toBeNull();

      const conv = new Conv1D(48, 16, { generator: g });
      expect(conv.weight.shape).toEqual([16, 48]);
      const cw = values(conv.weight);
      const std = Math.sqrt(cw.reduce((s, v) => s + v * v, 0) / cw.length);
      expect(std).toBeGreaterThan(0.017);
      expect(std).toBeLessThan(0.023);
      expect(values(conv.bias).every((v) => v === 0)).toBe(true);

      const emb = new Embedding(100, 20, { generator: g });
      const ev = values(emb.weight);
      const estd = Math.sqrt(ev.reduce((s, v) => s + v * v, 0) / ev.length);
      expect(estd).toBeGreaterThan(0.9);
      expect(estd).toBeLessThan(1.1);

      const ln = new LayerNorm(8, { eps: 1e-6 });
      expect(values(ln.weight!)).toEqual(new Array(8).fill(1));
      expect(values(ln.bias!)).toEqual(new Array(8).fill(0));
      expect(ln.eps).toBe(1e-6);

      const x = tensor(randomValues(3 * 64, 8), { shape: [3, 64] });
      expect(values(lin.call(x))).toEqual(values(linear(x, lin.weight, lin.bias)));
      const x16 = tensor(randomValues(2 * 16, 9), { shape: [2, 16] });
      expect(values(conv.forward(x16))).toEqual(values(conv1dLinear(x16, conv.weight, conv.bias)));
      const ids = tensor(Int32Array.from([3, 99]), { shape: [2] });
      expect(values(emb.forward(ids))).toEqual([...ev.slice(60, 80), ...ev.slice(1980, 2000)]);
      expect(ln.forward(x16.reshape([2, 2, 8])).shape).toEqual([2, 2, 8]);

      for (const m of [lin, conv, emb, ln]) m.dispose();
      expect(() => new Linear(-1, 2)).toThrow(/Linear: inFeatures must be an integer >= 0, got -1/);
      expect(() => new Dropout(1.5)).toThrow(/Dropout: p must be a probability in \[0, 1\], got 1.5/);
    });
  });
});
