#!/usr/bin/env bash
# Builds the CUDA addon and runs the GPU tests on a GPU host (see README, "Running the GPU tests").
# Run from the project root after `source .devkit/setup.sh`. Logs go to $OUT (or ./gpu-logs).
set -uo pipefail
out=${OUT:-gpu-logs}
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv | tee "$out/nvidia-smi.txt"
echo "== build (LOWRANK_CUDA=1)"
LOWRANK_CUDA=1 npx cmake-js compile --out build > "$out/build.log" 2>&1 || { tail -50 "$out/build.log"; exit 1; }
grep -E "lowrank:" "$out/build.log"
# This host is meant to have a GPU: a CUDA build that is missing, fails to load or sees no device
# makes the loader (lib/native.ts) and test/helpers.ts throw instead of skipping the GPU tests.
export LOWRANK_EXPECT_CUDA=1
echo "== lowrank info"
if [ -f dist/cli/main.js ]; then node dist/cli/main.js info | tee "$out/info.txt"; fi
if [ "${GPT2_124M:-1}" = 1 ] && python3 -c "import transformers" 2>/dev/null; then
  echo "== GPT-2 124M reference (transformers, random init)"
  python3 test/gpu/make_gpt2_124m.py /tmp/gpt2-124m > "$out/make-124m.log" 2>&1 && export LOWRANK_GPT2_124M=/tmp/gpt2-124m
fi
echo "== GPU tests"
npx vitest run test/gpu 2>&1 | tee "$out/test-gpu.log" | grep -E "✓|×|FAIL|Error|Tests|124M|GPU:" | tail -60
status=${PIPESTATUS[0]}
echo "== exit $status"
exit "$status"
