#!/usr/bin/env bash
# The CPU LoRA op's forward and backward at GPT-2's shapes (lora_bench.cc), built from this tree's
# native/cpu sources and, given another tree (a checkout of main, say), from that tree's too: the two
# then run in interleaved rounds and the table gives, per row, the least of the rounds' 5th
# percentiles for each and their ratio. Plain -O3: the kernels pick their instruction set at run time.
#
# Usage: bench/lora-cpu/run.sh [other tree] [threads=1] [rounds=5]
set -euo pipefail
cd "$(dirname "$0")/../.."
other=${1:-}; threads=${2:-1}; rounds=${3:-5}
build() {  # build <tree> <binary>
  g++ -O3 -std=c++17 -pthread -o "$2" bench/lora-cpu/lora_bench.cc "$1"/native/cpu/{lora,dropout,matmul,matmul_avx2,matmul_avx512,gemv,elementwise,parallel,simd,memory}.cc
}
mkdir -p build-bench
build . build-bench/lora_bench
echo "date: $(date -u); load: $(cut -d' ' -f1-3 /proc/loadavg); threads: $threads"
if [ -z "$other" ]; then exec build-bench/lora_bench "$threads"; fi
build "$other" build-bench/lora_bench_other
for i in $(seq "$rounds"); do
  build-bench/lora_bench_other "$threads" | sed 's/^/A /'
  build-bench/lora_bench "$threads" | sed 's/^/B /'
done | awk '
  { key = $2 " " $3; for (f = 4; f <= NF; f += 3) { k = key " " $f; v = $(f + 1) + 0
      if (!(($1 " " k) in best) || v < best[$1 " " k]) best[$1 " " k] = v; if (!(k in seen)) { seen[k] = 1; order[n++] = k } } }
  END { printf "%-26s %9s %9s %6s\n", "shape, p, pass", "other us", "this us", "ratio"
        for (i = 0; i < n; i++) { k = order[i]; printf "%-26s %9.1f %9.1f %6.2f\n", k, best["A " k], best["B " k], best["B " k] / best["A " k] } }'
echo "load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
