#!/usr/bin/env bash
# One call of the device tool, in priority order, each phase time-capped, results written to $OUT
# as they come (so a call cut at its limit still brings back what ran): the CUDA build (without
# NCCL if the NCCL build fails), the GPU tests of the newest work, the training bench against
# PyTorch + PEFT bf16 (bench/train-gpu), `lowrank bench` (the LoRA linear against the bare frozen
# linear, float32 and bf16 weights) and its PyTorch + PEFT peer (bench/peer_lora.py), the LoRA op
# alone against copies of its bytes, then the rest of test/gpu. Run from the project root on the
# GPU machine, carrying .devkit and dist-train-cpu (npx tsc -p bench/train-cpu/tsconfig.json):
#   bash test/gpu/full-run.sh     (UNTIL=0: skip the rest of test/gpu; default: run it until 480 s;
#                                  BENCH_DTYPES=bfloat16: `lowrank bench` in bf16 only; PROBE=0: no LoRA op probe)
set -uo pipefail
source .devkit/setup.sh
final=${OUT:-/tmp/out}
logs=/tmp/session-logs
mkdir -p "$logs" "$final"
t0=$(date +%s)
say() { echo "[$(( $(date +%s) - t0 )) s] $*" | tee -a "$final/summary.txt"; tar czf "$final/logs.tgz" -C "$logs" . 2>/dev/null; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >> "$final/summary.txt"
if ! LOWRANK_CUDA=1 npx cmake-js compile --out build > "$logs/build.log" 2>&1; then
  tail -30 "$logs/build.log" >> "$final/summary.txt"; say "build failed; again without NCCL"
  rm -rf build; LOWRANK_CUDA=1 LOWRANK_NCCL=0 npx cmake-js compile --out build > "$logs/build2.log" 2>&1 || { tail -40 "$logs/build2.log" >> "$final/summary.txt"; exit 1; }
fi
grep -E "lowrank:" "$logs/build.log" "$logs/build2.log" 2>/dev/null >> "$final/summary.txt"
say "built"
export LOWRANK_EXPECT_CUDA=1 LOWRANK_BUILD_DIR=$(realpath build)
new="test/gpu/profile.test.ts test/gpu/attention-bf16.test.ts test/gpu/twins.test.ts test/gpu/linear-crossentropy.test.ts test/gpu/bf16-weights.test.ts test/gpu/fine-tune.test.ts"
timeout 150 npx vitest run $new > "$logs/test-new.log" 2>&1; say "new GPU tests rc $?"
grep -E "×|Tests |Test Files|attention fwd" "$logs/test-new.log" | head -40 >> "$final/summary.txt"
PROFILE=bfloat16 PEERS="bf16" ROUNDS=1 LORA_OP=1 timeout 200 bash bench/train-gpu/run.sh 10 3 > "$final/train-gpu.txt" 2>&1; say "train-gpu rc $?"
for dt in ${BENCH_DTYPES:-float32 bfloat16}; do
  timeout 90 node dist-train-cpu/lib/cli/main.js bench --device cuda --dtype $dt --json > "$final/lora-bench-$dt.json" 2> "$logs/lora-bench-$dt.log"
  say "lowrank bench $dt rc $?"
done
timeout 90 python3 bench/peer_lora.py > "$final/peer_lora.txt" 2>&1; say "PyTorch + PEFT LoRA peer rc $?"
[ "${PROBE:-1}" = 0 ] || { timeout 90 node bench/train-gpu/lora_kernels.mjs >> "$final/summary.txt" 2>&1; say "LoRA kernels probe rc $?"; }
python3 test/gpu/make_gpt2_124m.py /tmp/gpt2-124m > /dev/null 2>&1 && export LOWRANK_GPT2_124M=/tmp/gpt2-124m
rest=$(ls test/gpu/*.test.ts | grep -v -F -f <(echo "$new" | tr ' ' '\n'))
left=$(( ${UNTIL:-480} - ($(date +%s) - t0) ))
[ $left -gt 30 ] && { timeout $left npx vitest run $rest > "$logs/test-rest.log" 2>&1; say "rest of GPU tests rc $?"; grep -E "×|Tests |Test Files" "$logs/test-rest.log" | head -30 >> "$final/summary.txt"; }
tar czf "$final/logs.tgz" -C "$logs" .
