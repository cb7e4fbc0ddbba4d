// lowrank side of the greedy-decoding benchmark (see run.sh): loads the random-init GPT-2 124M
// that `torch_train.py make` saved, decodes greedily from DIR/ids.json's first row (the prompt)
// with the KV cache, and times whole generate() calls (prefill + every new token), as
// torch_generate.py times transformers' generate(). Also a copy-bandwidth probe (see copyBandwidth).
//
//   node <compiled bench.js> DIR [--new 128] [--rounds 5] [--warmup 1] [--dtype float32|bfloat16]
//
// --dtype bfloat16 loads the model as `dtype: "bfloat16"` does for users: the weight matrices in
// bf16 (half the bytes to stream per token), norms and biases float32.
//
// Prints one JSON line prefixed "RESULT ". With LOWRANK_PROFILE=1 it then profiles one more
// generate() call and prints where its time went.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { AutoModelForCausalLM, generate, info, noGrad } from "../../lib/index.js";
import { DTYPE_SIZE } from "../../lib/tensor/dtype.js";
import { median } from "../../lib/analysis/stats.js";
import { PROFILING, profileReport, profileReset } from "../../lib/profile.js";

function parseArgs(argv: string[]): { dir: string; newTokens: number; rounds: number; warmup: number; dtype: "float32" | "bfloat16" } {
  const opts = { dir: "", newTokens: 128, rounds: 5, warmup: 1, dtype: "float32" as "float32" | "bfloat16" };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--new") opts.newTokens = Number(argv[++i]);
    else if (a === "--rounds") opts.rounds = Number(argv[++i]);
    else if (a === "--warmup") opts.warmup = Number(argv[++i]);
    else if (a === "--dtype") {
      const d = argv[++i];
      if (d !== "float32" && d !== "bfloat16") throw new Error(`bench: --dtype must be float32 or bfloat16, got ${d}`);
      opts.dtype = d;
    }
    else if (!a.startsWith("--") && !opts.dir) opts.dir = a;
    else throw new Error(`bench: unknown argument ${a}`);
  }
  if (!opts.dir) throw new Error("usage: bench.js DIR [--new N] [--rounds N] [--warmup N] [--dtype float32|bfloat16]");
  return opts;
}

/**
 * Copy bandwidth: GB/s moved (read + written) by Float32Array.set over 512 MiB (memcpy, one thread),
 * median of 5. torch_generate.py's probe reads with both threads; run.sh prints both.
 */
function copyBandwidth(): number {
  const n = 1 << 27;
  const src = new Float32Array(n).fill(1), dst = new Float32Array(n);
  const times: number[] = [];
  for (let r = 0; r < 6; r++) {
    const t0 = performance.now();
    dst.set(src);
    if (r > 0) times.push(performance.now() - t0);
  }
  return (2 * n * 4) / (median(times) / 1e3) / 1e9;
}

const opts = parseArgs(process.argv.slice(2));
const model = AutoModelForCausalLM.fromPretrainedSync(opts.dir, { device: "cpu", dtype: opts.dtype });
model.eval();
const prompt = (JSON.parse(readFileSync(join(opts.dir, "ids.json"), "utf8")) as number[][])[0]!;
const weightBytes = model.parameters().reduce((n, p) => n + p.size * DTYPE_SIZE[p.dtype], 0);
const run = () => noGrad(() => generate(model, prompt, { maxNewTokens: opts.newTokens, eosTokenId: null }));

let tokens: number[] = [];
const rates: number[] = [];
for (let r = 0; r < opts.warmup + opts.rounds; r++) {
  const t0 = performance.now();
  tokens = run();
  const s = (performance.now() - t0) / 1e3;
  if (r >= opts.warmup) rates.push(tokens.length / s);
}
const copyGbps = copyBandwidth();
const result = {
  side: "lowrank", dtype: opts.dtype, threads: info().threads, prompt: prompt.length, new_tokens: tokens.length,
  tokens_per_s: median(rates), samples: rates, weight_bytes: weightBytes, copy_gbps: copyGbps, first_tokens: tokens.slice(0, 16),
};
console.log(`RESULT ${JSON.stringify(result)}`);
if (PROFILING) {
  profileReset();
  run();
  console.log(profileReport(opts.newTokens, 0.002, "token"));
}
