// concat, stack, split and expand: values against plain JS index arithmetic, gradients by finite
// differences, views share storage, and errors name the shapes.
import { describe, expect, it } from "vitest";
import { memory, tensor, tidy, zeros, type Tensor } from "../../lib/index.js";
import { mul } from "../../lib/ops/elementwise.js";
import { concat, expand, split, stack } from "../../lib/ops/shape.js";
import { gradcheck, randomValues } from "../helpers.js";

const size = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);
const t = (shape: number[], seed: number) => tensor(randomValues(size(shape), seed), { shape });
const values = (x: Tensor) => Array.from(x.dataSync());

/** Element of a row-major array at a multi-index. */
const at = (vals: number[], shape: readonly number[], idx: number[]) => vals[idx.reduce((o, i, d) => o * shape[d]! + i, 0)]!;
/** Every multi-index of `shape` in row-major order. */
function* indices(shape: readonly number[]): Generator<number[]> {
  for (let f = 0; f < size(shape); f++) {
    const idx: number[] = [];
    let rem = f;
    for (let d = shape.length - 1; d >= 0; d--) {
      idx.unshift(rem % shape[d]!);
      rem = Math.floor(rem / shape[d]!);
    }
    yield idx;
  }
}

describe("concat", () => {
  it("joins along any dim (negative too) and matches index arithmetic", () => {
    tidy(() => {
      for (const dim of [0, 1, 2, -1]) {
        const d = (dim + 3) % 3;
        const shapes = [[2, 3, 4], [2, 3, 4], [2, 3, 4]].map((s, i) => s.map((v, j) => (j === d ? i + 1 : v)));
        const xs = shapes.map((s, i) => t(s, 10 + i));
        const out = concat(xs, dim);
        const outShape = [...shapes[0]!];
        outShape[d] = 6;
        expect(out.shape).toEqual(outShape);
        const vals = xs.map(values), got = values(out);
        const starts = [0, 1, 3];
        for (const idx of indices(outShape)) {
          const which = idx[d]! < 1 ? 0 : idx[d]! < 3 ? 1 : 2;
          const local = [...idx];
          local[d]! -= starts[which]!;
          expect(got[idx.reduce((o, i, k) => o * outShape[k]! + i, 0)]).toBe(at(vals[which]!, shapes[which]!, local));
        }
        gradcheck((a, b, c) => concat([a!, b!, c!], dim), xs);
      }
    });
  });

  it("copies strided views, passes gradients only to inputs that want them, and handles int32", () => {
    tidy(() => {
      const a = t([3, 2], 1), b = t([2, 3], 2);
      const out = concat([a, b.transpose(0, 1)], 1); // [3, 4]
      const av = values(a), bv = values(b);
      expect(values(out)).toEqual([0, 1, 2].flatMap((r) => [av[r * 2]!, av[r * 2 + 1]!, bv[r]!, bv[3 + r]!]));
      const frozen = t([3, 2], 3);
      a.requiresGrad = true;
      concat([a, frozen], 1).backward(t([3, 4], 4));
      expect(a.grad!.shape).toEqual([3, 2]);
      expect(frozen.grad).toBeNull();
      const ids = concat([tensor([1, 2], { dtype: "int32" }), tensor([3], { dtype: "int32" })]);
      expect(ids.dtype).toBe("int32");
      expect(values(ids)).toEqual([1, 2, 3]);
    });
  });

  it("names the mismatch", () => {
    tidy(() => {
      expect(() => concat([zeros([2, 3]), zeros([2, 4])], 0)).toThrow(/concat: tensor 1 has shape \[2, 4\] but tensor 0 has \[2, 3\]; all dims except dim 0 must match/);
      expect(() => concat([zeros([2]), zeros([2], { dtype: "int32" })])).toThrow(/tensor 1 is int32 but tensor 0 is float32/);
      expect(() => concat([])).toThrow(/at least one tensor/);
      expect(() => concat([zeros([2])], 1)).toThrow(/dimension 1 is out of range/);
    });
  });
});

describe("stack", () => {
  it("adds a new dim at the front, middle or end", () => {
    tidy(() => {
      const xs = [t([2, 3], 21), t([2, 3], 22)];
      const vals = xs.map(values);
      for (const dim of [0, 1, 2, -1]) {
        const d = (dim + 3) % 3;
        const out = stack(xs, dim);
        const shape = [2, 3];
        shape.splice(d, 0, 2);
        expect(out.shape).toEqual(shape);
        const got = values(out);
        let f = 0;
        for (const idx of indices(shape)) {
          const which = idx[d]!;
          const local = idx.filter((_, k) => k !== d);
          expect(got[f++]).toBe(at(vals[which]!, [2, 3], local));
        }
        gradcheck((a, b) => stack([a!, b!], dim), xs);
      }
      expect(() => stack([zeros([2]), zeros([3])])).toThrow(/stack: tensor 1 has shape \[3\] but tensor 0 has \[2\]/);
    });
  });
});

describe("split", () => {
  it("cuts views by sizes or by a piece size, sharing storage", () => {
    tidy(() => {
      const x = t([7, 3], 31);
      const before = memory().cpu!;
      const parts = split(x, [2, 0, 5], 0);
      const after = memory().cpu!;
      expect(after.buffers).toBe(before.buffers); // views, no new storage
      expect(parts.map((p) => p.shape)).toEqual([[2, 3], [0, 3], [5, 3]]);
      const xv = values(x);
      expect(values(parts[2]!)).toEqual(xv.slice(6));
      expect(split(x, 3).map((p) => p.shape[0])).toEqual([3, 3, 1]);
      expect(split(x, 1, -1).map((p) => p.shape)).toEqual([[7, 1], [7, 1], [7, 1]]);
      expect(values(split(x, 1, 1)[1]!)).toEqual([0, 1, 2, 3, 4, 5, 6].map((r) => xv[r * 3 + 1]!));
      // The pieces' gradients land in the right places (both pieces used, weighted differently).
      gradcheck((y) => {
        const [a, b] = split(y!, [3, 4], 0);
        return concat([mul(b!, 2), a!], 0);
      }, [x]);
      expect(() => split(x, [3, 3], 0)).toThrow(/split: sizes \[3, 3\] must be integers >= 0 summing to 7, the size of dim 0 of \[7, 3\]/);
      expect(() => split(x, 0)).toThrow(/piece size must be a positive integer/);
    });
  });
});

describe("expand", () => {
  it("is a stride-0 view whose gradient sums over the repeats", () => {
    tidy(() => {
      const x = t([3, 1], 41);
      const before = memory().cpu!.buffers;
      const e = expand(x, [2, 3, 4]);
      expect(memory().cpu!.buffers).toBe(before);
      expect(e.shape).toEqual([2, 3, 4]);
      expect(e.strides).toEqual([0, 1, 0]);
      const xv = values(x);
      expect(values(e)).toEqual([...indices([2, 3, 4])].map(([, r]) => xv[r!]!));
      expect(expand(x, [-1, 5]).shape).toEqual([3, 5]);
      gradcheck((y) => expand(y!, [2, 3, 4]), [x]);
      expect(() => expand(x, [4, 4])).toThrow(/expand: cannot expand \[3, 1\] to \[4, 4\]/);
      expect(() => expand(x, [3])).toThrow(/cannot expand/);
    });
  });
});
