// A CPU stand-in for NCCL, for tests only: ranks in separate processes exchange each all-reduce's
// bucket through files in a shared folder and sum them in rank order (the same order on every
// rank, so every rank gets the same bits). The product path on several GPUs is NcclComm.
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tensor } from "../../lib/tensor/creation.js";
import { copyInto, type Tensor } from "../../lib/tensor/tensor.js";
import { Comm } from "../../lib/train/distributed.js";

const pause = new Int32Array(new SharedArrayBuffer(4));

export class FileComm extends Comm {
  private calls = 0;

  constructor(private readonly dir: string, rank: number, worldSize: number, private readonly timeoutMs = 60_000) {
    super(rank, worldSize, "cpu");
    mkdirSync(dir, { recursive: true });
  }

  protected reduceBucket(bucket: Tensor): void {
    const k = this.calls++;
    const file = (r: number) => join(this.dir, `${k}.${r}.f32`);
    const mine = bucket.dataSync() as Float32Array;
    writeFileSync(`${file(this.rank)}.tmp`, mine);
    renameSync(`${file(this.rank)}.tmp`, file(this.rank)); // complete when visible
    const deadline = Date.now() + this.timeoutMs;
    const sum = new Float32Array(mine.length);
    for (let r = 0; r < this.worldSize; r++) {
      while (!existsSync(file(r))) {
        if (Date.now() > deadline) throw new Error(`FileComm: rank ${this.rank}: rank ${r} did not reach all-reduce ${k} within ${this.timeoutMs} ms`);
        Atomics.wait(pause, 0, 0, 2); // sleep 2 ms
      }
      const theirs = new Float32Array(new Uint8Array(readFileSync(file(r))).buffer);
      for (let i = 0; i < sum.length; i++) sum[i] = sum[i]! + theirs[i]!;
    }
    copyInto(bucket, tensor(sum));
  }

  dispose(): void {}
}
