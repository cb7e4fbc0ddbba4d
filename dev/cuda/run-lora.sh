#!/usr/bin/env bash
# Builds dev/cuda/lora.cu against cuBLAS, runs its correctness sweep and timings, then the
# PyTorch + PEFT peer (bench/peer_lora.py) on the same GPU, so one device run prints both tables.
#
# Usage, on the GPU machine from anywhere in the repository: dev/cuda/run-lora.sh [check|bench|all]
# PEFT is not in the GPU image: carry its wheel in .whl/ (see /work/.library/device/README.md);
# this script installs .whl/*.whl into /tmp/site when peft is not importable.
# Output also goes to $OUT/lora.log when OUT is set.
set -uo pipefail
cd "$(dirname "$0")/../.."
mode=${1:-all}
log=${OUT:-/tmp}/lora.log

{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader || true
  nvcc --version | tail -n 2
  nvcc -O3 -std=c++17 -arch=sm_90a -DWITH_CUBLAS dev/cuda/lora.cu -lcublas -lcublasLt -o /tmp/lora || exit 2
  rc=0
  /tmp/lora "$mode" || rc=$?
  if [ "$mode" != check ]; then
    if ! python3 -c 'import peft' 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
      python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl &&
        export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    fi
    python3 bench/peer_lora.py || rc=$?
  fi
  exit $rc
} 2>&1 | tee "$log"
exit "${PIPESTATUS[0]}"
