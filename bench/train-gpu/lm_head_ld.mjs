// Probe (GPU machine): the tied lm_head GEMM of GPT-2 through lowrank's own cuBLAS call (bf16 x and
// W, float32 logits, as linearCrossEntropy runs it) with the vocabulary 50,257 as is, with only the
// logits' row stride padded to a multiple of 8, and with a weight padded to 50,264 rows; and the
// input-gradient GEMM (dlogits bf16 · W) the same three ways. Which of n and ld makes cuBLAS slow?
// Run after building and compiling dist-train-cpu:  node bench/train-gpu/lm_head_ld.mjs
import { empty, randn } from "../../dist-train-cpu/lib/index.js";
import { native } from "../../dist-train-cpu/lib/native/index.js";
import { medianMs } from "./median-ms.mjs";

const N = Number(process.env.ROWS ?? 667), C = 768; // one linearCrossEntropy chunk of GPT-2 (128 MiB of float32 logits)
const device = process.env.DEVICE ?? "cuda:0";
const x = randn([N, C], { device }).to(device, "bfloat16");
const ms = (fn) => medianMs(fn, device);
for (const [label, n, ld] of [["V=50257 ld=50257", 50257, 50257], ["V=50257 ld=50264", 50257, 50264], ["V=50264 ld=50264", 50264, 50264], ["V=50256 ld=50264", 50256, 50264]]) {
  const w = randn([n, C], { device }).to(device, "bfloat16");
  const logits = empty([N, ld], { device });
  const g16 = randn([N, ld], { device }).to(device, "bfloat16");
  const dx = empty([N, C], { device });
  const fwd = ms(() => native().gemm({ transA: false, transB: true, m: N, n, k: C, alpha: 1, a: x.nativeView, lda: C, strideA: 0, b: w.nativeView, ldb: C, strideB: 0, beta: 0, c: logits.nativeView, ldc: ld, strideC: 0, batch: 1, dtypeA: 1, dtypeB: 1 }));
  const bwd = ms(() => native().gemm({ transA: false, transB: false, m: N, n: C, k: n, alpha: 1, a: g16.nativeView, lda: ld, strideA: 0, b: w.nativeView, ldb: C, strideB: 0, beta: 0, c: dx.nativeView, ldc: C, strideC: 0, batch: 1, dtypeA: 1, dtypeB: 1 }));
  const f = (2 * N * n * C) / 1e9;
  console.log(`lm_head ${label}: logits ${fwd.toFixed(3)} ms (${(f / fwd).toFixed(0)} TFLOP/s), dX ${bwd.toFixed(3)} ms (${(f / bwd).toFixed(0)} TFLOP/s)`);
  for (const t of [w, logits, g16, dx]) t.dispose();
}
