// Probe (GPU machine): the fused LoRA op's native calls alone at GPT-2 124M's shapes (batch 8 x 1024
// tokens, r = 16: c_attn, attn.c_proj, mlp.c_proj) and a 4096-wide layer, with and without dropout,
// against the bytes they must move and a device-to-device copy of the same bytes measured here.
//   forward  reads x [N, k] and y [N, d], writes out [N, d]
//   backward reads g [N, d] (for v and for gB) and x (for gA), writes gx [N, k]
// Run after building and compiling dist-train-cpu:  node bench/train-gpu/lora_kernels.mjs
// ONCE=1 runs each call once, untimed, at the c_attn shape with dropout (for a profiler such as ncu).
import { empty, randn } from "../../dist-train-cpu/lib/index.js";
import { native } from "../../dist-train-cpu/lib/native/index.js";
import { medianMs } from "./median-ms.mjs";

const device = process.env.DEVICE ?? "cuda:0";
const N = Number(process.env.ROWS ?? 8192), r = 16;
const once = process.env.ONCE === "1";
const ms = (fn) => (once ? (fn(), 1) : medianMs(fn, device));
const copyOf = (floats) => {
  if (once) return 0;
  const a = empty([floats], { device }), b = empty([floats], { device });
  const t = ms(() => native().copyStrided({ src: a.nativeView, dst: b.nativeView, shape: [floats], elemSize: 4 }));
  a.dispose(); b.dispose();
  return t;
};
const gbps = (floats, t) => ((floats * 4) / t / 1e6).toFixed(0);
console.log(`LoRA op alone, N=${N} r=${r}: µs per call (GB/s of the bytes it must move; a copy of those bytes, µs)`);
const layers = [["c_attn", 768, 2304], ["attn.c_proj", 768, 768], ["mlp.c_proj", 3072, 768], ["4096", 4096, 4096]];
for (const [label, k, d] of once ? layers.slice(0, 1) : layers) {
  const x = randn([N, k], { device }), y = randn([N, d], { device }), g = randn([N, d], { device });
  const A = randn([r, k], { device }), B = randn([d, r], { device });
  const out = empty([N, d], { device }), u = empty([N, r], { device });
  const gx = empty([N, k], { device }), gA = empty([r, k], { device }), gB = empty([d, r], { device });
  for (const p of once ? [0.05] : [0, 0.05]) {
    const dims = { N, k, r, d, scaling: 2, p, maskScale: 1 / (1 - p), seed: 7n, offset: 0n };
    const fwd = ms(() => native().loraForward({ ...dims, x: x.nativeView, A: A.nativeView, B: B.nativeView, y: y.nativeView, out: out.nativeView, u: u.nativeView }));
    const bwd = ms(() => native().loraBackward({ ...dims, g: g.nativeView, x: x.nativeView, A: A.nativeView, B: B.nativeView, u: u.nativeView, gx: gx.nativeView, gA: gA.nativeView, gB: gB.nativeView }));
    const bwdGx = ms(() => native().loraBackward({ ...dims, g: g.nativeView, x: x.nativeView, A: A.nativeView, B: B.nativeView, u: u.nativeView, gx: gx.nativeView, gA: null, gB: null }));
    const bwdGA = ms(() => native().loraBackward({ ...dims, g: g.nativeView, x: x.nativeView, A: A.nativeView, B: B.nativeView, u: u.nativeView, gx: null, gA: gA.nativeView, gB: null }));
    const bwdGB = ms(() => native().loraBackward({ ...dims, g: g.nativeView, x: x.nativeView, A: A.nativeView, B: B.nativeView, u: u.nativeView, gx: null, gA: null, gB: gB.nativeView }));
    const fb = N * k + 2 * N * d, bb = 2 * N * d + 2 * N * k;
    console.log(
      `${label.padEnd(12)} k=${k} d=${d} p=${p}: forward ${(fwd * 1e3).toFixed(0)} (${gbps(fb, fwd)} GB/s; copy ${(copyOf(fb / 2) * 1e3).toFixed(0)}), ` +
        `backward ${(bwd * 1e3).toFixed(0)} (${gbps(bb, bwd)} GB/s; copy ${(copyOf(bb / 2) * 1e3).toFixed(0)}); ` +
        `gx only ${(bwdGx * 1e3).toFixed(0)}, gA only ${(bwdGA * 1e3).toFixed(0)}, gB only ${(bwdGB * 1e3).toFixed(0)}`,
    );
  }
  for (const t of [x, y, g, A, B, out, u, gx, gA, gB]) t.dispose();
}
