#!/usr/bin/env bash
# CPU attention, two builds side by side: bench.mjs run alternately with each addon, ROUNDS times,
# then per case the median over rounds of each build's medians, and the fastest round's (the
# closest to an idle machine on a shared VM), with the ratio new / base.
#
# Usage: bench/attention-cpu/run.sh BASE_BUILD_DIR NEW_BUILD_DIR [rounds=6] [reps=60]
#   (after `npm run build`; build each addon with `npx cmake-js compile --out DIR` in its tree)
#   THREADS=2 (LOWRANK_NUM_THREADS), SHAPES / CASES as in bench.mjs
set -euo pipefail
cd "$(dirname "$0")/../.."
base=$1 new=$2 rounds=${3:-6} reps=${4:-60}
echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; load before: $(cut -d' ' -f1-3 /proc/loadavg); threads ${THREADS:-2}"
out=$(mktemp)
for r in $(seq "$rounds"); do
  for b in "$base" "$new"; do
    echo "$b $(LOWRANK_DEVICE=cpu LOWRANK_NUM_THREADS=${THREADS:-2} LOWRANK_BUILD_DIR=$b node bench/attention-cpu/bench.mjs "$reps")" >> "$out"
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
node - "$out" "$base" "$new" <<'JS'
const [file, base, nw] = process.argv.slice(2);
const runs = { [base]: [], [nw]: [] };
for (const line of require("fs").readFileSync(file, "utf8").trim().split("\n")) {
  const i = line.indexOf(" ");
  runs[line.slice(0, i)].push(JSON.parse(line.slice(i + 1)));
}
const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
const stat = (b, name, k) => { const xs = runs[b].map((r) => r[name][k]); return [median(xs), Math.min(...xs)]; };
console.log("ms per call: median over rounds (fastest round)   base -> new   ratio of medians");
for (const name of Object.keys(runs[base][0])) {
  const cols = ["forward", "backward"].map((what, k) => {
    const [bm, bmin] = stat(base, name, k), [nm, nmin] = stat(nw, name, k);
    return `${what} ${bm.toFixed(3)} (${bmin.toFixed(3)}) -> ${nm.toFixed(3)} (${nmin.toFixed(3)}) ${(nm / bm).toFixed(2)}x`;
  });
  console.log(`${name.padEnd(20)} ${cols.join("   ")}`);
}
JS
rm -f "$out"
