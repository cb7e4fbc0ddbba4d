// The all-reduce of one data-parallel step, alone: N ranks (launchRanks over this script) sum a
// float32 bucket the size of GPT-2 124M's LoRA gradients (r = 16 on c_attn and c_proj: 1,622,016
// floats) with Comm.allReduceSum, copies in and out included, as the Trainer calls it. Rank 0
// prints the median time per call and the bus bandwidth (nccl-tests' busbw: 2(N-1)/N · bytes / time).
//   node dist-multi-gpu/allreduce.js N [floats=1622016] [calls=50]
import { commFromEnv, launchRanks, ncclUniqueId, rankFromEnv, synchronize, zeros } from "../../lib/index.js";
import { NCCL_ID_ENV } from "../../lib/train/distributed.js";

const [world = "2", floats = "1622016", calls = "50"] = process.argv.slice(2);
const me = rankFromEnv();
if (me === null) {
  const r = await launchRanks({ worldSize: Number(world), entry: process.argv[1]!, args: process.argv.slice(2), env: { [NCCL_ID_ENV]: ncclUniqueId() } });
  process.exit(r.code);
}
const comm = commFromEnv();
const device = `cuda:${me.rank}`;
const n = Number(floats);
// a few tensors, as the gradients are: the bucket copies are part of the cost
const grads = Array.from({ length: 8 }, (_, i) => zeros([Math.floor(n / 8) + (i === 0 ? n % 8 : 0)], { device }));
const times: number[] = [];
for (let k = 0; k < 5 + Number(calls); k++) {
  synchronize(device);
  const t0 = performance.now();
  comm.allReduceSum(grads, [1]);
  if (k >= 5) times.push(performance.now() - t0);
}
times.sort((a, b) => a - b);
const ms = times[times.length >> 1]!;
const N = comm.worldSize;
if (me.rank === 0) {
  console.log(`RESULT ${JSON.stringify({ world: N, floats: n, msPerCall: ms, busGBs: (2 * (N - 1) / N) * n * 4 / (ms / 1000) / 1e9 })}`);
}
for (const g of grads) g.dispose();
comm.dispose();
