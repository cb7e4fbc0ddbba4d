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
#   DTYPES="float32 bfloat16"  lowrank's model dtypes, each run in every round (default float32;
#                          bfloat16 keeps the weight matrices in bf16: half the bytes per token,
#                          so its bound is about twice float32's); transformers runs float32
#   PROFILE=1              afterwards, lowrank's per-token profile (LOWRANK_PROFILE=1)
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}
calls=${2:-3}
threads=${THREADS:-2}
dtypes=${DTYPES:-float32}
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
  for dtype in $dtypes; do
    LOWRANK_DEVICE=cpu LOWRANK_BUILD_DIR="$build" LOWRANK_NUM_THREADS=$threads node dist-generate/bench/generate/bench.js "$dir" --rounds "$calls" --dtype "$dtype" 2>/dev/null \
      | sed -n 's/^RESULT //p' >> "$out"
  done
}
for r in $(seq 1 "$rounds"); do
  if [ $((r % 2)) = 1 ]; then run_torch; run_ours; else run_ours; run_torch; fi
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"

"$py" - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
key = lambda r: r["side"] if r["side"] == "transformers" else f"lowrank {r['dtype']}"
keys = sorted({key(r) for r in rows}, key=lambda k: (k == "transformers", k != "lowrank float32", k))
of = lambda k: [r for r in rows if key(r) == k]
med = lambda k, field: statistics.median(r[field] for r in of(k))
gbps = med("transformers", "read_gbps")
theirs = med("transformers", "tokens_per_s")
for k in keys:
    rs = of(k)
    print(f"{k:>16}: {med(k, 'tokens_per_s'):6.1f} tokens/s (rounds: {', '.join('%.1f' % r['tokens_per_s'] for r in rs)}); "
          + (f"read bandwidth (torch.sum, {rs[0]['threads']} threads) {gbps:.1f} GB/s" if k == "transformers"
             else f"copy bandwidth (Float32Array.set, 1 thread, read + write) {med(k, 'copy_gbps'):.1f} GB/s"))
for k in keys:
    if k != "transformers":
        print(f"ratio {k} / transformers float32: {med(k, 'tokens_per_s') / theirs:.2f}x")
# The fastest single call of each: the closest to an idle machine when another process takes a
# core now and then (torch's OpenMP threads suffer most from that).
best = {k: max(x for r in of(k) for x in r["samples"]) for k in keys}
print("fastest call: " + ", ".join(f"{k} {best[k]:.1f}" for k in keys) + " tokens/s")
# The bound: every new token reads each weight once, at the read probe's bandwidth.
for k in keys:
    wb = of(k)[0]["weight_bytes"]
    bound = gbps * 1e9 / wb
    print(f"bound {k}: {wb / 1e6:.0f} MB of weights per token / {gbps:.1f} GB/s = {bound:.1f} tokens/s "
          f"({k} at {100 * med(k, 'tokens_per_s') / bound:.0f}% of it)")
firsts = {k: {json.dumps(r["first_tokens"]) for r in of(k)} for k in keys}
f32 = [k for k in keys if k != "lowrank bfloat16"]
same = set().union(*(firsts[k] for k in f32))
print("first 16 tokens, float32: " + ("the same on both sides" if len(same) == 1 else f"DIFFER: {sorted(same)}"))
if "lowrank bfloat16" in firsts:
    bf = firsts["lowrank bfloat16"]
    print("first 16 tokens, bfloat16: " + (f"{len(bf)} distinct over its runs; " if len(bf) > 1 else "")
          + ("the same as float32's" if bf == same else f"{sorted(bf)} (float32: {sorted(same)})"))
PY

if [ "${PROFILE:-0}" = 1 ]; then
  LOWRANK_PROFILE=1 LOWRANK_DEVICE=cpu LOWRANK_BUILD_DIR="$build" LOWRANK_NUM_THREADS=$threads \
    node dist-generate/bench/generate/bench.js "$dir" --rounds 1 --warmup 0 --dtype "${dtypes##* }" 2>/dev/null | sed -n '/^RESULT/!p'
fi
