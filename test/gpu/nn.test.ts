// nn ops on CUDA (native/cuda/nn.cu), each checked against its CPU twin on the same inputs:
// outputs and gradients within 1e-5 relative (different summation orders and expf vs the CPU's
// polynomial exp), attention within 1e-4 (its gradients sum products of softmax weights over up
// to 256 keys, in a different order on each backend), dropout masks bit-identical (both backends
// evaluate the same Philox counters).
// Runs on a GPU host (`npm run test:gpu`); elsewhere every test is skipped with the reason.
import { describe, expect, it } from "vitest";
import { Generator, tensor, tidy, type Tensor } from "../../lib/index.js";
import { scaledDotProductAttention, type AttentionOptions } from "../../lib/ops/attention.js";
import { crossEntropy, dropout, layerNorm, logSoftmax, softmax, type CrossEntropyOptions } from "../../lib/ops/nn.js";
import { expectClose, hasCuda, noCudaReason, randomValues } from "../helpers.js";

const gpu = describe.skipIf(!hasCuda);
if (!hasCuda) describe("CUDA nn ops", () => it.skip(noCudaReason, () => {}));

const DEVICES = ["cpu", "cuda:0"] as const;
const size = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);
const values = (shape: number[], seed: number, scale = 1) => randomValues(size(shape), seed).map((v) => v * scale);

/**
 * Runs fn on each device with the same inputs (leaves that require grad), backpropagates the
 * same upstream gradient, and returns [output, ...input gradients] as flat arrays per device.
 */
function onBothDevices(inputs: { shape: number[]; seed: number; scale?: number }[], fn: (xs: Tensor[], device: string) => Tensor) {
  return DEVICES.map((device) =>
    tidy(() => {
      const xs = inputs.map(({ shape, seed, scale }) => tensor(values(shape, seed, scale), { shape, device, requiresGrad: true }));
      const out = fn(xs, device);
      const g = tensor(values([...out.shape], 999), { shape: [...out.shape], device });
      out.backward(g);
      return [out, ...xs.map((x) => x.grad!)].map((t) => Array.from(t.dataSync()));
    }),
  );
}

function expectSame(results: number[][][], tol = 1e-5): void {
  const [cpu, cuda] = results as [number[][], number[][]];
  cpu.forEach((ref, i) => expectClose(cuda[i]!, ref, tol));
}

gpu("CUDA nn ops match the CPU", () => {
  it("layerNorm: output, dx, dw, db (with and without affine)", () => {
    for (const [N, C] of [[1, 1], [7, 13], [300, 768]]) {
      expectSame(onBothDevices([{ shape: [N, C], seed: 1, scale: 3 }, { shape: [C], seed: 2 }, { shape: [C], seed: 3 }], ([x, w, b]) => layerNorm(x!, w!, b!)));
      expectSame(onBothDevices([{ shape: [N, C], seed: 4 }], ([x]) => layerNorm(x!, null, null)));
    }
  });

  it("layerNorm dw/db are deterministic on the GPU", () => {
    const run = () => onBothDevices([{ shape: [1000, 96], seed: 5 }, { shape: [96], seed: 6 }, { shape: [96], seed: 7 }], ([x, w, b]) => layerNorm(x!, w!, b!))[1]!;
    expect(run()).toEqual(run());
  });

  it("softmax and logSoftmax, forward and backward", () => {
    for (const [shape, dim] of [[[1, 1], -1], [[5, 1000], -1], [[3, 4, 5], 1]] as [number[], number][]) {
      expectSame(onBothDevices([{ shape, seed: 8, scale: 10 }], ([x]) => softmax(x!, dim)));
      expectSame(onBothDevices([{ shape, seed: 9, scale: 10 }], ([x]) => logSoftmax(x!, dim)));
    }
  });

  it("crossEntropy: mean, sum, none with ignored rows, all ignored, 50257 classes", () => {
    const cases: [number, number, number[], CrossEntropyOptions][] = [
      [6, 50257, [5, -100, 50256, 0, 17, -100], {}],
      [4, 9, [1, 2, 3, 4], { reduction: "sum" }],
      [4, 9, [1, -100, 3, 8], { reduction: "none" }],
      [3, 5, [-100, -100, -100], { reduction: "sum" }],
    ];
    for (const [N, V, tg, opts] of cases) {
      expectSame(onBothDevices([{ shape: [N, V], seed: 10, scale: 4 }], ([x], device) =>
        crossEntropy(x!, tensor(new Int32Array(tg), { shape: [N], device }), opts)));
    }
    tidy(() => {
      const logits = tensor(values([2, 5], 11), { shape: [2, 5], device: "cuda:0" });
      expect(Number.isNaN(crossEntropy(logits, tensor(new Int32Array([-100, -100]), { shape: [2], device: "cuda:0" })).item())).toBe(true);
      expect(() => crossEntropy(logits, tensor(new Int32Array([0, 7]), { shape: [2], device: "cuda:0" }))).toThrow(
        /target 7 at position 1 is out of range for 5 classes/,
      );
    });
  });

  it("dropout: the same (seed, offset) gives bit-identical masks and gradients", () => {
    const results = onBothDevices([{ shape: [37, 129], seed: 12 }], ([x]) => {
      const gen = new Generator(2024);
      gen.next(12345);
      return dropout(x!, 0.1, { generator: gen });
    });
    expect(results[1]).toEqual(results[0]);
  });

  it("scaledDotProductAttention: causal, non-causal, padding (incl. rows that see only padding), Tq < Tk, dropout", () => {
    const cases: { B: number; H: number; Tq: number; Tk: number; D: number; opts: AttentionOptions; keep?: number[] }[] = [
      { B: 1, H: 1, Tq: 1, Tk: 1, D: 1, opts: {} },
      { B: 2, H: 3, Tq: 70, Tk: 70, D: 64, opts: {} },
      { B: 2, H: 2, Tq: 9, Tk: 9, D: 7, opts: { causal: false } },
      { B: 2, H: 2, Tq: 3, Tk: 11, D: 16, opts: {} },
      { B: 2, H: 2, Tq: 6, Tk: 6, D: 5, opts: {}, keep: [1, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1] },
      { B: 1, H: 12, Tq: 256, Tk: 256, D: 64, opts: {} },
      // Dropout on the weights: both backends draw the same Philox mask from the same state.
      { B: 2, H: 2, Tq: 9, Tk: 12, D: 8, opts: { dropout: 0.25 }, keep: [...new Array(12).fill(1), 0, 0, 0, ...new Array(9).fill(1)] },
    ];
    for (const c of cases) {
      expectSame(
        onBothDevices(
          [{ shape: [c.B, c.H, c.Tq, c.D], seed: 13 }, { shape: [c.B, c.H, c.Tk, c.D], seed: 14 }, { shape: [c.B, c.H, c.Tk, c.D], seed: 15 }],
          ([q, k, v], device) =>
            scaledDotProductAttention(q!, k!, v!, {
              ...c.opts,
              generator: new Generator(11),
              attnMask: c.keep ? tensor(new Int32Array(c.keep), { shape: [c.B, c.Tk], device }) : null,
            }),
        ),
        1e-4,
      );
    }
  });

  it("scaledDotProductAttention reads strided heads of a fused qkv tensor", () => {
    const [B, T, H, D] = [2, 33, 4, 8];
    expectSame(
      onBothDevices([{ shape: [B, T, 3 * H * D], seed: 16 }], ([qkv]) => {
        const head = (i: number) => qkv!.slice(2, i * H * D, (i + 1) * H * D).reshape(B, T, H, D).permute(0, 2, 1, 3);
        return scaledDotProductAttention(head(0), head(1), head(2)).transpose(1, 2).reshape(B, T, H * D);
      }),
      1e-4,
    );
  });
});
