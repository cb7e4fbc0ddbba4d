#!/usr/bin/env bash
# One call of the device tool, in priority order, each phase time-capped, results written to $OUT
# as they come (so a call cut at its limit still brings back what ran): the CUDA build (without
# NCCL if the NCCL build fails), the GPU tests of the newest work, the training bench against
# PyTorch + PEFT bf16 (bench/train-gpu), probes (cuBLAS's lm_head GEMM at the odd vocabulary vs a
# padded one; LoRA's thin GEMMs in float32 vs bf16), an nsys kernel summary of a bf16 step, then
# the rest of test/gpu. Run from the project root on the GPU machine, carrying .devkit and
# dist-train-cpu (npx tsc -p bench/train-cpu/tsconfig.json):  bash test/gpu/full-run.sh
set -uo pipefail
source .devkit/setup.sh
final=${OUT:-/tmp/out}
logs=/tmp/session-logs
mkdir -p "$logs" "$final"
t0=$(date +%s)
say() { echo "[$(( $(date +%s) - t0 )) s] $*" | tee -a "$final/summary.txt"; tar czf "$final/logs.tgz" -C "$logs" . 2>/dev/null; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >> "$final/summary.txt"
if ! LOWRANK_CUDA=1 npx cmake-js compile --out build > "$logs/build.log" 2>&1; then
  tail -30 "$logs/build.log" >> "$final/summary.txt"; say "build failed; again without NCCL"
  rm -rf build; LOWRANK_CUDA=1 LOWRANK_NCCL=0 npx cmake-js compile --out build > "$logs/build2.log" 2>&1 || { tail -40 "$logs/build2.log" >> "$final/summary.txt"; exit 1; }
fi
grep -E "lowrank:" "$logs/build.log" "$logs/build2.log" 2>/dev/null >> "$final/summary.txt"
say "built"
export LOWRANK_EXPECT_CUDA=1
new="test/gpu/attention-bf16.test.ts test/gpu/linear-crossentropy.test.ts test/gpu/tensor.test.ts test/gpu/bf16-weights.test.ts test/gpu/fine-tune.test.ts"
timeout 150 npx vitest run $new > "$logs/test-new.log" 2>&1; say "new GPU tests rc $?"
grep -E "×|Tests |Test Files|attention fwd" "$logs/test-new.log" | head -40 >> "$final/summary.txt"
PROFILE=bfloat16 PEERS="bf16" ROUNDS=1 timeout 170 bash bench/train-gpu/run.sh 10 3 > "$final/train-gpu.txt" 2>&1; say "train-gpu rc $?"
timeout 60 python3 - >> "$final/summary.txt" 2>&1 <<'PY'
import torch
def ms(f, n=20):
    for _ in range(3): f()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True); t = []
    for _ in range(n):
        s.record(); f(); e.record(); torch.cuda.synchronize(); t.append(s.elapsed_time(e))
    return sorted(t)[n // 2]
N, C = 8192, 768
for V in (50257, 50264):
    x = torch.randn(N, C, device="cuda", dtype=torch.bfloat16); w = torch.randn(V, C, device="cuda", dtype=torch.bfloat16)
    g = torch.randn(N, V, device="cuda", dtype=torch.bfloat16)
    t = ms(lambda: torch.mm(x, w.t())); tb = ms(lambda: torch.mm(g, w)); f = 2 * N * V * C / 1e9
    print(f"lm_head V={V}: fwd (bf16 out) {t:.3f} ms ({f/t:.0f} TFLOP/s), dX {tb:.3f} ms ({f/tb:.0f})")
r, k, d = 16, 768, 2304
for dt in (torch.float32, torch.bfloat16):
    x = torch.randn(N, k, device="cuda", dtype=dt); A = torch.randn(r, k, device="cuda", dtype=dt)
    B = torch.randn(d, r, device="cuda", dtype=dt); u = torch.randn(N, r, device="cuda", dtype=dt); g = torch.randn(N, d, device="cuda", dtype=dt)
    rows = {"u=x.At": lambda: x @ A.t(), "y=u.Bt": lambda: u @ B.t(), "v=g.B": lambda: g @ B, "gA=vt.x": lambda: u.t() @ x, "gB=gt.u": lambda: g.t() @ u, "gx=v.A": lambda: u @ A}
    print(f"LoRA thin GEMMs {dt}: " + ", ".join(f"{n} {ms(fn)*1e3:.0f} us" for n, fn in rows.items()))
PY
say "probes done"
if command -v nsys >/dev/null; then
  dir=/tmp/lowrank-train-gpu/gpt2-b8-t1024
  timeout 90 nsys profile -o /tmp/step --force-overwrite true -t cuda node dist-train-cpu/bench/train-cpu/bench.js $dir --device cuda:0 --dtype bfloat16 --warmup 2 --steps 3 > /dev/null 2>&1
  timeout 40 nsys stats -r cuda_gpu_kern_sum,cuda_api_sum -f csv -o /tmp/stats /tmp/step.nsys-rep > /dev/null 2>&1
  head -40 /tmp/stats_cuda_gpu_kern_sum.csv > "$final/nsys-kernels.csv" 2>/dev/null; head -25 /tmp/stats_cuda_api_sum.csv > "$final/nsys-api.csv" 2>/dev/null
  say "nsys done"
else say "no nsys"; fi
python3 test/gpu/make_gpt2_124m.py /tmp/gpt2-124m > /dev/null 2>&1 && export LOWRANK_GPT2_124M=/tmp/gpt2-124m
rest=$(ls test/gpu/*.test.ts | grep -v -F -f <(echo "$new" | tr ' ' '\n'))
left=$(( 575 - ($(date +%s) - t0) ))
[ $left -gt 30 ] && { timeout $left npx vitest run $rest > "$logs/test-rest.log" 2>&1; say "rest of GPU tests rc $?"; grep -E "×|Tests |Test Files" "$logs/test-rest.log" | head -30 >> "$final/summary.txt"; }
tar czf "$final/logs.tgz" -C "$logs" .
