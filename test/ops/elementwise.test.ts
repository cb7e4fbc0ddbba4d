import { describe, expect, it } from "vitest";
import { memory, tensor, tidy, zeros } from "../../lib/index.js";
import { abs, add, addScalar, div, exp, gelu, log, mean, mul, neg, pow, relu, scale, sigmoid, silu, sqrt, square, sub, sum, tanh } from "../../lib/ops/index.js";
import { expectClose, gradcheck, randomValues } from "../helpers.js";
import { flat, fromJson, torchReference } from "./torch-reference.js";

const t = (shape: number[], seed: number, shift = 0) => tensor(randomValues(shape.reduce((a, b) => a * b, 1), seed).map((v) => v + shift), { shape });

// Forward results are compared with a float64 evaluation in JS: float32 rounding of inputs and
// outputs gives relative errors near 1e-7, so 1e-6 is the tolerance.
function refBinary(a: number[], as: number[], b: number[], bs: number[], f: (x: number, y: number) => number): { shape: number[]; out: number[] } {
  const n = Math.max(as.length, bs.length);
  const pa = [...Array(n - as.length).fill(1), ...as], pb = [...Array(n - bs.length).fill(1), ...bs];
  const shape = pa.map((d, i) => Math.max(d, pb[i]!));
  const size = shape.reduce((x, y) => x * y, 1);
  const out: number[] = [];
  for (let i = 0; i < size; i++) {
    let rem = i, ia = 0, ib = 0, sa = 1, sb = 1;
    for (let d = n - 1; d >= 0; d--) {
      const idx = rem % shape[d]!;
      rem = Math.floor(rem / shape[d]!);
      ia += (pa[d] === 1 ? 0 : idx) * sa;
      ib += (pb[d] === 1 ? 0 : idx) * sb;
      sa *= pa[d]!;
      sb *= pb[d]!;
    }
    out.push(f(a[ia]!, b[ib]!));
  }
  return { shape, out };
}

const shapes: [number[], number[]][] = [
  [[7], [7]], [[1], [13]], [[3, 5], [5]], [[3, 1], [1, 4]], [[2, 3, 4], [3, 1]], [[1], [1]], [[5, 1, 3], [2, 1]],
];

describe("binary ops with broadcasting", () => {
  const ops = { add: [add, (x: number, y: number) => x + y], sub: [sub, (x: number, y: number) => x - y], mul: [mul, (x: number, y: number) => x * y], div: [div, (x: number, y: number) => x / y] } as const;
  for (const [name, [op, f]] of Object.entries(ops)) {
    it(`${name}: forward matches float64 and backward matches finite differences`, () => {
      for (const [sa, sb] of shapes) {
        tidy(() => {
          const a = t(sa, 1), b = t(sb, 2, name === "div" ? 3 : 0);
          const ref = refBinary(Array.from(a.dataSync()), sa, Array.from(b.dataSync()), sb, f);
          const out = op(a, b);
          expect(out.shape).toEqual(ref.shape);
          expectClose(out, ref.out, 1e-6);
          gradcheck((x, y) => op(x!, y!), [a, b]);
        });
      }
    });
  }

  it("works on non-contiguous views", () => {
    tidy(() => {
      const a = t([4, 3], 5), b = t([3, 4], 6);
      const at = Array.from(a.dataSync());
      const bt = Array.from(b.transpose(0, 1).contiguous().dataSync());
      expectClose(add(a, b.transpose(0, 1)), at.map((v, i) => v + bt[i]!), 1e-6);
      gradcheck((x, y) => mul(x!.transpose(0, 1), y!), [a, b]);
    });
  });

  it("splits large operands across threads (over 2^20 elements) with the same result", () => {
    tidy(() => {
      const rows = 1100, cols = 1000;
      const a = t([rows, cols], 5), b = t([cols], 6);
      const av = a.dataSync(), bv = b.dataSync();
      const got = add(a, b).dataSync();
      let bad = 0;
      for (let i = 0; i < rows * cols; i++) if (got[i] !== Math.fround(av[i]! + bv[i % cols]!)) bad++;
      expect(bad).toBe(0);
    });
  });

  it("names the shapes when they cannot broadcast", () => {
    tidy(() => expect(() => add(zeros([2, 3]), zeros([4]))).toThrow(/shapes \[2, 3\] and \[4\] cannot be broadcast/));
    tidy(() => expect(() => add(zeros([2]), zeros([2], { dtype: "int32" }))).toThrow(/expects float32 tensors, got int32/));
  });
});

/** erf in float64 by its Maclaurin series, for |v| <= 3 (the inputs below): terms fall below 1e-17 of the sum. */
function erf(v: number): number {
  if (Math.abs(v) > 3) throw new Error("erf: the series is used for |v| <= 3 only");
  let term = v, total = v;
  for (let n = 1; n < 80; n++) {
    term *= (-v * v) / n;
    total += term / (2 * n + 1);
  }
  return (2 / Math.sqrt(Math.PI)) * total;
}

describe("unary and scalar ops", () => {
  const cases: [string, (x: any) => any, (v: number) => number, number][] = [
    ["neg", neg, (v) => -v, 0],
    ["exp", exp, Math.exp, 0],
    ["log", log, Math.log, 2],
    ["sqrt", sqrt, Math.sqrt, 2],
    ["tanh", tanh, Math.tanh, 0],
    ["relu", relu, (v) => Math.max(v, 0), 0],
    ["sigmoid", sigmoid, (v) => 1 / (1 + Math.exp(-v)), 0],
    ["square", square, (v) => v * v, 0],
    ["abs", abs, Math.abs, 0],
    ["gelu", gelu, (v) => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3))), 0],
    ["silu", silu, (v) => v / (1 + Math.exp(-v)), 0],
    ["gelu, approximate none", (x) => gelu(x, { approximate: "none" }), (v) => 0.5 * v * (1 + erf(v / Math.SQRT2)), 0],
    ["scale", (x) => scale(x, -2.5), (v) => -2.5 * v, 0],
    ["addScalar", (x) => addScalar(x, 0.75), (v) => v + 0.75, 0],
    ["pow", (x) => pow(x, 1.5), (v) => v ** 1.5, 2],
  ];
  for (const [name, op, f, shift] of cases) {
    it(`${name}: float64 reference and finite differences`, () => {
      tidy(() => {
        const x = t([3, 7], 11, shift);
        expectClose(op(x), Array.from(x.dataSync()).map(f), 2e-6);
        // relu and abs have a kink at 0: the random inputs keep away from it by more than eps.
        gradcheck((y) => op(y!), [x]);
      });
    });
  }
});

describe("reductions", () => {
  it("sum and mean over dimensions, with and without keepDim", () => {
    tidy(() => {
      const x = t([2, 3, 4], 21);
      const v = Array.from(x.dataSync());
      const at = (i: number, j: number, k: number) => v[i * 12 + j * 4 + k]!;
      const s1 = sum(x, 1);
      expect(s1.shape).toEqual([2, 4]);
      const ref1: number[] = [];
      for (let i = 0; i < 2; i++) for (let k = 0; k < 4; k++) ref1.push(at(i, 0, k) + at(i, 1, k) + at(i, 2, k));
      expectClose(s1, ref1, 1e-6);
      expect(sum(x, [0, 2], true).shape).toEqual([1, 3, 1]);
      expectClose(sum(x), [v.reduce((a, b) => a + b, 0)], 1e-6);
      expectClose(mean(x, -1), Array.from({ length: 6 }, (_, r) => v.slice(r * 4, r * 4 + 4).reduce((a, b) => a + b, 0) / 4), 1e-6);
      gradcheck((y) => sum(y!, [0, 2]), [x]);
      gradcheck((y) => mean(y!, 1, true), [x]);
      gradcheck((y) => mean(y!), [x]);
    });
  });
});

describe("autograd engine", () => {
  it("accumulates through shared subexpressions and across backward calls", () => {
    tidy(() => {
      const x = tensor([1, 2, 3], { requiresGrad: true });
      const y = mul(x, x); // dy/dx = 2x
      const z = sum(add(y, y)); // dz/dx = 4x
      z.backward();
      expect(Array.from(x.grad!.dataSync())).toEqual([4, 8, 12]);
      sum(scale(x, 3)).backward();
      expect(Array.from(x.grad!.dataSync())).toEqual([7, 11, 15]);
    });
  });

  it("refuses a second backward through a freed graph and explains non-scalar roots", () => {
    tidy(() => {
      const x = tensor([1, 2], { requiresGrad: true });
      const z = sum(mul(x, x));
      z.backward();
      expect(() => z.backward()).toThrow(/already used by an earlier backward/);
      expect(() => mul(x, x).backward()).toThrow(/non-scalar output of shape \[2\]/);
      expect(() => sum(tensor([1])).backward()).toThrow(/does not require grad/);
    });
  });

  it("frozen inputs get no gradient", () => {
    tidy(() => {
      const w = tensor([1, 2]);
      const x = tensor([3, 4], { requiresGrad: true });
      sum(mul(w, x)).backward();
      expect(w.grad).toBeNull();
      expect(Array.from(x.grad!.dataSync())).toEqual([1, 2]);
    });
  });

  it("a forward and backward step leaks nothing", () => {
    const x = tensor(randomValues(64, 3), { shape: [8, 8], requiresGrad: true });
    const step = () => tidy(() => sum(mean(tanh(mul(add(x, 1), x.transpose(0, 1))), 0)).backward());
    step();
    const before = memory().cpu!;
    for (let i = 0; i < 5; i++) step();
    expect(memory().cpu).toMatchObject({ bytes: before.bytes, buffers: before.buffers, tensors: before.tensors });
    x.dispose();
  });
});

describe("gradcheck itself", () => {
  it("fails on a deliberately wrong backward rule", async () => {
    const { record } = await import("../../lib/tensor/tensor.js");
    const wrongSquare = (x: ReturnType<typeof tensor>) => {
      const out = square(x).detach();
      record("wrongSquare", out, [x], (g) => [mul(g, x)]); // should be 2·g·x
      return out;
    };
    tidy(() => {
      const x = t([5], 3, 1);
      expect(() => gradcheck((y) => wrongSquare(y!), [x])).toThrow(/finite-difference/);
    });
  });
});

describe("gelu against transformers (test/fixtures/ops/reference.json)", () => {
  it("gelu_new (elementwise gelu) matches transformers' NewGELUActivation", () => {
    tidy(() => {
      const G = torchReference().gelu_new;
      const x = fromJson(G.x).requireGrad();
      const y = gelu(x);
      expectClose(y, flat(G.y), 1e-6);
      sum(mul(y, 1)).backward();
      expectClose(x.grad!, flat(G.dy_dx), 1e-6);
    });
  });
});
