// The backward engine (lib/autograd/engine.ts): it adds into .grad, so backward on k micro-batches
// with each loss scaled by 1/k gives the gradient of the mean over the whole batch (gradient
// accumulation, as the Trainer does it); it is loaded with the ops and registered on Tensor.
import { describe, expect, it } from "vitest";
import { tensor, tidy } from "../../lib/index.js";
import { add, concat, dropout, gelu, mean, mul, scale, split, square, sum } from "../../lib/ops/index.js";
import { Generator } from "../../lib/tensor/random.js";
import { GradPiece, record, type Tensor } from "../../lib/tensor/tensor.js";
import { gradcheck, randomValues } from "../helpers.js";

describe("backward engine", () => {
  it("2 half-batches with the loss scaled by 1/2 give the full batch's gradient", () => {
    const w = tensor(randomValues(5, 1)).requireGrad();
    const x = tensor(randomValues(8 * 5, 2), { shape: [8, 5] });
    // loss = mean over rows of (x_r · w)²
    const loss = (rows: ReturnType<typeof tensor>) => mean(square(sum(mul(rows, w), 1)));

    tidy(() => loss(x).backward());
    const full = Array.from(w.grad!.dataSync());
    w.grad!.dispose();
    w.grad = null;

    tidy(() => scale(loss(x.slice(0, 0, 4)), 1 / 2).backward());
    tidy(() => scale(loss(x.slice(0, 4, 8)), 1 / 2).backward());
    const accumulated = Array.from(w.grad!.dataSync());
    accumulated.forEach((g, i) => expect(g).toBeCloseTo(full[i]!, 6));
    w.dispose();
    x.dispose();
  });

  it("refuses to sum into a .grad that is not shaped like its tensor", () => {
    const w = tensor([1, 2, 3]).requireGrad();
    w.grad = tensor([0, 0]);
    expect(() => tidy(() => sum(mul(w, w)).backward())).toThrow(/cannot add a gradient of shape \[3\] into \[2\]/);
    w.dispose();
  });

  it("refuses a gradient piece that does not fit its input, naming both shapes", () => {
    const x = tensor(randomValues(6, 1), { shape: [2, 3] }).requireGrad();
    const bad = (start: number) => {
      const out = x.detach();
      record("misfit", out, [x], (g) => [new GradPiece(g.slice(1, 0, 2).contiguous(), [0, start])]);
      return out;
    };
    expect(() => tidy(() => sum(bad(2)).backward())).toThrow(/backward of misfit: gradient piece \[2, 2\] at \[0, 2\] does not fit in its input \[2, 3\]/);
    x.dispose();
  });
});

// A slice's backward returns a GradPiece: the engine copies the pieces an input collects into one
// buffer, zero-filled only where they leave it uncovered, overlapping pieces summed.
describe("slice gradients (GradPiece)", () => {
  const t = (shape: number[], seed: number) => tensor(randomValues(shape.reduce((a, b) => a * b, 1), seed), { shape });

  it("pieces that tile the input, leave part of it uncovered, or overlap: finite differences", () => {
    tidy(() => {
      const x = t([3, 7], 1), w = t([3, 7], 2);
      // q/k/v-like tiling of a non-leaf (x·w), then pieces through square() so each gradient depends on x
      gradcheck((a) => concat(split(mul(a!, w), [2, 4, 1], 1).map(square), 1), [x]);
      // columns 1..2 and 4..5 only, on a leaf: the rest of the gradient is zero
      gradcheck((a) => concat([a!.slice(1, 1, 3), a!.slice(1, 4, 6)].map(square), 1), [x]);
      // overlapping boxes (rows 0..1 and 1..2, columns 2..5 and 0..3) on a non-leaf
      gradcheck((a) => {
        const y = mul(a!, w);
        return add(square(y.slice(0, 0, 2).slice(1, 2, 6)), y.slice(0, 1, 3).slice(1, 0, 4));
      }, [x]);
      // a slice of a slice, and a slice beside a full use of the same tensor
      gradcheck((a) => add(a!.slice(1, 1, 6).slice(0, 1, 3).slice(1, 2, 4), scale(a!, 3).slice(1, 0, 2).slice(0, 0, 2)), [x]);
      gradcheck((a) => add(mul(a!, w), concat([square(a!.slice(1, 0, 3)), a!.slice(1, 3, 7)], 1)), [x]);
    });
  });

  it("pieces already in place in one buffer become the gradient as they are; shared or overlapping ones are copied", () => {
    // An op whose backward writes the gradients of x's column blocks [0, 2) and [2, 5) into views of
    // one buffer laid out as x (as attention does for a fused qkv), optionally keeping a view of it.
    const blocks = (g: Tensor, keepView: (buf: Tensor) => void, second = 2): GradPiece[] => {
      const buf = scale(g, 2); // a fresh buffer shaped like x: [2, 5]
      const pieces = [new GradPiece(buf.slice(1, 0, 2), [0, 0]), new GradPiece(buf.slice(1, second, second + 3), [0, second])];
      keepView(buf);
      return pieces;
    };
    tidy(() => {
      const x = t([2, 5], 11).requireGrad(), g = t([2, 5], 12);
      let kept: Tensor | null = null;
      const run = (keepView: (buf: Tensor) => void, second = 2) => {
        const out = x.detach();
        record("blocks", out, [x, x], (gy) => blocks(gy, keepView, second)); // one piece for each use of x
        out.backward(g);
        const grad = Array.from(x.grad!.dataSync());
        inPlace = x.grad!.storage === bufStorage;
        x.grad!.dispose();
        x.grad = null;
        return grad;
      };
      let bufStorage: unknown = null, inPlace = false;
      const twice = Array.from(g.dataSync(), (v) => 2 * v);
      expect(run((buf) => ((bufStorage = buf.storage), buf.dispose()))).toEqual(twice);
      expect(inPlace).toBe(true); // the buffer itself, no copy
      expect(run((buf) => ((bufStorage = buf.storage), (kept = buf)))).toEqual(twice);
      expect(inPlace).toBe(false); // someone else holds the buffer: copied out, the holder's view unchanged
      expect(Array.from(kept!.dataSync())).toEqual(twice);
      const overlapping = run((buf) => buf.dispose(), 1); // columns [0, 2) and [1, 4): summed where they meet, column 4 zero
      expect(overlapping).toEqual(twice.map((v, i) => (i % 5 === 4 ? 0 : i % 5 === 1 ? v + twice[i]! : v)));
    });
  });

  it("tiling pieces give exactly the gradient they carry (copies, no arithmetic); empty slices add nothing", () => {
    tidy(() => {
      const x = t([2, 9], 3).requireGrad(), w = t([2, 9], 4);
      const parts = split(x, [4, 0, 5], 1);
      sum(mul(concat(parts, 1), w)).backward();
      expect(Array.from(x.grad!.dataSync())).toEqual(Array.from(w.dataSync()));
      const y = t([2, 3], 5).requireGrad();
      sum(mul(y.slice(1, 1, 1), t([2, 0], 6))).backward();
      expect(Array.from(y.grad!.dataSync())).toEqual([0, 0, 0, 0, 0, 0]);
    });
  });

  it("a sum the engine does not own on one side is written into the other: finite differences", () => {
    tidy(() => {
      // add(z, z) hands two aliases of one gradient to z (neither owned: their sum is a new tensor);
      // at x, the alias the outer add routes there meets mul's own gradients, which the engine owns.
      gradcheck((a) => add(add(mul(a!, a!), mul(a!, a!)), a!), [t([4, 5], 7)]);
      gradcheck((a) => {
        const z = mul(a!, a!);
        return add(add(z, z), a!);
      }, [t([4, 5], 7)]);
    });
  });

  it("gelu and dropout write their gradient over one only they hold, never over the caller's", () => {
    tidy(() => {
      for (const f of [(a: Tensor) => gelu(a), (a: Tensor) => dropout(a, 0.3, { generator: new Generator(5) })]) {
        const x = t([3, 8], 9).requireGrad(), g = t([3, 8], 10), before = Array.from(g.dataSync());
        f(x).backward(g); // the caller keeps g: the rule writes a new tensor
        expect(Array.from(g.dataSync())).toEqual(before);
        const viaCaller = Array.from(x.grad!.dataSync());
        x.grad!.dispose();
        x.grad = null;
        sum(mul(f(x), g)).backward(); // mul's gradient for f(x) is the engine's alone: written over
        expect(Array.from(x.grad!.dataSync())).toEqual(viaCaller);
        gradcheck(f, [t([3, 8], 9)]);
      }
    });
  });
});

