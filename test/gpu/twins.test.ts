// Every op family's CUDA kernels against their CPU twins, in the manner of ggml's test-backend-ops:
// one table, one row per case (family, odd shapes, options), each run forward and backward on both
// devices from the same inputs and the same upstream gradient. A new family (or a new dtype) adds
// rows here; FAMILIES lists the families the table must cover, and a test fails if one has no row.
//
// Tolerance per row: `exact` rows must agree bit for bit (the same integer Philox counters, the
// same per-element IEEE arithmetic, gathers and ordered scatter-adds); the rest within `tol`
// relative L2 (test/helpers.ts expectClose): 1e-5 where the two backends only sum in another
// order and expf differs from the CPU's polynomial exp by an ulp or two, 1e-4 for attention's
// backward (differences of nearly equal float32 sums, P·(dP - rowsum)) and for long GEMM sums.
// Attention's bf16 tensor-core kernels (precision "bfloat16") have their own table: attention-bf16.test.ts.
// Runs on a GPU host (`npm run test:gpu`); elsewhere every test is skipped with the reason.
import { describe, expect, it } from "vitest";
import { Generator, noGrad, rand, randn, tensor, tidy, type Tensor } from "../../lib/index.js";
import { AdamW } from "../../lib/optim/index.js";
import * as ops from "../../lib/ops/index.js";
import { expectClose, hasCuda, noCudaReason, randomValues } from "../helpers.js";

const FAMILIES = [
  "elementwise", "reduce", "matmul", "embedding", "layernorm", "rmsnorm", "softmax", "crossentropy", "dropout", "attention", "rope",
  "lora", "creation", "optim",
] as const;
type Family = (typeof FAMILIES)[number];

/** An input: a float32 leaf of this shape (values from `seed`, times `scale`), or int32 data. */
type Input = { shape: number[]; seed: number; scale?: number; grad?: boolean } | { int32: number[]; shape: number[] };

interface Row {
  family: Family;
  name: string;
  inputs: Input[];
  /** The op on one device; its float32 inputs require grad unless `grad: false`. */
  run: (xs: Tensor[], device: string) => Tensor;
  /** Bit-identical outputs and gradients on both devices. */
  exact?: boolean;
  tol?: number;
  /** Forward only (the op has no backward, e.g. creation and optimizer steps). */
  noBackward?: boolean;
}

const f = (shape: number[], seed: number, scale = 1): Input => ({ shape, seed, scale });
const ids = (values: number[], shape = [values.length]): Input => ({ int32: values, shape });
/** A generator at a fixed state, fresh per call so that both devices draw the same stream. */
const gen = (seed = 7n, offset = 2n ** 32n - 33n) => new Generator(seed).setState({ seed: String(seed), offset: String(offset) });

const ROWS: Row[] = [
  // ---- elementwise: binary ops with broadcasting, every unary op (GELU through the vector exp)
  ...(["add", "sub", "mul", "div"] as const).map((op): Row => ({
    family: "elementwise", name: `${op} broadcast [7,1,13] x [5,13]`, inputs: [f([7, 1, 13], 1), f([5, 13], 2, 0.5)],
    run: ([a, b]) => ops[op](a!, op === "div" ? ops.addScalar(ops.abs(b!), 1) : b!),
  })),
  ...(["neg", "exp", "tanh", "relu", "sigmoid", "square", "abs", "gelu", "silu"] as const).map((op): Row => ({
    family: "elementwise", name: `${op} [3,1001]`, inputs: [f([3, 1001], 3, 3)], run: ([x]) => ops[op](x!),
  })),
  { family: "elementwise", name: "exact gelu (approximate none) [3,1001]", inputs: [f([3, 1001], 3, 3)], run: ([x]) => ops.gelu(x!, { approximate: "none" }) },
  { family: "elementwise", name: "log, sqrt, pow on positive [257]", inputs: [f([257], 4)],
    run: ([x]) => { const p = ops.addScalar(ops.abs(x!), 0.5); return ops.add(ops.add(ops.log(p), ops.sqrt(p)), ops.pow(p, 1.7)); } },
  { family: "elementwise", name: "scale and addScalar of a transposed view", inputs: [f([9, 11], 5)],
    run: ([x]) => ops.addScalar(ops.scale(x!.transpose(0, 1), -2.5), 3) },
  // ---- reduce: over all, one dim, several dims, keepDim
  { family: "reduce", name: "sum over all of [33,129]", inputs: [f([33, 129], 6)], run: ([x]) => ops.sum(x!) },
  { family: "reduce", name: "sum over all of [700,300] (row split into chunks on the GPU)", inputs: [f([700, 300], 60)], run: ([x]) => ops.sum(x!) },
  { family: "reduce", name: "sum over dim 1 of [4,77,5], keepDim", inputs: [f([4, 77, 5], 7)], run: ([x]) => ops.sum(x!, 1, true) },
  { family: "reduce", name: "mean over dims [0,2] of [6,7,8]", inputs: [f([6, 7, 8], 8)], run: ([x]) => ops.mean(x!, [0, 2]) },
  // ---- matmul: 1-D, 2-D, batched with broadcast, transposed operands, linear and Conv1D with bias
  { family: "matmul", name: "[13] x [13,7]", inputs: [f([13], 9), f([13, 7], 10)], run: ([a, b]) => ops.matmul(a!, b!) },
  { family: "matmul", name: "[3,1,17,33] x [5,33,9] batched broadcast", inputs: [f([3, 1, 17, 33], 11), f([5, 33, 9], 12)],
    run: ([a, b]) => ops.matmul(a!, b!), tol: 1e-5 },
  { family: "matmul", name: "transposed operands [31,19]ᵀ x [23,31]ᵀ", inputs: [f([31, 19], 13), f([23, 31], 14)],
    run: ([a, b]) => ops.matmul(a!.transpose(0, 1), b!.transpose(0, 1)) },
  { family: "matmul", name: "linear [2,37,65] by [129,65] + bias", inputs: [f([2, 37, 65], 15), f([129, 65], 16), f([129], 17)],
    run: ([x, w, b]) => ops.linear(x!, w!, b!) },
  { family: "matmul", name: "conv1dLinear [5,768] by [768,2304] + bias (GPT-2 c_attn)", inputs: [f([5, 768], 18), f([768, 2304], 19, 0.02), f([2304], 20)],
    run: ([x, w, b]) => ops.conv1dLinear(x!, w!, b!), tol: 1e-4 },
  // every broadcast and 1-D case of matmul's semantics, and views read in place
  ...([
    [[7], [7]], [[5], [5, 3]], [[4, 6], [6]], [[33, 9], [9, 19]], [[3, 4, 5], [5, 2]], [[4, 5], [3, 5, 2]],
    [[2, 3, 4], [2, 4, 5]], [[2, 1, 3, 4], [3, 4, 2]], [[2, 1, 3, 4], [1, 3, 4, 2]], [[6], [2, 6, 3]], [[130, 70], [70, 90]],
  ] as [number[], number[]][]).map(([sa, sb], i): Row => ({
    family: "matmul", name: `[${sa}] x [${sb}]`, inputs: [f(sa, 100 + 2 * i), f(sb, 101 + 2 * i)], run: ([a, b]) => ops.matmul(a!, b!), tol: 1e-5,
  })),
  { family: "matmul", name: "x [2,3,6,4] by yᵀ of [2,3,5,4]", inputs: [f([2, 3, 6, 4], 130), f([2, 3, 5, 4], 131)],
    run: ([x, y]) => ops.matmul(x!, y!.transpose(-2, -1)), tol: 1e-5 },
  { family: "matmul", name: "a permuted [6,2,4] by [4,3]", inputs: [f([6, 2, 4], 132), f([4, 3], 133)],
    run: ([z, w]) => ops.matmul(z!.permute(1, 0, 2), w!), tol: 1e-5 },
  { family: "matmul", name: "an expanded [1,5] row by [5,3]", inputs: [f([1, 5], 134), f([5, 3], 135)],
    run: ([r, w]) => ops.matmul(ops.expand(r!, [4, 5]), w!), tol: 1e-5 },
  { family: "matmul", name: "linear of a transposed input [7,5]ᵀ by [3,7]", inputs: [f([7, 5], 136), f([3, 7], 137)],
    run: ([x, w]) => ops.linear(x!.transpose(0, 1), w!), tol: 1e-5 },
  // bfloat16 (frozen) weights, as `dtype: "bfloat16"` models hold them: x and dY rounded to bf16,
  // bf16 tensor-core GEMM with float32 sums on CUDA, float32 GEMM of the same bf16 values on the CPU
  { family: "matmul", name: "linear [2,37,65] by bf16 [129,65] + bias", inputs: [f([2, 37, 65], 15), { shape: [129, 65], seed: 16, grad: false }, f([129], 17)],
    run: ([x, w, b], device) => ops.linear(x!, w!.to(device, "bfloat16"), b!), tol: 1e-5 },
  // bias and gelu in the GEMM's epilogue (cuBLASLt on CUDA; its fallback, the GEMM then one pass,
  // where cuBLASLt has no algorithm, e.g. the odd row stride 129 of the pre-activation it keeps)
  { family: "matmul", name: "conv1dLinear [2,37,65] by [65,128] + bias, gelu", inputs: [f([2, 37, 65], 140), f([65, 128], 141, 0.3), f([128], 142)],
    run: ([x, w, b]) => ops.conv1dLinear(x!, w!, b!, { activation: "gelu" }) },
  { family: "matmul", name: "linear [2,37,65] by [129,65] + bias, gelu (fallback)", inputs: [f([2, 37, 65], 143), f([129, 65], 144, 0.3), f([129], 145)],
    run: ([x, w, b]) => ops.linear(x!, w!, b!, { activation: "gelu" }) },
  { family: "matmul", name: "linear [5,40] by [24,40], gelu, no bias", inputs: [f([5, 40], 146), f([24, 40], 147, 0.3)],
    run: ([x, w]) => ops.linear(x!, w!, null, { activation: "gelu" }) },
  { family: "matmul", name: "conv1dLinear [9,768] by bf16 [768,3072] + bias, gelu (GPT-2 c_fc)", inputs: [f([9, 768], 148), { shape: [768, 3072], seed: 149, scale: 0.02, grad: false }, f([3072], 150)],
    run: ([x, w, b], device) => ops.conv1dLinear(x!, w!.to(device, "bfloat16"), b!, { activation: "gelu" }), tol: 1e-5 },
  { family: "matmul", name: "conv1dLinear [9,768] by bf16 [768,3072] + frozen bias, gelu (dX reads the bf16 gelu gradient)",
    inputs: [f([9, 768], 151), { shape: [768, 3072], seed: 152, scale: 0.02, grad: false }, { shape: [3072], seed: 153, grad: false }],
    run: ([x, w, b], device) => ops.conv1dLinear(x!, w!.to(device, "bfloat16"), b!, { activation: "gelu" }), tol: 1e-5 },
  { family: "matmul", name: "conv1dLinear [5,768] by bf16 [768,2304] (GPT-2 c_attn)", inputs: [f([5, 768], 18), { shape: [768, 2304], seed: 19, scale: 0.02, grad: false }],
    run: ([x, w], device) => ops.conv1dLinear(x!, w!.to(device, "bfloat16")), tol: 1e-5 },
  // ---- embedding: gather, and the scatter-add backward in order of position (bit for bit)
  { family: "embedding", name: "ids [4,25] (repeats) into [101,33]", exact: true,
    inputs: [ids(Array.from({ length: 100 }, (_, i) => (i % 4 === 0 ? 0 : (i * 37) % 101)), [4, 25]), f([101, 33], 21)],
    run: ([i, w]) => ops.embedding(i!, w!) },
  { family: "embedding", name: "ids [3,9] into a bf16 table [50,64]", exact: true, noBackward: true,
    inputs: [ids(Array.from({ length: 27 }, (_, i) => (i * 7) % 50), [3, 9]), { shape: [50, 64], seed: 22, grad: false }],
    run: ([i, w], device) => ops.embedding(i!, w!.to(device, "bfloat16")) },
  // ---- layernorm
  // ---- rope: Llama's rotation of q or k (a transposed view, as after the head split), KV-cache offset
  { family: "rope", name: "[2,3,7,16] from a [2,7,3,16] view, theta 500000, offset 5", inputs: [f([2, 7, 3, 16], 28)],
    run: ([x], device) => { const { cos, sin } = ops.rotaryCosSin(7, 16, { theta: 500000, offset: 5, device }); return ops.applyRotary(x!.transpose(1, 2), cos, sin); } },
  { family: "layernorm", name: "[1,1] affine", inputs: [f([1, 1], 22), f([1], 23), f([1], 24)], run: ([x, w, b]) => ops.layerNorm(x!, w!, b!) },
  { family: "layernorm", name: "[7,13] affine", inputs: [f([7, 13], 25, 3), f([13], 26), f([13], 27)], run: ([x, w, b]) => ops.layerNorm(x!, w!, b!) },
  { family: "layernorm", name: "[3,100,768] affine (GPT-2 width)", inputs: [f([3, 100, 768], 28, 3), f([768], 29), f([768], 30)],
    run: ([x, w, b]) => ops.layerNorm(x!, w!, b!) },
  { family: "layernorm", name: "[9,31] without weight and bias", inputs: [f([9, 31], 31)], run: ([x]) => ops.layerNorm(x!, null, null) },
  // ---- rmsnorm
  { family: "rmsnorm", name: "[7,13] affine", inputs: [f([7, 13], 25, 3), f([13], 26)], run: ([x, w]) => ops.rmsNorm(x!, w!, 1e-6) },
  { family: "rmsnorm", name: "[3,100,768] without weight", inputs: [f([3, 100, 768], 28, 3)], run: ([x]) => ops.rmsNorm(x!, null, 1e-6) },
  // ---- softmax
  { family: "softmax", name: "softmax [5,1000]", inputs: [f([5, 1000], 32, 10)], run: ([x]) => ops.softmax(x!) },
  { family: "softmax", name: "logSoftmax over dim 1 of [3,4,5]", inputs: [f([3, 4, 5], 33, 10)], run: ([x]) => ops.logSoftmax(x!, 1) },
  { family: "softmax", name: "softmax [1,1]", inputs: [f([1, 1], 34)], run: ([x]) => ops.softmax(x!) },
  // ---- crossentropy
  { family: "crossentropy", name: "mean over 50257 classes with ignored rows", inputs: [f([6, 50257], 35, 4), ids([5, -100, 50256, 0, 17, -100])],
    run: ([x, t]) => ops.crossEntropy(x!, t!) },
  { family: "crossentropy", name: "sum [4,9]", inputs: [f([4, 9], 36, 4), ids([1, 2, 3, 4])], run: ([x, t]) => ops.crossEntropy(x!, t!, { reduction: "sum" }) },
  { family: "crossentropy", name: "none [4,9] with an ignored row", inputs: [f([4, 9], 37, 4), ids([1, -100, 3, 8])],
    run: ([x, t]) => ops.crossEntropy(x!, t!, { reduction: "none" }) },
  { family: "crossentropy", name: "sum with every row ignored", inputs: [f([3, 5], 38), ids([-100, -100, -100])],
    run: ([x, t]) => ops.crossEntropy(x!, t!, { reduction: "sum" }) },
  // ---- dropout: the same Philox counters on both devices, so masks and gradients are bit-identical
  { family: "dropout", name: "p=0.1 [37,129] (counter crosses 2^32)", exact: true, inputs: [f([37, 129], 39)],
    run: ([x]) => ops.dropout(x!, 0.1, { generator: gen() }) },
  { family: "dropout", name: "p=0.1 [37,129] added to a residual (the product rounded before the sum)", exact: true, inputs: [f([37, 129], 39), f([37, 129], 40)],
    run: ([x, r]) => ops.dropout(x!, 0.1, { generator: gen(), residual: r! }) },
  // ---- attention: D of 32, 64 and 128 with aligned rows take the CUDA flash kernels, the other
  // sizes the row kernels (native/cuda/attention.cu); both against the same CPU kernel.
  ...([
    { B: 1, H: 1, Tq: 1, Tk: 1, D: 1 },
    { B: 2, H: 3, Tq: 70, Tk: 70, D: 64 },
    { B: 2, H: 2, Tq: 9, Tk: 9, D: 7, causal: false },
    { B: 2, H: 2, Tq: 3, Tk: 11, D: 16 },
    { B: 2, H: 2, Tq: 6, Tk: 6, D: 5, keep: [1, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1] },
    { B: 2, H: 2, Tq: 9, Tk: 12, D: 8, dropout: 0.25, keep: [...new Array(12).fill(1), 0, 0, 0, ...new Array(9).fill(1)] },
    { B: 1, H: 12, Tq: 256, Tk: 256, D: 64 },
    { B: 2, H: 3, Tq: 97, Tk: 97, D: 32 },
    { B: 1, H: 2, Tq: 5, Tk: 77, D: 128 },
    { B: 2, H: 2, Tq: 1, Tk: 50, D: 64 },
    { B: 2, H: 2, Tq: 33, Tk: 33, D: 128, causal: false },
    // batch 1 left-padded by 5: its first 5 queries see no key (zeros, no gradient)
    { B: 2, H: 2, Tq: 40, Tk: 40, D: 64, dropout: 0.2, keep: [...new Array(40).fill(1), 0, 0, 0, 0, 0, ...new Array(35).fill(1)] },
    { B: 2, H: 2, Tq: 45, Tk: 45, D: 32, causal: false, keep: [...new Array(43).fill(1), 0, 0, ...new Array(45).fill(1)] },
    { B: 2, H: 2, Tq: 9, Tk: 9, D: 8, window: 4 }, // sliding windows: row kernels, then flash
    { B: 1, H: 2, Tq: 3, Tk: 11, D: 16, window: 5 },
    { B: 2, H: 2, Tq: 77, Tk: 77, D: 64, window: 20, dropout: 0.1, keep: [...new Array(77).fill(1), 0, 0, 0, ...new Array(74).fill(1)] },
    { B: 1, H: 2, Tq: 4, Tk: 90, D: 128, window: 33 },
  ] as { B: number; H: number; Tq: number; Tk: number; D: number; causal?: boolean; dropout?: number; keep?: number[]; window?: number }[]).map(
    (c): Row => ({
      family: "attention",
      name: `B=${c.B} H=${c.H} Tq=${c.Tq} Tk=${c.Tk} D=${c.D}${c.causal === false ? " non-causal" : ""}${c.keep ? " padded" : ""}${c.dropout ? ` dropout ${c.dropout}` : ""}${c.window ? ` window ${c.window}` : ""}`,
      inputs: [f([c.B, c.H, c.Tq, c.D], 40), f([c.B, c.H, c.Tk, c.D], 41), f([c.B, c.H, c.Tk, c.D], 42), ...(c.keep ? [ids(c.keep, [c.B, c.Tk])] : [])],
      run: ([q, k, v, keep]) =>
        ops.scaledDotProductAttention(q!, k!, v!, { causal: c.causal, dropout: c.dropout, attnMask: keep ?? null, window: c.window, generator: gen(11n, 0n) }),
      tol: 1e-4,
    }),
  ),
  // keys sharing a large part (each row's scores shifted by q·k0) and values sharing one (dP
  // nearly constant along a row): the backward's rowsum(P ∘ dP) must cancel the common part
  ...[7, 64].map((D): Row => ({
    family: "attention", name: `B=2 H=2 T=21 D=${D}, k + 64 and v + 3`, inputs: [f([2, 2, 21, D], 44, 2), f([2, 2, 21, D], 45, 2), f([2, 2, 21, D], 46)], tol: 1e-4,
    run: ([q, k, v]) => ops.scaledDotProductAttention(q!, ops.addScalar(k!, 64), ops.addScalar(v!, 3)),
  })),
  ...([{ T: 33, H: 4, D: 8 }, { T: 45, H: 2, D: 64 }]).map(({ T, H, D }): Row => ({
    family: "attention", name: `strided heads of a fused qkv [2,${T},${3 * H * D}]`, inputs: [f([2, T, 3 * H * D], 43)], tol: 1e-4,
    run: ([qkv]) => {
      const head = (i: number) => qkv!.slice(2, i * H * D, (i + 1) * H * D).reshape(2, T, H, D).permute(0, 2, 1, 3);
      return ops.scaledDotProductAttention(head(0), head(1), head(2)).transpose(1, 2).reshape(2, T, H * D);
    },
  })),
  // ---- lora: y + s·drop(x)·Aᵀ·Bᵀ (native/cpu/lora.cc vs native/cuda/lora.cu), with and without
  // dropout: odd shapes (the stream's 64-element groups cross rows), k a multiple of 64 (every row's
  // groups aligned), ranks across the CUDA kernels' 16-column tiles, rows enough for several slabs of
  // the gradient sums, x a view of a wider tensor
  ...([
    { N: 77, k: 65, d: 33, r: 3 }, { N: 300, k: 128, d: 200, r: 16 }, { N: 129, k: 96, d: 47, r: 17 }, { N: 40, k: 33, d: 300, r: 64 }, { N: 31, k: 130, d: 70, r: 128 },
  ]).flatMap(({ N, k, d, r }) => ([0, 0.1] as const).map((p): Row => ({
    family: "lora", name: `N=${N} k=${k} d=${d} r=${r} dropout ${p}`, inputs: [f([N, d], 44), f([N, k], 45), f([r, k], 46), f([d, r], 47)],
    run: ([y, x, A, B]) => ops.loraDelta(y!, x!, A!, B!, { scaling: 2.5, dropout: p, training: true, generator: gen(3n, 5n) }),
  }))),
  { family: "lora", name: "x a column slice of [50,130], dropout 0.2", inputs: [f([50, 20], 53), f([50, 130], 54), f([5, 64], 55), f([20, 5], 56)],
    run: ([y, x, A, B]) => ops.loraDelta(y!, x!.slice(1, 3, 67), A!, B!, { scaling: 0.5, dropout: 0.2, training: true, generator: gen(9n, 70n) }) },
  // ---- lora merge: W += s·B·A in place (and transposed, Conv1D's and Embedding's layout), float32
  // and bfloat16 W (a bf16 element may round the other way where the two float32 sums differ)
  ...([false, true] as const).flatMap((transposed) => (["float32", "bfloat16"] as const).map((dtype): Row => ({
    family: "lora", name: `merge ${dtype} W${transposed ? " transposed" : ""}, k=70 r=17 d=130`, noBackward: true,
    inputs: [f(transposed ? [70, 130] : [130, 70], 57), f([17, 70], 58), f([130, 17], 59)], tol: dtype === "float32" ? 1e-6 : 1e-3,
    run: ([W, A, B]) => {
      const w = dtype === "float32" ? W!.detach().contiguous() : W!.detach().to(W!.device, dtype); // a copy either way
      ops.loraMerge(w, A!.detach(), B!.detach(), -1.3, transposed);
      return w.to(w.device, "float32");
    },
  }))),
  // ---- lora, one GEMM (loraLinear): a frozen bf16 weight in its padded buffer, the adapter and the
  // bias inside the GEMM; Conv1D and Linear layouts, ranks across the 16-column tiles (17: two),
  // dropout on (the masked s·v·A after the GEMM) and off (inside it); x of 8·k bytes per row and
  // odd. Tolerance 1e-3: the backends' float32 u and v may round s·u and s·v to different bf16
  // neighbours in rare elements (2^-8 of that term), and the tensor-core GEMM sums in another order.
  ...([
    { N: 300, k: 128, d: 200, r: 16, transposed: true, bias: true }, { N: 77, k: 65, d: 33, r: 3, transposed: false, bias: true },
    { N: 129, k: 96, d: 47, r: 17, transposed: true, bias: false }, { N: 40, k: 768, d: 300, r: 8, transposed: false, bias: false },
    { N: 31, k: 130, d: 70, r: 128, transposed: false, bias: true }, { N: 50, k: 64, d: 33, r: 64, transposed: true, bias: true },
  ]).flatMap(({ N, k, d, r, transposed, bias }) => ([0, 0.1] as const).map((p): Row => ({
    family: "lora", name: `one GEMM ${transposed ? "Conv1D" : "Linear"} N=${N} k=${k} d=${d} r=${r}${bias ? " +bias" : ""} dropout ${p}`, tol: 1e-3,
    inputs: [{ shape: transposed ? [k, d] : [d, k], seed: 60, scale: 0.5, grad: false }, { shape: [d], seed: 61, grad: false }, f([N, k], 62), f([r, k], 63, 0.5), f([d, r], 64, 0.5)],
    run: ([W, b, x, A, B]) => {
      const aug = new ops.AugmentedWeight(W!.to(W!.device, "bfloat16"), ops.AugmentedWeight.padFor(r), transposed);
      const y = ops.loraLinear(x!, aug, A!, B!, bias ? b! : null, { scaling: 2.5, dropout: p, training: true, generator: gen(3n, 5n) });
      aug.dispose(); // the recorded backward keeps the buffer's storage
      return y;
    },
  }))),
  // ---- creation: fills, ranges, Philox uniforms (exact integer arithmetic), casts, strided copies
  { family: "creation", name: "rand [17,31] from one generator state", inputs: [], exact: true, noBackward: true,
    run: (_, device) => rand([17, 31], { generator: gen(123456789n, 0n), device }) },
  { family: "creation", name: "randn [1000] (Box-Muller in double)", inputs: [], noBackward: true, tol: 1e-6,
    run: (_, device) => randn([1000], { generator: gen(1n, 0n), device }) },
  { family: "creation", name: "bfloat16 round trip and a permuted copy", inputs: [f([2, 3, 5], 48)], exact: true, noBackward: true,
    run: ([x]) => x!.to(x!.device, "bfloat16").to(x!.device, "float32").permute(2, 0, 1).contiguous() },
  // ---- optim: one fused AdamW step (bit-identical: the same per-element IEEE arithmetic)
  { family: "optim", name: "AdamW step on [300,257] and [4097]", inputs: [f([300, 257], 49), f([300, 257], 50), f([4097], 51), f([4097], 52)],
    exact: true, noBackward: true,
    run: ([p1, g1, p2, g2]) => {
      const params = [p1!.detach().clone().requireGrad(), p2!.detach().clone().requireGrad()];
      params[0]!.grad = g1!.detach().clone();
      params[1]!.grad = g2!.detach().clone();
      const opt = new AdamW([{ params }], { lr: 1e-2, weightDecay: 0.1 });
      opt.step();
      opt.step();
      const out = noGrad(() => ops.concat([params[0]!.reshape(-1), params[1]!]));
      opt.dispose();
      params.forEach((p) => { p.grad?.dispose(); p.dispose(); });
      return out;
    } },
];

/** Runs a row on one device: [output, ...gradients of the float32 inputs], as flat arrays. */
function runOn(row: Row, device: string): number[][] {
  return tidy(() => {
    const xs = row.inputs.map((input) =>
      "int32" in input
        ? tensor(new Int32Array(input.int32), { shape: input.shape, device })
        : tensor(randomValues(input.shape.reduce((a, b) => a * b, 1), input.seed).map((v) => v * (input.scale ?? 1)), {
            shape: input.shape, device, requiresGrad: !row.noBackward && input.grad !== false,
          }),
    );
    const out = row.run(xs, device);
    const results = [out];
    if (!row.noBackward) {
      const g = tensor(randomValues(out.size, 999), { shape: [...out.shape], device });
      out.backward(g);
      for (const x of xs) if (x.requiresGrad) results.push(x.grad!);
    }
    return results.map((t) => Array.from(t.dataSync()));
  });
}

const gpu = describe.skipIf(!hasCuda);
if (!hasCuda) describe("CUDA twins", () => it.skip(noCudaReason, () => {}));

describe("the twin table", () => {
  it("covers every op family", () => {
    const covered = new Set(ROWS.map((r) => r.family));
    expect(FAMILIES.filter((fam) => !covered.has(fam))).toEqual([]);
  });

  // The CPU side of every row, so that a broken row shows up on any host, not first on the GPU
  // machine; exact rows must also be reproducible run to run.
  it("every row runs on the CPU, with one output and a gradient per float32 input", () => {
    for (const row of ROWS) {
      const first = runOn(row, "cpu");
      const floats = row.inputs.filter((input) => !("int32" in input) && input.grad !== false).length;
      expect(first.length, `${row.family}: ${row.name}`).toBe(row.noBackward ? 1 : 1 + floats);
      if (row.exact) expect(runOn(row, "cpu"), `${row.family}: ${row.name}`).toEqual(first);
    }
  });
});

gpu("CUDA kernels match their CPU twins, forward and backward (float32)", () => {
  for (const row of ROWS) {
    it(`${row.family}: ${row.name}`, () => {
      const [cpu, cuda] = [runOn(row, "cpu"), runOn(row, "cuda:0")];
      expect(cuda.length).toBe(cpu.length);
      cpu.forEach((ref, i) => {
        const what = i === 0 ? "output" : `gradient of input ${i - 1}`;
        if (row.exact) expect(cuda[i], what).toEqual(ref);
        else expectClose(cuda[i]!, ref, row.tol ?? 1e-5);
      });
    });
  }
});

gpu("CUDA behaviours beyond the twin table", () => {
  it("layerNorm's dw/db are deterministic on the GPU (fixed reduction order)", () => {
    const row: Row = { family: "layernorm", name: "", inputs: [f([1000, 96], 5), f([96], 6), f([96], 7)], run: ([x, w, b]) => ops.layerNorm(x!, w!, b!) };
    expect(runOn(row, "cuda:0")).toEqual(runOn(row, "cuda:0"));
  });

  it("rmsNorm's dw is deterministic on the GPU (fixed reduction order)", () => {
    const row: Row = { family: "rmsnorm", name: "", inputs: [f([1000, 96], 5), f([96], 6)], run: ([x, w]) => ops.rmsNorm(x!, w!, 1e-6) };
    expect(runOn(row, "cuda:0")).toEqual(runOn(row, "cuda:0"));
  });

  it("crossEntropy: all rows ignored gives NaN for the mean; a bad target is named with its position", () => {
    tidy(() => {
      const logits = tensor(randomValues(10, 11), { shape: [2, 5], device: "cuda:0" });
      expect(Number.isNaN(ops.crossEntropy(logits, tensor(new Int32Array([-100, -100]), { shape: [2], device: "cuda:0" })).item())).toBe(true);
      expect(() => ops.crossEntropy(logits, tensor(new Int32Array([0, 7]), { shape: [2], device: "cuda:0" }))).toThrow(
        /target 7 at position 1 is out of range for 5 classes/,
      );
    });
  });
});
