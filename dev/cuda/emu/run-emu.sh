#!/usr/bin/env bash
# Runs dev/cuda/lora.cu's correctness sweep on the CPU (no GPU needed), under AddressSanitizer:
# once with the naive frozen GEMM and once with the reference cublasGemmEx of emu_cublas.h.
# Takes a few minutes on 2 cores. Usage: dev/cuda/emu/run-emu.sh [check|bench]
# (bench runs the timing code at full size: use it only to smoke-test changes to that code.)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
mode=${1:-check}
python3 "$here/transform.py" "$here/../lora.cu" "$here/lora_emu.cc"
rc=0
for flags in "" "-DWITH_CUBLAS"; do
  g++ -std=c++20 -O1 -g -fsanitize=address -fno-strict-aliasing -w $flags -I"$here" "$here/lora_emu.cc" -o "$here/lora_emu"
  echo "== emulated build ${flags:-without cuBLAS}"
  "$here/lora_emu" "$mode" | grep -v '^PASS' || rc=1
done
rm -f "$here/lora_emu.cc" "$here/lora_emu"
exit $rc
