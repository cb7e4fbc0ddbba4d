// scaledDotProductAttention with precision "bfloat16" on CUDA (the bf16 tensor-core kernels of
// native/cuda/attention_mma.cu for D = 64 and 128) against its CPU twin (q, k, v and dout rounded
// to bf16, the weights E, drop(P) and dS rounded for their products, float32 sums;
// test/ops/attention.test.ts checks that twin against float64), forward and backward, at odd
// shapes; and a bf16-weight GPT-2 whose heads take those kernels.
//
// Tolerance: 2e-2 relative L2. The two sides see the same bf16-rounded inputs and both round the
// attention weights P and the score gradients dS to bf16 (unit roundoff 2^-9 ≈ 2e-3) before their
// products, but at other points (the tensor cores round exp(S - running max) of online softmax,
// the CPU exp(S - row max)), and sum in another order. The emulated kernels
// (dev/cuda/attention_mma_emu.cpp) land at 1e-3..5e-3 of the largest value against float64 on
// the rounded inputs, the dev kernels on an H100 at 4e-3..6e-3 (dev/cuda/attention-notes.md); 2e-2
// leaves room for dropout's 1/(1-p) factors, while a wrong mask, tile range or dropout bit gives
// errors of order 1e-1 and more.
// Runs on a GPU host (`npm run test:gpu`); elsewhere every test is skipped with the reason.
import { describe, expect, it } from "vitest";
import { Generator, GPT2Config, GPT2LMHeadModel, getPeftModel, LoraConfig, randn, synchronize, tensor, tidy, type Tensor } from "../../lib/index.js";
import { keepWeightsIn } from "../../lib/models/checkpoint.js";
import { scaledDotProductAttention, type AttentionOptions } from "../../lib/ops/attention.js";
import { expectClose, hasCuda, noCudaReason, randomValues, relError } from "../helpers.js";

const TOL = 2e-2;

const gpu = describe.skipIf(!hasCuda);
if (!hasCuda) describe("bf16 attention on CUDA", () => it.skip(noCudaReason, () => {}));

interface Case {
  B: number; H: number; Tq: number; Tk: number; D: number;
  causal?: boolean; dropout?: number; window?: number; keep?: number[];
  /** q, k, v as the heads of one fused [B, T, 3·H·D] projection (GPT-2's c_attn); needs Tq = Tk. */
  fused?: boolean;
}

const name = (c: Case) =>
  `B=${c.B} H=${c.H} Tq=${c.Tq} Tk=${c.Tk} D=${c.D}${c.causal === false ? " non-causal" : ""}${c.keep ? " padded" : ""}` +
  `${c.dropout ? ` dropout ${c.dropout}` : ""}${c.window ? ` window ${c.window}` : ""}${c.fused ? " fused qkv" : ""}`;

/** Batch 1 left-padded by `n` keys (its first n queries see nothing: zeros, no gradient). */
const leftPadded = (B: number, T: number, n: number) => Array.from({ length: B * T }, (_, i) => (i >= T && i % T < n ? 0 : 1));

const CASES: Case[] = [
  { B: 2, H: 3, Tq: 70, Tk: 70, D: 64 },
  { B: 1, H: 2, Tq: 5, Tk: 77, D: 128 }, // KV cache: the last 5 of 77 positions
  { B: 2, H: 2, Tq: 1, Tk: 50, D: 64 }, // decoding one token
  { B: 2, H: 2, Tq: 33, Tk: 33, D: 128, causal: false },
  { B: 2, H: 2, Tq: 40, Tk: 40, D: 64, dropout: 0.2, keep: leftPadded(2, 40, 5) },
  { B: 2, H: 2, Tq: 130, Tk: 130, D: 128, dropout: 0.1, keep: leftPadded(2, 130, 70) }, // padding across key tiles
  { B: 2, H: 2, Tq: 77, Tk: 77, D: 64, window: 20, dropout: 0.1, keep: leftPadded(2, 77, 3) },
  { B: 1, H: 2, Tq: 4, Tk: 90, D: 128, window: 33 },
  { B: 1, H: 2, Tq: 150, Tk: 150, D: 64, window: 1 },
  { B: 1, H: 12, Tq: 256, Tk: 256, D: 64 },
  { B: 2, H: 2, Tq: 45, Tk: 45, D: 64, fused: true },
  { B: 2, H: 2, Tq: 33, Tk: 33, D: 128, fused: true, dropout: 0.1 },
  { B: 2, H: 2, Tq: 128, Tk: 128, D: 64, dropout: 0.1, keep: leftPadded(2, 128, 9) }, // Tk a multiple of 64: the backward's tile-wide keep bits
  { B: 1, H: 2, Tq: 70, Tk: 192, D: 128, dropout: 0.2 }, // ... 32-query tiles, fewer queries than keys
  { B: 2, H: 3, Tq: 97, Tk: 97, D: 32 }, // no bf16 kernel for D = 32: the float32 kernels, within the same bound
];

/** The op on one device with precision "bfloat16": [output, dq, dk, dv] (dqkv for fused) as flat arrays. */
function run(c: Case, device: string, precision: AttentionOptions["precision"] = "bfloat16", roundInputs = false): number[][] {
  return tidy(() => {
    const values = (shape: number[], seed: number, scale = 1) => {
      const x = tensor(randomValues(shape.reduce((a, b) => a * b, 1), seed).map((u) => u * scale), { shape, device });
      return roundInputs ? x.to(device, "bfloat16").to(device, "float32") : x;
    };
    const keep = c.keep ? tensor(new Int32Array(c.keep), { shape: [c.B, c.Tk], device }) : null;
    const generator = new Generator(11n).setState({ seed: "11", offset: "0" });
    const opts: AttentionOptions = { causal: c.causal, dropout: c.dropout, window: c.window, attnMask: keep, generator, precision };
    let leaves: Tensor[], out: Tensor;
    if (c.fused) {
      const C = c.H * c.D, qkv = values([c.B, c.Tq, 3 * C], 43, 1.5).requireGrad();
      const head = (i: number) => qkv.slice(2, i * C, (i + 1) * C).reshape(c.B, c.Tq, c.H, c.D).permute(0, 2, 1, 3);
      leaves = [qkv];
      out = scaledDotProductAttention(head(0), head(1), head(2), opts);
    } else {
      leaves = [values([c.B, c.H, c.Tq, c.D], 40, 1.5), values([c.B, c.H, c.Tk, c.D], 41, 1.5), values([c.B, c.H, c.Tk, c.D], 42)];
      leaves.forEach((x) => x.requireGrad());
      out = scaledDotProductAttention(leaves[0]!, leaves[1]!, leaves[2]!, opts);
    }
    out.backward(tensor(randomValues(out.size, 999), { shape: [...out.shape], device }));
    return [out, ...leaves.map((x) => x.grad!)].map((t) => Array.from(t.dataSync()));
  });
}

gpu('scaledDotProductAttention precision "bfloat16": CUDA tensor cores against the CPU twin, forward and backward', () => {
  for (const c of CASES) {
    it(name(c), () => {
      const [cpu, cuda] = [run(c, "cpu"), run(c, "cuda:0")];
      // With window 1 a query sees only itself: P = 1 and dS = P·(dP - rowsum(P·dP)) = 0 exactly, so
      // dq and dk are rounding residue on both devices (relative to each other, noise). Each error
      // is taken relative to the larger of its reference and dv, the gradient that carries the signal.
      const norm = (a: number[]) => Math.sqrt(a.reduce((acc, x) => acc + x * x, 0));
      const floor = c.window === 1 && !c.fused ? norm(cpu[3]!) : 0;
      cpu.forEach((ref, i) => {
        const scale = Math.max(norm(ref), i === 0 ? 0 : floor);
        const err = norm(cuda[i]!.map((x, j) => x - ref[j]!)) / scale;
        expect(err, `${i === 0 ? "output" : `gradient ${i - 1}`}: relative error ${err}`).toBeLessThanOrEqual(TOL);
      });
      if (c.keep && c.Tq === c.Tk) {
        // batch 1's first queries see only padding: exact zeros and no gradient, as in float32
        const [H, T, D] = [c.H, c.Tq, c.D], pad = c.keep.slice(T).indexOf(1);
        for (let h = 0; h < H; h++) {
          const row0 = (H + h) * T * D; // batch 1, head h, query 0
          expect(cuda[0]!.slice(row0, row0 + pad * D).every((x) => x === 0), `output, head ${h}`).toBe(true);
          expect(cuda[1]!.slice(row0, row0 + pad * D).every((x) => x === 0), `dq, head ${h}`).toBe(true);
        }
      }
    });
  }

  it("D = 64 and 128 take the tensor cores (they round P: differs from float32 on the same bf16 inputs); D = 32 keeps float32", () => {
    for (const c of [CASES[0]!, CASES[3]!, CASES[12]!]) {
      const [bf, f32] = [run(c, "cuda:0", "bfloat16", true), run(c, "cuda:0", "float32", true)];
      const err = relError(bf[0]!, f32[0]!);
      if (c.D === 32) expect(err, name(c)).toBeLessThan(1e-5);
      else expect(err, name(c)).toBeGreaterThan(1e-4);
    }
  });
});

gpu("bf16 attention speed at GPT-2 124M training shape (B=8 H=12 T=1024 D=64, causal)", () => {
  it("forward + backward in bf16 precision at least 2x faster than float32 (median of 10, printed)", () => {
    const time = (precision: AttentionOptions["precision"]) => {
      const ms: number[] = [];
      for (let i = 0; i < 13; i++) {
        tidy(() => {
          const [q, k, v] = [1, 2, 3].map(() => randn([8, 12, 1024, 64], { device: "cuda:0", generator: new Generator(i) }).requireGrad());
          const g = randn([8, 12, 1024, 64], { device: "cuda:0", generator: new Generator(99) });
          synchronize("cuda:0");
          const t0 = performance.now();
          scaledDotProductAttention(q!, k!, v!, { precision }).backward(g);
          synchronize("cuda:0");
          if (i >= 3) ms.push(performance.now() - t0); // the first calls load and configure the kernels
        });
      }
      return ms.sort((a, b) => a - b)[ms.length >> 1]!;
    };
    const [f32, bf] = [time("float32"), time("bfloat16")];
    const gflop = (4 * 8 * 12 * 1024 * 1024 * 64) / 2 * 3.5 / 1e9; // forward 4·B·H·T²·D/2 (causal), backward 2.5x
    console.log(`attention fwd+bwd B=8 H=12 T=1024 D=64: float32 ${f32.toFixed(3)} ms, bfloat16 ${bf.toFixed(3)} ms ` +
      `(${(gflop / bf).toFixed(1)} TFLOP/s; dev kernels 0.443 ms on an H100)`);
    expect(bf).toBeLessThan(f32 / 2);
  });
});

gpu("GPT-2 with bf16 weights and D = 64 heads on CUDA: the bf16 attention inside the model", () => {
  // transformers' GPT-2 layout at a small width: 2 heads of 64, so attention takes the tensor cores.
  const config = new GPT2Config({ vocabSize: 96, nPositions: 128, nEmbd: 128, nLayer: 2, nHead: 2 });
  const build = () => {
    const model = new GPT2LMHeadModel(config, { generator: new Generator(3) });
    keepWeightsIn(model, "bfloat16");
    const peft = getPeftModel(model, new LoraConfig({ r: 4, loraAlpha: 8, targetModules: ["c_attn", "c_proj"], fanInFanOut: true, initLoraWeights: "gaussian" }), "default", { generator: new Generator(7) });
    peft.eval();
    return peft;
  };

  it("logits, loss and LoRA gradients match the same model on the CPU (T = 70, left padding)", () => {
    const [B, T] = [2, 70];
    const results = ["cpu", "cuda:0"].map((device) => {
      const peft = build().to(device);
      const out = tidy(() => {
        const ids = tensor(Int32Array.from(randomValues(B * T, 5), (u) => Math.floor(((u + 1) / 2) * 96) % 96), { shape: [B, T], device });
        const mask = tensor(new Int32Array(leftPadded(B, T, 9)), { shape: [B, T], device });
        const { logits, loss } = peft.forward({ inputIds: ids, attentionMask: mask, labels: ids });
        loss!.backward();
        return { logits: Array.from(logits.dataSync()), loss: loss!.item(), grads: peft.trainableParameters().map((p) => Array.from(p.grad!.dataSync())) };
      });
      peft.dispose();
      return out;
    });
    const [cpu, cuda] = results as [(typeof results)[0], (typeof results)[0]];
    expectClose(cuda.logits, cpu.logits, TOL);
    expect(Math.abs(cuda.loss - cpu.loss) / cpu.loss).toBeLessThan(TOL);
    expect(cuda.grads.length).toBe(cpu.grads.length);
    cpu.grads.forEach((g, i) => expectClose(cuda.grads[i]!, g, 3 * TOL)); // gradients pass through two layers of bf16 rounding
  });
});
