#!/usr/bin/env bash
# Data parallel on N GPUs of one host (issue 16), on a machine with N >= 2 GPUs, from the project
# root after `source .devkit/setup.sh`:
#   bash test/gpu/multi-gpu-run.sh [N=2]
# NCCL: the system's (libnccl-dev), or NCCL_HOME pointing at a folder with include/nccl.h and
# lib/libnccl.so* (the nvidia-nccl-cu12/cu13 pip wheel's nvidia/nccl folder; found automatically
# when Python has that wheel). Logs go to $OUT (default gpu-logs/multi-gpu). Prints:
#   1. the build's NCCL line and `lowrank info`;
#   2. 1 GPU vs N GPUs, same seed and global batch (demo model, float32 weights, dropout 0): the
#      largest relative loss difference over the curve and the largest adapter difference;
#   3. rank N-1 killed with SIGKILL mid-run: the launcher's message and exit code, then --resume
#      with N: its curve against the uninterrupted N-GPU run;
#   4. the all-reduce of one step alone (GPT-2 124M r=16 bucket, 1.6M floats): ms per call, bus GB/s;
#   5. scaling on GPT-2 124M LoRA (r=16, c_attn+c_proj, bf16 weights, packed 1024-token rows, 8 rows
#      per GPU): tokens/s at 1, 2 (and 4 when N >= 4) GPUs and the ratios to 1 GPU (target >= 1.9 at 2).
set -uo pipefail
cd "$(dirname "$0")/../.."
n=${1:-2}
out=${OUT:-gpu-logs/multi-gpu}
rm -rf "$out"; mkdir -p "$out"
nvidia-smi -L | tee "$out/gpus.txt"
[ "$(nvidia-smi -L | wc -l)" -ge "$n" ] || { echo "fewer than $n GPUs"; exit 1; }
if [ -z "${NCCL_HOME:-}" ]; then
  NCCL_HOME=$(python3 -c 'import nvidia.nccl as m; print(list(m.__path__)[0])' 2>/dev/null) && export NCCL_HOME && echo "NCCL_HOME=$NCCL_HOME (pip wheel)"
fi
echo "== build (LOWRANK_CUDA=1 LOWRANK_NCCL=1)"
LOWRANK_CUDA=1 LOWRANK_NCCL=1 npx cmake-js compile --out build > "$out/build.log" 2>&1 || { tail -40 "$out/build.log"; exit 1; }
grep -E "lowrank:" "$out/build.log"
npx tsc -p tsconfig.json || exit 1
cli="node dist/cli/main.js"
$cli info
node -e "import('./dist/index.js').then(l => console.log('NCCL:', JSON.stringify(l.ncclAvailable())))"

echo "== 1 GPU vs $n GPUs: same seed and global batch (batch 16, 40 steps, float32, dropout 0)"
train="$cli train --model data/demo/model --data data/demo/train.jsonl --steps 40 --batch-size 16 --lr 2e-3 --dropout 0 --dtype float32 --eval-split 0 --checkpoint-every 10 --keep-checkpoints 0 --seed 1 --quiet"
$train --out "$out/one" > "$out/one.log" 2>&1 || { cat "$out/one.log"; exit 1; }
$train --out "$out/many" --gpus "$n" > "$out/many.log" 2>&1 || { cat "$out/many.log"; exit 1; }
compare() { # compare RUN_A RUN_B: largest relative loss difference, largest adapter difference
  node --input-type=module -e "
    import { readFileSync } from 'node:fs';
    import * as l from './dist/index.js';
    const [a, b] = process.argv.slice(1);
    const loss = (d) => readFileSync(d + '/metrics.jsonl', 'utf8').trim().split('\n').map((s) => JSON.parse(s).loss);
    const la = loss(a), lb = loss(b);
    const rel = Math.max(...la.map((x, i) => Math.abs(lb[i] - x) / Math.abs(x)));
    const w = (d) => { const f = l.readSafetensors(d + '/adapter_model.safetensors'); return Object.fromEntries(f.names.map((k) => [k, l.toTensor(f.get(k)).dataSync()])); };
    const wa = w(a), wb = w(b);
    let abs = 0, scale = 0;
    for (const k of Object.keys(wa)) for (let i = 0; i < wa[k].length; i++) { abs = Math.max(abs, Math.abs(wa[k][i] - wb[k][i])); scale = Math.max(scale, Math.abs(wa[k][i])); }
    console.log('steps', la.length, 'vs', lb.length, '| loss first', la[0].toFixed(5), 'last', la.at(-1).toFixed(5), '| max relative loss difference', rel.toExponential(2), '| max adapter difference', abs.toExponential(2), 'of max |w|', scale.toExponential(2));
    console.log(la.length === lb.length && rel < 1e-3 && abs < 1e-3 * scale ? 'PASS (float32 summation tolerance)' : 'FAIL');
  " "$1" "$2"
}
compare "$out/one" "$out/many"

echo "== kill rank $((n - 1)) mid-run (SIGKILL after the step-20 checkpoint), then --resume on $n GPUs"
$train --out "$out/killed" --gpus "$n" > "$out/killed.log" 2>&1 &
launcher=$!
for _ in $(seq 600); do [ -d "$out/killed/checkpoints/step-20" ] && break; sleep 0.2; done
nvidia-smi --query-compute-apps=pid,used_memory,gpu_bus_id --format=csv | tee "$out/apps-during-run.txt" # one process per GPU?
victim=$(pgrep -P "$launcher" | sort -n | tail -1)
kill -9 "$victim"
wait "$launcher"; code=$?
echo "launcher exit code $code (expected 1); its last lines:"; tail -5 "$out/killed.log"
ls "$out/killed/checkpoints"
$train --out "$out/killed" --gpus "$n" --resume > "$out/resumed.log" 2>&1 || { cat "$out/resumed.log"; exit 1; }
compare "$out/many" "$out/killed"

echo "== all-reduce of one step alone (1,622,016 floats: GPT-2 124M LoRA r=16 c_attn+c_proj)"
node --input-type=module -e "import { build } from 'vite'; await build({ configFile: false, logLevel: 'silent', build: { ssr: 'bench/multi-gpu/allreduce.ts', outDir: 'dist-multi-gpu', emptyOutDir: true, target: 'node20' } });"
for g in 2 4 8; do [ "$g" -le "$n" ] && node dist-multi-gpu/allreduce.js "$g" | sed -n 's/^RESULT //p'; done

echo "== scaling: GPT-2 124M LoRA, 8 packed rows of 1024 tokens per GPU, 30 steps (median tokens/s of steps 6-30)"
if python3 -c "import transformers" 2>/dev/null; then
  m=/tmp/gpt2-124m
  [ -f "$m/model.safetensors" ] || python3 test/gpu/make_gpt2_124m.py "$m" > "$out/make-124m.log" 2>&1
  cp data/demo/model/vocab.json data/demo/model/merges.txt "$m/" # a small tokenizer: ids < 50257, fine for timing
  for _ in $(seq 40); do cat data/demo/train.jsonl; done > "$out/big.jsonl"
  base=""
  for g in 1 2 4; do
    [ "$g" -le "$n" ] || continue
    $cli train --model "$m" --data "$out/big.jsonl" --out "$out/scale-$g" --steps 30 --batch-size $((8 * g)) --packing --max-length 1024 \
      --eval-split 0 --checkpoint-every 0 --r 16 --alpha 32 --target c_attn,c_proj --quiet $([ "$g" -gt 1 ] && echo --gpus $g) > "$out/scale-$g.log" 2>&1 || { tail "$out/scale-$g.log"; continue; }
    tps=$(node -e "const r=require('fs').readFileSync('$out/scale-$g/metrics.jsonl','utf8').trim().split('\n').map(JSON.parse).slice(5).map(r=>r.tokensPerSec).sort((a,b)=>a-b); console.log(Math.round(r[r.length>>1]))")
    [ -n "$base" ] || base=$tps
    echo "$g GPU(s): $tps tokens/s, $(node -e "console.log(($tps / $base).toFixed(2))")x of 1 GPU"
  done
else
  echo "skipped: no Python transformers to make the GPT-2 124M model (test/gpu/make_gpt2_124m.py)"
fi
