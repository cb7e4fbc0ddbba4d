// CPU scaled-dot-product attention: the native attentionForward / attentionBackward calls at
// GPT-2 124M's layer shapes (H = 12, D = 64, causal, q, k, v the heads of a fused [B, T, 3C] qkv,
// out and dout [B, T, H, D], as lib/models/gpt2/model.ts lays them out), float32 and bf16
// precision, attention dropout 0.1 (GPT-2's attn_pdrop) and 0. Prints one JSON line: per case,
// [forward ms, backward ms], medians of the calls.
//
//   node bench/attention-cpu/bench.mjs [reps=60]      (after `npm run build`; the addon from
//                                                      LOWRANK_BUILD_DIR, default build/)
//   SHAPES=1x256,4x256,1x1024 CASES="bf16 p0.1"        (which B x T, and a filter on case names)
//
// bench/attention-cpu/run.sh alternates two builds and prints the comparison.
const reps = Number(process.argv[2] ?? 60);
const dist = new URL("../../dist/", import.meta.url);
const { randn, zeros } = await import(new URL("index.js", dist).href);
const { native } = await import(new URL("native/index.js", dist).href);
const { DTYPE_CODE } = await import(new URL("tensor/dtype.js", dist).href);
const only = process.env.CASES ? process.env.CASES.split(",") : null;
const H = 12, D = 64, C = H * D;
const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
const shapes = (process.env.SHAPES ?? "1x256,4x256,1x1024").split(",").map((s) => s.split("x").map(Number));
const result = {};
for (const [B, T] of shapes)
  for (const precision of ["bfloat16", "float32"])
    for (const dropout of [0.1, 0]) {
      const name = `B${B}T${T} ${precision === "bfloat16" ? "bf16" : "f32"} p${dropout}`;
      if (only && !only.some((o) => name.includes(o))) continue;
      const qkv = randn([B, T, 3 * C]), dqkv = zeros([B, T, 3 * C]);
      const out = zeros([B, T, H, D]), dout = randn([B, T, H, D]), lse = zeros([B, H, T]);
      // [b, h, t] strides of a tensor whose rows hold `width` floats, from float `at` on
      const heads = (t, width, at) => ({ storage: t.storage.native, offset: at * 4, strides: [T * width, D, width] });
      const stream = {
        dims: [B, H, T, T, D], scale: 1 / Math.sqrt(D), causal: true, window: 0, dropout, seed: 7n, offset: 0n,
        precision: DTYPE_CODE[precision], kvGroup: 1, kvRounded: false,
      };
      const fwd = { ...stream, q: heads(qkv, 3 * C, 0), k: heads(qkv, 3 * C, C), v: heads(qkv, 3 * C, 2 * C), keep: null, out: heads(out, C, 0), lse: lse.nativeView };
      const bwd = { ...fwd, dout: heads(dout, C, 0), dq: heads(dqkv, 3 * C, 0), dk: heads(dqkv, 3 * C, C), dv: heads(dqkv, 3 * C, 2 * C) };
      const n = T >= 1024 ? Math.max(5, reps >> 2) : B > 1 ? Math.max(5, reps >> 1) : reps;
      const f = [], b = [];
      for (let r = 0; r < n + 3; r++) {
        const t0 = performance.now();
        native().attentionForward(fwd);
        const t1 = performance.now();
        native().attentionBackward(bwd);
        const t2 = performance.now();
        if (r >= 3) f.push(t1 - t0), b.push(t2 - t1);
      }
      result[name] = [+median(f).toFixed(3), +median(b).toFixed(3)];
      for (const t of [qkv, dqkv, out, dout, lse]) t.dispose();
    }
console.log(JSON.stringify(result));
