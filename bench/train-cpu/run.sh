#!/usr/bin/env bash
# CPU LoRA training step: lowrank vs PyTorch + PEFT, side by side in one run, on GPT-2 124M's
# shapes (random init, batch 1 x 256 tokens, LoRA r=16 alpha 32 dropout 0.05 on c_attn + c_proj,
# AdamW lr 1e-4, training mode, 2 threads each). See README.md.
#
# Usage: bench/train-cpu/run.sh [rounds=2] [steps=10] [warmup=3]
#   PYTHON=...             the Python with torch, transformers, peft (default /opt/pyref/bin/python)
#   LOWRANK_BUILD_DIR=...  the addon's cmake-js output folder (default build)
#   ARCH=smollm2-135m      SmolLM2-135M's shapes (Llama family, LoRA on all linear layers) instead of GPT-2
#   THREADS=2              threads for both sides
#   DROPOUT0=1             also run one round with LoRA dropout 0 on both sides
#   PRECISIONS="fp32 bf16" precisions to run each round (default fp32): bf16 is lowrank --dtype bfloat16
#                          (frozen weights in bf16) and PyTorch --precision bf16 (autocast)
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-2}
steps=${2:-10}
warmup=${3:-3}
threads=${THREADS:-2}
precisions=${PRECISIONS:-fp32}
py=${PYTHON:-/opt/pyref/bin/python}
build=$(realpath "${LOWRANK_BUILD_DIR:-build}")
arch=${ARCH:-gpt2}
dir=tmp/train-cpu/$arch
out=tmp/train-cpu/results.jsonl

[ -f "$build/Release/lowrank.node" ] || { echo "no addon in $build (npx cmake-js compile --out $(basename "$build"))" >&2; exit 1; }
mkdir -p "$(dirname "$dir")"
if [ ! -f "$dir/model.safetensors" ] || [ ! -f "$dir/ids.json" ]; then
  "$py" bench/train-cpu/torch_train.py make "$dir" --arch "$arch" 2>&1 | grep -v "Writing model shards" || true
fi
# The TypeScript bench runs from a compiled copy of lib/ + bench/ (dist-train-cpu/, ignored by git).
npx tsc -p bench/train-cpu/tsconfig.json

echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "node $(node --version); $("$py" -c 'import torch, transformers, peft, sys; print(f"python {sys.version.split()[0]}, torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}")')"
echo "torch BLAS: $("$py" -c 'import torch; c = torch.__config__.show(); print("; ".join(l.strip(" -") for l in c.splitlines() if "Math Kernel" in l or "MKL-DNN" in l or "CPU capability" in l or "OpenMP" in l))')"
echo "OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE-<unset>} OPENBLAS_L2_SIZE=${OPENBLAS_L2_SIZE-<unset>} (OpenBLAS only; torch uses MKL)"
echo "threads: $threads each; $steps timed steps after $warmup warm-up, median; $rounds rounds, alternating which side goes first"

: > "$out"
# run_torch / run_ours LORA_DROPOUT PRECISION (fp32 | bf16)
run_torch() {
  OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads "$py" bench/train-cpu/torch_train.py bench "$dir" \
    --threads "$threads" --warmup "$warmup" --steps "$steps" --lora-dropout "$1" --precision "$2" 2>/dev/null | sed -n 's/^RESULT //p' >> "$out"
}
run_ours() {
  LOWRANK_DEVICE=cpu LOWRANK_BUILD_DIR="$build" LOWRANK_NUM_THREADS=$threads node dist-train-cpu/bench/train-cpu/bench.js "$dir" \
    --warmup "$warmup" --steps "$steps" --lora-dropout "$1" --dtype "$([ "$2" = bf16 ] && echo bfloat16 || echo float32)" 2>/dev/null | sed -n 's/^RESULT //p' >> "$out"
}
for r in $(seq 1 "$rounds"); do
  for p in $precisions; do
    if [ $((r % 2)) = 1 ]; then run_torch 0.05 "$p"; run_ours 0.05 "$p"; else run_ours 0.05 "$p"; run_torch 0.05 "$p"; fi
  done
done
if [ "${DROPOUT0:-0}" = 1 ]; then for p in $precisions; do run_torch 0 "$p"; run_ours 0 "$p"; done; fi
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
for r in rows:  # PyTorch reports its precision, lowrank its dtype
    r.setdefault("precision", "bf16" if r.get("dtype") == "bfloat16" else "fp32")
def table(drop, prec):
    rs = [r for r in rows if r["lora_dropout"] == drop and r["precision"] == prec]
    if not rs: return
    print(f"\nLoRA dropout {drop}, {prec}{' (PyTorch: autocast; lowrank: bf16 frozen weights)' if prec == 'bf16' else ''}:")
    print(f"{'':14}{'ms/step':>10}{'tokens/s':>10}   per round ms/step (median of the timed steps)   loss first -> last")
    med = {}
    for impl in ("pytorch+peft", "lowrank"):
        mine = [r for r in rs if r["impl"] == impl]
        if not mine: continue
        ms = statistics.median(r["ms_per_step"] for r in mine)
        med[impl] = ms
        per = ", ".join(f"{r['ms_per_step']:.0f}" for r in mine)
        print(f"{impl:14}{ms:10.0f}{256e3 / ms * mine[0]['tokens'] / 256:10.1f}   [{per}]   {mine[0]['loss_first']:.3f} -> {mine[0]['loss_last']:.3f}")
    if len(med) == 2:
        pt = [r["ms_per_step"] for r in rs if r["impl"] == "pytorch+peft"]
        ours = [r["ms_per_step"] for r in rs if r["impl"] == "lowrank"]
        per = [a / b for a, b in zip(pt, ours)]  # round by round: the two runs were back to back
        print(f"ratio ours/PyTorch (tokens/s): {med['pytorch+peft'] / med['lowrank']:.2f}x"
              f"   (per round: {', '.join(f'{x:.2f}' for x in per)})")
for prec in ("fp32", "bf16"):
    table(0.05, prec)
    table(0, prec)
PY

echo
echo "## where lowrank's step goes (LOWRANK_PROFILE=1: native calls timed; wall includes the profiler)"
LOWRANK_PROFILE=1 LOWRANK_DEVICE=cpu LOWRANK_BUILD_DIR="$build" LOWRANK_NUM_THREADS=$threads node dist-train-cpu/bench/train-cpu/bench.js "$dir" \
  --warmup 2 --steps 1 --profile-steps 3 2>/dev/null | sed '/^RESULT /d'
