#!/usr/bin/env bash
# Greedy decoding on the CPU: lowrank's generate() vs transformers' generate(do_sample=False), side
# by side in one run, on the same random-init GPT-2 124M folder, the same 32-token prompt, 128 new
# tokens (EOS ignored on both sides), float32, KV cache on, the same threads. Each side also
# measures memory bandwidth (transformers' side: torch.sum over 1 GiB on the same threads, a read
# probe; lowrank's side: Float32Array.set over 512 MiB, a one-thread copy): every new token reads all
# ~498 MB of weights once, so bandwidth / weight bytes is the tokens/s a decoder cannot pass.
#
# Usage: bench/generate/run.sh [rounds=3] [generate calls per round=3]
#   PYTHON=...             the Python with torch and transformers (default python3)
#   LOWRANK_BUILD_DIR=...  the addon's cmake-js output folder (default build)
#   THREADS=2              threads for both sides
#   PROFILE=1              afterwards, lowrank's per-token profile (LOWRANK_PROFILE=1)
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}
calls=${2:-3}
threads=${THREADS:-2}
py=${PYTHON:-python3}
build=$(realpath "${LOWRANK_BUILD_DIR:-build}")
dir=tmp/generate/gpt2
out=tmp/generate/results.jsonl

[ -f "$build/Release/lowrank.node" ] || { echo "no addon in $build (npx cmake-js compile --out $(basename "$build"))" >&2; exit 1; }
mkdir -p "$(dirname "$dir")"
if [ ! -f "$dir/model.safetensors" ] || [ ! -f "$dir/ids.json" ]; then
  "$py" bench/train-cpu/torch_train.py make "$dir" --seq 32 2>&1 | grep -v "Writing model shards" || true
fi
npx tsc -p bench/generate/tsconfig.json

echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "node $(node --version); $("$py" -c 'import torch, transformers, sys; print(f"python {sys.version.split()[0]}, torch {torch.__version__}, transformers {transformers.__version__}")')"
echo "threads: $threads each; per round each side runs 1 warm-up + $calls timed generate() calls (median); $rounds rounds, alternating which side goes first"

: > "$out"
run_torch() {
  OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads "$py" bench/generate/torch_generate.py "$dir" --threads "$threads" --rounds "$calls" 2>/dev/null \
    | sed -n 's/^RESULT //p' >> "$out"
}
run_ours() {
  LOWRANK_DEVICE=cpu LOWRANK_BUILD_DIR="$build" LOWRANK_NUM_THREADS=$threads node dist-generate/bench/generate/bench.js "$dir" --rounds "$calls" 2>/dev/null \
    | sed -n 's/^RESULT //p' >> "$out"
}
for r in $(seq 1 "$rounds"); do
  if [ $((r % 2)) = 1 ]; then run_torch; run_ours; else run_ours; run_torch; fi
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"

"$py" - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
med = lambda side, key: statistics.median(r[key] for r in rows if r["side"] == side)
ours, theirs = med("lowrank", "tokens_per_s"), med("transformers", "tokens_per_s")
for side in ("lowrank", "transformers"):
    rs = [r for r in rows if r["side"] == side]
    print(f"{side:>12}: {med(side, 'tokens_per_s'):6.1f} tokens/s (rounds: {', '.join('%.1f' % r['tokens_per_s'] for r in rs)}); "
          + (f"read bandwidth (torch.sum, {rs[0]['threads']} threads) {med(side, 'read_gbps'):.1f} GB/s" if side == "transformers"
             else f"copy bandwidth (Float32Array.set, 1 thread, read + write) {med(side, 'copy_gbps'):.1f} GB/s"))
wb = rows[0]["weight_bytes"]
gbps = med("transformers", "read_gbps")
print(f"ratio lowrank / transformers: {ours / theirs:.2f}x")
# The fastest single call of each side: the closest to an idle machine when another process
# takes a core now and then (torch's OpenMP threads suffer most from that).
best = {s: max(x for r in rows if r["side"] == s for x in r["samples"]) for s in ("lowrank", "transformers")}
print(f"fastest call: lowrank {best['lowrank']:.1f}, transformers {best['transformers']:.1f} tokens/s "
      f"({best['lowrank'] / best['transformers']:.2f}x)")
print(f"bound: {wb / 1e6:.0f} MB of weights per token / {gbps:.1f} GB/s = {gbps * 1e9 / wb:.1f} tokens/s "
      f"(lowrank at {100 * ours / (gbps * 1e9 / wb):.0f}% of it)")
same = {json.dumps(r["first_tokens"]) for r in rows}
print("first 16 tokens: " + ("the same on both sides" if len(same) == 1 else f"DIFFER: {sorted(same)}"))
PY

if [ "${PROFILE:-0}" = 1 ]; then
  LOWRANK_PROFILE=1 LOWRANK_DEVICE=cpu LOWRANK_BUILD_DIR="$build" LOWRANK_NUM_THREADS=$threads \
    node dist-generate/bench/generate/bench.js "$dir" --rounds 1 --warmup 0 2>/dev/null | sed -n '/^RESULT/!p'
fi
