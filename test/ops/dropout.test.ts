// dropout (lib/ops/dropout.ts; kernels native/cpu/dropout.cc): the Philox keep rule against a BigInt
// Philox, the scale, and the backward's recomputed mask.
// Tolerances: forward 1e-5 relative L2. The kernels round inputs, partial sums and exp (the SIMD
// exp is within ~2 ulp) to float32, so errors sit around 1e-7..1e-6 of the row's scale; 1e-5
// leaves room for rows of ~1000 terms. Analytic gradients 1e-4 (they subtract nearly equal
// float32 sums, e.g. P·(dP - rowsum)). gradcheck's float32 central differences agree to ~1e-3.
import { describe, expect, it } from "vitest";
import { add, Generator, tidy, zeros } from "../../lib/index.js";
import { gradcheck } from "../helpers.js";
import { dropout } from "../../lib/ops/dropout.js";
import { arr, t, philoxKeep } from "./reference.js";

// ---- dropout --------------------------------------------------------------------------------------

describe("dropout", () => {
  it("keeps element i when philox_keep(seed, offset, i, p): checked against a BigInt Philox", () => {
    tidy(() => {
      const gen = new Generator(0x1234_5678_9abcn);
      gen.next(1000); // start at offset 1000
      const x = t([7, 143], 40, 1, 2); // all > 0, so zero means dropped
      const y = arr(dropout(x, 0.3, { generator: gen }));
      expect(gen.offset).toBe(1000n + 1001n);
      const kept = y.map((v) => v !== 0);
      expect(kept).toEqual(kept.map((_, i) => philoxKeep(0x1234_5678_9abcn, 1000n, BigInt(i), 0.3)));
    });
  });

  it("follows the rule when the threads split the run inside a 64-element group", () => {
    tidy(() => {
      // 50,001 elements are split between the pool's threads (chunks of >= 16K) at an element that
      // is not a multiple of 64 away from the group boundaries, which start 23 elements in.
      const gen = new Generator(0xabcdefn);
      gen.next(1001);
      const kept = arr(dropout(t([50_001], 46, 1, 2), 0.5, { generator: gen })).map((v) => v !== 0);
      const wrong = kept.flatMap((k, i) => (k === philoxKeep(0xabcdefn, 1001n, BigInt(i), 0.5) ? [] : [i]));
      expect(wrong).toEqual([]);
    });
  });

  it("is a deterministic function of (seed, offset), keeps about 1 - p, scales by 1/(1-p)", () => {
    tidy(() => {
      const x = t([100_000], 41, 1, 2);
      const a = arr(dropout(x, 0.25, { generator: new Generator(7) }));
      const g = new Generator(7);
      g.setState({ seed: "7", offset: "0" });
      expect(arr(dropout(x, 0.25, { generator: g }))).toEqual(a);
      const other = arr(dropout(x, 0.25, { generator: g })); // offset 100000 now: another mask
      expect(other).not.toEqual(a);
      const keptFrac = a.filter((v) => v !== 0).length / a.length;
      expect(Math.abs(keptFrac - 0.75)).toBeLessThan(0.01); // 7 standard deviations
      const xs = arr(x), scale = Math.fround(1 / 0.75);
      expect(a.filter((v, i) => v !== 0 && v !== Math.fround(xs[i]! * scale))).toEqual([]);
    });
  });

  it("backward recomputes the forward mask: dx = g * mask / (1 - p) exactly", () => {
    tidy(() => {
      const x = t([33, 17], 42, 1, 2).requireGrad(), g = t([33, 17], 43);
      const y = dropout(x, 0.4, { generator: new Generator(99) });
      y.backward(g);
      const ys = arr(y), gs = arr(g), dx = arr(x.grad!), scale = Math.fround(1 / 0.6);
      // g · (scale or 0): a dropped element's gradient is g·0 (a signed zero, NaN for a NaN g), as in PyTorch
      expect(dx).toEqual(ys.map((y, i) => Math.fround(gs[i]! * (y === 0 ? 0 : scale))));
    });
  });

  it("p = 0 or training = false passes through (values and gradient); p = 1 gives zeros", () => {
    tidy(() => {
      const gen = new Generator(3);
      const x = t([4, 5], 44).requireGrad(), g = t([4, 5], 45);
      for (const y of [dropout(x, 0, { generator: gen }), dropout(x, 0.5, { training: false, generator: gen })]) {
        expect(arr(y)).toEqual(arr(x));
        y.backward(g);
        expect(arr(x.grad!)).toEqual(arr(g));
        x.grad!.dispose();
        x.grad = null;
      }
      expect(gen.offset).toBe(0n); // identity draws no numbers
      const z = dropout(x, 1, { generator: gen });
      expect(arr(z)).toEqual(arr(x).map((v) => v * 0)); // x · 0, signed zeros as in PyTorch
      z.backward(g);
      expect(arr(x.grad!)).toEqual(arr(g).map((v) => v * 0));
      expect(() => dropout(x, 1.5)).toThrow(/p must be a probability in \[0, 1\], got 1.5/);
    });
  });

  it("with a residual: residual + dropout(x), the two ops' bits and gradients, in one pass", () => {
    tidy(() => {
      // 50,001 elements: the threads' split falls inside a 64-element group, and the CPU kernel's
      // 2048-element steps end inside the run.
      for (const [shape, p] of [[[33, 17], 0.4], [[50_001], 0.1]] as [number[], number][]) {
        const x = t(shape, 47).requireGrad(), r = t(shape, 48).requireGrad(), g = t(shape, 49);
        const gen = new Generator(5n);
        gen.next(23);
        const fused = dropout(x, p, { generator: gen, residual: r });
        expect(gen.offset).toBe(23n + BigInt(x.size));
        fused.backward(g);
        const [gx, gr] = [arr(x.grad!), arr(r.grad!)];
        x.grad = r.grad = null;
        const gen2 = new Generator(5n);
        gen2.next(23);
        const dropped = dropout(x, p, { generator: gen2 });
        const twoOps = add(r, dropped);
        expect(arr(fused)).toEqual(arr(twoOps));
        twoOps.backward(g);
        expect(gx).toEqual(arr(x.grad!));
        expect(gr).toEqual(arr(g));
        expect(arr(r.grad!)).toEqual(arr(g));
      }
    });
  });

  it("with a residual in evaluation (or p = 0) is the plain sum; a residual of another shape is refused", () => {
    tidy(() => {
      const x = t([4, 5], 50).requireGrad(), r = t([4, 5], 51);
      const gen = new Generator(3);
      expect(arr(dropout(x, 0.5, { training: false, residual: r, generator: gen }))).toEqual(arr(add(r, x)));
      expect(arr(dropout(x, 0, { residual: r, generator: gen }))).toEqual(arr(add(r, x)));
      expect(gen.offset).toBe(0n);
      expect(() => dropout(x, 0.5, { residual: zeros([5, 4]) })).toThrow(/dropout: residual \[5, 4\] must have the shape of x \[4, 5\]/);
    });
  });
});
