// lowrank side of the CPU LoRA training benchmark: the same model directory, config and batch as
// torch_train.py (see README.md). Loads the random-init GPT-2 124M that `torch_train.py make`
// saved (or the SmolLM2-135M-shaped Llama of `make --arch smollm2-135m`), injects LoRA r=16, alpha 32,
// dropout 0.05 on c_attn + c_proj (Llama family: "all-linear"), AdamW lr 1e-4, training
// mode (GPT-2's own dropout active), and times forward + backward + optimizer step + zeroGrad.
//
//   node <compiled bench.js> DIR [--warmup 3] [--steps 10] [--lora-dropout 0.05] [--profile-steps 3] [--device cpu]
//                               [--dtype float32|bfloat16]   (bfloat16: frozen weights kept in bf16)
//                               [--gradient-checkpointing]   (recompute each block in the backward)
//                               [--lora-path auto|lora-op]   (auto: LoraLinear.oneGemm "auto", the one-GEMM
//                                                             path for bf16 weights on CUDA; lora-op: the frozen
//                                                             GEMM, then the fused LoRA op)
//
// Prints one JSON line prefixed "RESULT ". With LOWRANK_PROFILE=1 it then runs --profile-steps
// more steps under the profiler (lib/profile.ts) and prints where their time went (the timed
// steps above run first, so the profile's own overhead never enters the tokens/s).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { AdamW, AutoModelForCausalLM, getPeftModel, info, LoraConfig, memory, tensor, tidy } from "../../lib/index.js";
import { median } from "../../lib/analysis/stats.js";
import { modelTypeOf } from "../../lib/models/auto.js";
import { LoraLinear } from "../../lib/peft/layer.js";
import type { DType } from "../../lib/tensor/dtype.js";
import { PROFILING, profileEntries, profilePhase, profileReport, profileReset } from "../../lib/profile.js";

function parseArgs(argv: string[]): { dir: string; warmup: number; steps: number; loraDropout: number; profileSteps: number; device: string; dtype: DType; gradientCheckpointing: boolean; loraPath: "auto" | "lora-op" } {
  const opts = { dir: "", warmup: 3, steps: 10, loraDropout: 0.05, profileSteps: 3, device: "cpu", dtype: "float32" as DType, gradientCheckpointing: false, loraPath: "auto" as "auto" | "lora-op" };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const num = () => Number(argv[++i]);
    if (a === "--warmup") opts.warmup = num();
    else if (a === "--steps") opts.steps = num();
    else if (a === "--lora-dropout") opts.loraDropout = num();
    else if (a === "--profile-steps") opts.profileSteps = num();
    else if (a === "--device") opts.device = argv[++i]!;
    else if (a === "--dtype") opts.dtype = argv[++i] as DType;
    else if (a === "--gradient-checkpointing") opts.gradientCheckpointing = true;
    else if (a === "--lora-path") opts.loraPath = argv[++i] === "lora-op" ? "lora-op" : "auto";
    else if (!a.startsWith("--") && !opts.dir) opts.dir = a;
    else throw new Error(`bench: unknown argument ${a}`);
  }
  if (!opts.dir) throw new Error("usage: bench.js DIR [--warmup N] [--steps N] [--lora-dropout P] [--profile-steps N] [--device cpu|cuda:0] [--dtype float32|bfloat16] [--gradient-checkpointing] [--lora-path auto|lora-op]");
  return opts;
}

const opts = parseArgs(process.argv.slice(2));
LoraLinear.oneGemm = opts.loraPath === "lora-op" ? "never" : "auto";
const model = AutoModelForCausalLM.fromPretrainedSync(opts.dir, { device: opts.device, dtype: opts.dtype });
const modelType = modelTypeOf(model), gpt2 = modelType === "gpt2";
model.gradientCheckpointing = opts.gradientCheckpointing;
const peft = getPeftModel(
  model,
  new LoraConfig({ taskType: "CAUSAL_LM", r: 16, loraAlpha: 32, loraDropout: opts.loraDropout, targetModules: gpt2 ? ["c_attn", "c_proj"] : "all-linear", fanInFanOut: gpt2, bias: "none" }),
);
peft.train(); // GPT-2's dropout (embd/attn/resid 0.1) and the LoRA dropout are active, as in torch_train.py
const params = peft.trainableParameters();
const opt = new AdamW(params, { lr: 1e-4 }); // weightDecay 0.01, torch's default
const rows = JSON.parse(readFileSync(join(opts.dir, "ids.json"), "utf8")) as number[][]; // [batch, seq]
const ids = rows.flat();
const inputIds = tensor(Int32Array.from(ids), { shape: [rows.length, rows[0]!.length], device: opts.device });

function step(): number {
  const loss = tidy(() => {
    // The Trainer's call: the loss without the [B, T, V] logits (the head and the loss fused).
    const out = profilePhase("forward", () => peft.forwardLoss({ inputIds, labels: inputIds }));
    const l = out.item();
    profilePhase("backward (engine)", () => out.backward());
    return l;
  });
  profilePhase("optimizer", () => {
    opt.step();
    opt.zeroGrad();
  });
  return loss;
}

const times: number[] = [], losses: number[] = [];
for (let s = 0; s < opts.warmup + opts.steps; s++) {
  const t0 = performance.now();
  losses.push(step());
  const t1 = performance.now();
  if (s >= opts.warmup) times.push(t1 - t0);
}
const ms = median(times);
const tokens = ids.length;
const build = info();
console.log(
  "RESULT " +
    JSON.stringify({
      impl: "lowrank",
      model_type: modelType,
      tokens,
      ms_per_step: ms,
      tokens_per_s: tokens / (ms / 1e3),
      step_ms: times,
      loss_first: losses[0],
      loss_last: losses[losses.length - 1],
      threads: build.threads,
      simd: build.simd,
      lora_dropout: opts.loraDropout,
      trainable: params.reduce((n, p) => n + p.size, 0),
      device: opts.device,
      dtype: opts.dtype,
      gradient_checkpointing: opts.gradientCheckpointing,
      lora_path: opts.loraPath,
      peak_mb: memory()[opts.device]!.peakBytes / 2 ** 20,
      profiled: PROFILING,
    }),
);

if (PROFILING && opts.profileSteps > 0) {
  profileReset();
  const t0 = performance.now();
  for (let s = 0; s < opts.profileSteps; s++) step();
  const wall = (performance.now() - t0) / opts.profileSteps;
  console.log(`\nprofile of ${opts.profileSteps} steps (${wall.toFixed(1)} ms/step wall, profiler on):`);
  console.log(profileReport(opts.profileSteps));
  // Per step: every JS-to-native call (the profiler wraps each addon function), and of those the
  // storage allocations (constructor calls, keyed "new Storage (alloc)").
  const entries = profileEntries();
  const perStep = (n: number) => Math.round(n / opts.profileSteps);
  console.log(
    "CALLS " +
      JSON.stringify({
        native_calls_per_step: perStep(entries.reduce((n, e) => n + e.calls, 0)),
        allocations_per_step: perStep(entries.filter((e) => e.key.endsWith("(alloc)")).reduce((n, e) => n + e.calls, 0)),
      }),
  );
}
