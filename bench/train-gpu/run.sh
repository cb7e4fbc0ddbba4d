#!/usr/bin/env bash
# GPU LoRA training step: lowrank vs PyTorch + PEFT (float32 eager, bf16 autocast eager, bf16 +
# torch.compile), side by side in one run on the same GPU, model, batch and LoRA (see README.md).
#
# Usage, on the GPU machine from the project root with the CUDA addon built in build/:
#   bench/train-gpu/run.sh [steps=10] [warmup=3]
#   BATCH=8 SEQ=1024   the batch (default 8 x 1024 tokens, GPT-2 124M)
#   PYTHON=python3     the Python with torch, transformers, peft
#   PEERS="fp32 bf16 bf16-compile"   which PyTorch + PEFT runs (torch.compile takes ~1 min to compile)
#   ROUNDS=2           lowrank runs per dtype (before and after the peers)
#   LOWRANK_BUILD_DIR  the addon's cmake-js output folder (default build)
#   PROFILE="float32 bfloat16"   the dtypes whose step is profiled call by call ("" for none)
#   LORA_OP=1          also run bf16 weights with the LoRA layers' two-GEMM path (the frozen GEMM,
#                      then the fused LoRA op) beside the one-GEMM path (bench.js's --lora-path auto)
# Prints the ceilings measured in this run (bf16 cuBLAS GEMM, copy bandwidth), one line per run
# (tokens/s, ms/step, peak memory, losses), the ratios, and lowrank's step by native call.
set -uo pipefail
cd "$(dirname "$0")/../.."
steps=${1:-10}
warmup=${2:-3}
py=${PYTHON:-python3}
batch=${BATCH:-8}
seq=${SEQ:-1024}
export LOWRANK_BUILD_DIR=$(realpath "${LOWRANK_BUILD_DIR:-build}")
dir=${TMPDIR:-/tmp}/lowrank-train-gpu/gpt2-b${batch}-t${seq}
out=$(mktemp)
[ -f "$LOWRANK_BUILD_DIR/Release/lowrank.node" ] || { echo "no addon in $LOWRANK_BUILD_DIR (LOWRANK_CUDA=1 npx cmake-js compile --out build)" >&2; exit 1; }
[ -f dist-train-cpu/bench/train-cpu/bench.js ] || npx tsc -p bench/train-cpu/tsconfig.json
[ -f "$dir/ids.json" ] || "$py" bench/train-cpu/torch_train.py make "$dir" --seq "$seq" --batch "$batch" | grep -v "Writing model shards"

echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
echo "node $(node --version); $("$py" -c 'import torch, transformers, peft; print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}")')"
"$py" - <<'PY'
import torch
def ms(f, n=20):
    for _ in range(3): f()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(n):
        s.record(); f(); e.record(); torch.cuda.synchronize(); times.append(s.elapsed_time(e))
    return sorted(times)[n // 2]
a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
t = ms(lambda: a @ b)
x = torch.empty(256 * 2**20 // 4, device="cuda"); y = torch.empty_like(x)
c = ms(lambda: y.copy_(x))
print(f"ceilings: bf16 GEMM 8192^3 {2 * 8192**3 / t / 1e9:.0f} TFLOP/s; copy {2 * x.numel() * 4 / c / 1e6:.0f} GB/s (256 MB, read + write)")
PY
echo "batch $batch x $seq tokens; GPT-2 124M, LoRA r=16 alpha 32 dropout 0.05 on c_attn + c_proj, AdamW; $steps timed steps after $warmup warm-up, median"

run_ours() { node dist-train-cpu/bench/train-cpu/bench.js "$dir" --device cuda:0 --dtype "$@" --warmup "$warmup" --steps "$steps" 2>&1 | sed -n 's/^RESULT //p' >> "$out"; }
run_peer() { "$py" bench/train-cpu/torch_train.py bench "$dir" --device cuda --precision "$1" --warmup $((warmup + 2)) --steps "$steps" 2>/dev/null | sed -n 's/^RESULT //p' >> "$out"; }
run_ours float32; run_ours bfloat16
[ -z "${LORA_OP:-}" ] || run_ours bfloat16 --lora-path lora-op
for p in ${PEERS:-fp32 bf16 bf16-compile}; do run_peer "$p"; done
[ "${ROUNDS:-2}" -lt 2 ] || { run_ours float32; run_ours bfloat16; }

"$py" - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def name(r):
    if r["impl"] != "lowrank": return f"PyTorch + PEFT {r['precision']}"
    return f"lowrank {r['dtype']} weights" + (" (GEMM + LoRA op)" if r.get("lora_path") == "lora-op" else "")
print(f"\n{'':46}{'tokens/s':>10}{'ms/step':>9}{'peak MB':>9}   loss first -> last")
for r in rows:
    print(f"{name(r):46}{r['tokens_per_s']:10.0f}{r['ms_per_step']:9.1f}{(r.get('peak_mb') or 0):9.0f}   {r['loss_first']:.4f} -> {r['loss_last']:.4f}")
for mine_name in dict.fromkeys(name(r) for r in rows if r["impl"] == "lowrank"):
    ours = statistics.median([r["tokens_per_s"] for r in rows if name(r) == mine_name])
    for r in rows:
        if r["impl"] != "lowrank":
            print(f"ratio {mine_name} / {name(r)}: {ours / r['tokens_per_s']:.2f}x")
PY
rm -f "$out"

echo
echo "## lowrank's step by native call (LOWRANK_PROFILE=cuda: each call's GPU time from CUDA events, no blocking)"
for dtype in ${PROFILE-float32 bfloat16}; do
  echo "### $dtype weights"
  LOWRANK_PROFILE=cuda node dist-train-cpu/bench/train-cpu/bench.js "$dir" --device cuda:0 --dtype $dtype --warmup 2 --steps 1 --profile-steps 3 | sed -n '/^profile of/,$p'
done
