#!/usr/bin/env bash
# Builds and runs dev/cuda/attention.cu on a GPU machine: correctness of every version against the
# float64 CPU reference (PASS/FAIL lines), then timings at B=8 H=12 T=1024 D=64 causal bf16 with the
# cuBLAS bf16 GEMM ceiling; then the PyTorch SDPA peer at the same shape when torch is importable.
#   dev/cuda/run-attention.sh            # from the repository root; logs in $OUT (or /tmp/attn-run)
#   NO_CUBLAS=1 dev/cuda/run-attention.sh   # where cuBLAS is not installed
#   SANITIZE=1 dev/cuda/run-attention.sh    # first compute-sanitizer memcheck + racecheck on the tests
set -euo pipefail
cd "$(dirname "$0")/../.."
dest="${OUT:-/tmp/attn-run}"  # logs; the binary stays in /tmp so $OUT carries only text
mkdir -p "$dest" /tmp/attn-build
flags=(-O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Xptxas -v)
libs=()
if [[ -z "${NO_CUBLAS:-}" ]]; then flags+=(-DWITH_CUBLAS); libs+=(-lcublas); fi
nvcc "${flags[@]}" dev/cuda/attention.cu -o /tmp/attn-build/attn "${libs[@]}" 2> "$dest/attn-ptxas.log" \
  || { grep -v "^ptxas info" "$dest/attn-ptxas.log"; exit 1; }
grep -A3 "Compiling entry.*flash_\(forward\|backward\)_kernel" "$dest/attn-ptxas.log" \
  | grep -o "Compiling entry function '[^']*'\|Used [0-9]* registers\|[0-9]* bytes spill stores" | paste - - - || true
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv || true
status=0
if [[ -n "${SANITIZE:-}" ]]; then  # memcheck and shared-memory racecheck over the tests (no timings)
  compute-sanitizer --tool memcheck --error-exitcode 3 /tmp/attn-build/attn tests > "$dest/memcheck.log" 2>&1 \
    && echo "memcheck: clean" || { status=3; tail -30 "$dest/memcheck.log"; }
  compute-sanitizer --tool racecheck --error-exitcode 3 /tmp/attn-build/attn tests > "$dest/racecheck.log" 2>&1 \
    && echo "racecheck: clean" || { status=3; tail -30 "$dest/racecheck.log"; }
fi
/tmp/attn-build/attn | tee "$dest/attn.log" || status=$?
if python3 -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
  python3 bench/peer_attention.py | tee "$dest/peer_attention.log"
else
  echo "(torch with CUDA not available: skipped bench/peer_attention.py)"
fi
exit $status
