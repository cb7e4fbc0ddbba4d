#!/usr/bin/env bash
# CPU fp32 GEMM: lowrank's gemm_f32 vs OpenBLAS cblas_sgemm, both on the same threads and inputs.
# OpenBLAS (Debian's libopenblas-dev) is installed for this benchmark only; the library never
# links it. Runs the benchmark twice: with the environment as it is, and with OPENBLAS_CORETYPE
# and OPENBLAS_L2_SIZE unset (they force OpenBLAS's kernel choice and blocking on some hosts).
#
# Usage: bench/gemm/run.sh [threads=2] [samples=5]
set -euo pipefail
cd "$(dirname "$0")/../.."
threads=${1:-2}
samples=${2:-5}

if [ ! -f /usr/include/x86_64-linux-gnu/cblas.h ] && [ ! -f /usr/include/cblas.h ]; then
  echo "installing libopenblas-dev (benchmark only)" >&2
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq libopenblas-dev >/dev/null
fi

out=build-bench
mkdir -p "$out"
# -O3 only: the kernels pick their instruction set at run time (target attributes), as in the addon.
g++ -O3 -std=c++17 -pthread -o "$out/gemm_bench" bench/gemm/gemm_bench.cc \
  native/cpu/matmul*.cc native/cpu/gemv.cc native/cpu/elementwise.cc \
  native/cpu/parallel.cc native/cpu/simd.cc native/cpu/memory.cc -lopenblas

echo "date: $(date)"
echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "OpenBLAS packages: $(dpkg-query -W -f='${Package}=${Version} ' 'libopenblas*' 2>/dev/null | tr ' ' '\n' | grep -v '=$' | tr '\n' ' ')"

echo
echo "## environment as is (OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE-<unset>} OPENBLAS_L2_SIZE=${OPENBLAS_L2_SIZE-<unset>})"
OPENBLAS_NUM_THREADS=$threads "$out/gemm_bench" "$threads" "$samples"

echo
echo "## OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset"
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS=$threads "$out/gemm_bench" "$threads" "$samples"
