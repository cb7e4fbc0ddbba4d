#!/usr/bin/env bash
# Runs CUDA kernels on the CPU (no GPU needed), under AddressSanitizer, against their references:
#   run-emu.sh addon   the addon's kernels that have a <op>_check.cc here: the LoRA kernels
#                      (native/cuda/lora.cu: forward, backward, merge) against float64, the strided copies and casts
#                      (creation.cu), binary element-wise ops (elementwise.cu), the cross-entropy rows
#                      (crossentropy.cu), dropout and the bf16
#                      attention kernels' dropout bits (attention.cuh) against plain loops (seconds;
#                      .ci/run runs it)
#   run-emu.sh check   dev/cuda/lora.cu's correctness sweep, once with the naive frozen GEMM and
#                      once with the reference cublasGemmEx of emu_cublas.h (a few minutes on 2 cores)
#   run-emu.sh bench   dev/cuda/lora.cu's timing code at full size: only to smoke-test changes to it
# With no argument: addon, then check.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
mode=${1:-all}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cxx=(g++ -std=c++20 -O1 -g -fsanitize=address -fno-strict-aliasing -w -DLOWRANK_CUDA=1 -I"$here" -I"$work")
rc=0
if [ "$mode" = addon ] || [ "$mode" = all ]; then
  for op in lora creation elementwise dropout crossentropy; do  # <op>_check.cc tests native/cuda/<op>.cu
    node "$here/transform.mjs" "$here/../../../native/cuda/$op.cu" "$work/${op}_emu.cc"
    "${cxx[@]}" "$here/${op}_check.cc" -o "$work/${op}_check"
    echo "== emulated native/cuda/$op.cu"
    "$work/${op}_check" | grep -v '^PASS ' || rc=1
  done
  "${cxx[@]}" "$here/attention_check.cc" -o "$work/attention_check"  # a header's device functions: no rewrite
  echo "== native/cuda/attention.cuh (dropout keep bits)"
  "$work/attention_check" | grep -v '^PASS ' || rc=1
fi
if [ "$mode" != addon ]; then
  [ "$mode" = all ] && mode=check
  node "$here/transform.mjs" "$here/../lora.cu" "$work/dev_lora_emu.cc"
  for flags in "" "-DWITH_CUBLAS"; do
    "${cxx[@]}" $flags "$work/dev_lora_emu.cc" -o "$work/dev_lora_emu"
    echo "== emulated dev/cuda/lora.cu, built ${flags:-without cuBLAS}"
    "$work/dev_lora_emu" "$mode" | grep -v '^PASS' || rc=1
  done
fi
exit $rc
