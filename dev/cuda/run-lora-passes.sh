#!/usr/bin/env bash
# One device call for the LoRA kernels: their passes timed against copies of their bytes
# (dev/cuda/lora_passes.cu), the tree's native/cuda/lora.cu beside a baseline copy when one is
# given, then the merge versions (dev/cuda/merge.cu), the addon's CUDA build and the GPU twins.
# Every table goes to a file under $OUT (a call's printed output is cut to its last lines); a
# summary is printed. On the GPU machine, from the project root, carrying .devkit and the baseline:
#   git show main:native/cuda/lora.cu > native/cuda-baseline/lora.cu     (here; .gitignore'd)
#   bash dev/cuda/run-lora-passes.sh          carry [".devkit", "native/cuda-baseline"]
#   TESTS="test/gpu/twins.test.ts ..."        the GPU test files to run (default the twins)
set -uo pipefail
source .devkit/setup.sh
out=${OUT:-/tmp/out}
mkdir -p "$out"
t0=$(date +%s)
say() { echo "[$(($(date +%s) - t0)) s] $*"; }
nv="nvcc -O3 -std=c++17 -arch=sm_90 --expt-relaxed-constexpr"
base=native/cuda-baseline/lora.cu
(LOWRANK_CUDA=1 LOWRANK_NCCL=0 npx cmake-js compile --out build > "$out/build.log" 2>&1; echo $? > /tmp/build.rc) &
$nv dev/cuda/lora_passes.cu -o /tmp/lora_passes &
[ -f "$base" ] && $nv -Inative/cuda -DLORA_SOURCE="\"../../$base\"" dev/cuda/lora_passes.cu -o /tmp/lora_passes_base &
$nv dev/cuda/merge.cu -o /tmp/merge &
wait
say compiled
[ -f "$base" ] && { /tmp/lora_passes_base > "$out/passes-baseline.txt" 2>&1; say "baseline passes rc $?"; }
/tmp/lora_passes > "$out/passes.txt" 2>&1; say "passes rc $?"
/tmp/merge > "$out/merge.txt" 2>&1; say "merge versions rc $?"
[ "$(cat /tmp/build.rc)" = 0 ] || { tail -30 "$out/build.log"; exit 1; }
export LOWRANK_EXPECT_CUDA=1 LOWRANK_BUILD_DIR=$(realpath build)
timeout 150 npx vitest run ${TESTS:-test/gpu/twins.test.ts} > "$out/tests.log" 2>&1; say "GPU tests rc $?"
grep -E "Tests |Test Files|FAIL|×" "$out/tests.log" | head -20
