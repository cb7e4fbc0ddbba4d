// KVCache keeps each layer's keys and values in a buffer with spare room along time and hands out
// views of the filled part: appending across the capacity (64, then doubling) must give exactly
// the concatenation of everything appended, leave earlier views' contents alone, and free all of
// it on dispose(). appendFor stores a bf16 model's CPU keys and values rounded.
import { describe, expect, it } from "vitest";
import { concat, KVCache, memory, randn, tidy, type Tensor } from "../../lib/index.js";

const values = (t: Tensor) => Array.from(t.contiguous().dataSync());

describe("KVCache", () => {
  it("appends across capacity growth: the views equal the concatenation; dispose frees everything", () => {
    const before = memory().cpu?.tensors ?? 0;
    const cache = new KVCache(2);
    const keys: Tensor[] = [], vals: Tensor[] = [];
    // A 5-position prompt, 70 single tokens (past 64), then a 60-position chunk (past 128).
    for (const t of [5, ...Array<number>(70).fill(1), 60]) {
      const k = randn([1, 3, t, 4]), v = randn([1, 3, t, 4]);
      keys.push(k);
      vals.push(v);
      for (let i = 0; i < 2; i++) cache.append(i, k, v);
      const total = keys.reduce((n, x) => n + x.shape[2]!, 0);
      expect(cache.length).toBe(total);
      expect(cache.layers[1]!.key.shape).toEqual([1, 3, total, 4]);
    }
    tidy(() => {
      expect(values(cache.layers[0]!.key)).toEqual(values(concat(keys, 2)));
      expect(values(cache.layers[1]!.value)).toEqual(values(concat(vals, 2)));
    });
    for (const x of [...keys, ...vals]) x.dispose();
    cache.dispose();
    expect(cache.length).toBe(0);
    expect(memory().cpu?.tensors ?? 0).toBe(before);
  });

  it("appendFor: a bf16 model's CPU cache stores its keys and values rounded to bf16 and says so; float32 stores them as they are", () => {
    const before = memory().cpu?.tensors ?? 0;
    const k = randn([1, 2, 3, 4]), v = randn([1, 2, 3, 4]);
    const bf16Values = (t: Tensor) => tidy(() => values(t.to("cpu", "bfloat16").to("cpu", "float32")));
    const rounded = new KVCache(1), exact = new KVCache(1);
    const r = rounded.appendFor(0, k, v, "bfloat16"), e = exact.appendFor(0, k, v, "float32");
    expect([r.kvRounded, e.kvRounded]).toEqual([true, false]);
    tidy(() => {
      expect(values(r.key)).toEqual(bf16Values(k));
      expect(values(r.value)).toEqual(bf16Values(v));
      expect(values(r.key)).not.toEqual(values(k));
      expect(values(e.key)).toEqual(values(k));
    });
    for (const x of [k, v, rounded, exact]) x.dispose();
    expect(memory().cpu?.tensors ?? 0).toBe(before);
  });
});
