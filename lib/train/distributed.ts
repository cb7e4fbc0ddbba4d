// Data-parallel training: the process group of one run, one process per GPU (issue 16). Each rank
// runs its share of every global batch (DataLoader's shard option) and, after the backward pass,
// the trainable gradients are summed over the ranks, so the optimizer step is the same on every
// rank. The Trainer weights each rank's loss by its share of the *global* batch's counted tokens,
// so a plain sum of the ranks' gradients is the gradient of the global batch (no 1/N scale: with
// token weighting, 1/N is only right when every rank counts the same number of tokens).
//
// Comm packs everything into one flat float32 bucket per step (gradients, then a few host
// scalars such as the loss), reduces it, and copies it back: LoRA's trainable tensors are small
// (GPT-2 124M r=16: 1.6M floats), so one collective per step costs less than overlapping many.
// The reduction itself is the subclass's: NcclComm (NCCL, the product path on several GPUs) or,
// for one process, none at all (SingleProcessComm), so the whole code path runs on the CPU.
import { native } from "../native/index.js";
import { parseDevice, type Device, type DeviceLike } from "../tensor/device.js";
import { tensor } from "../tensor/creation.js";
import { tidy } from "../tensor/scope.js";
import { copyInto, emptyLike, formatShape, noGrad, type Tensor } from "../tensor/tensor.js";

/** The environment the launcher (lib/cli/launch.ts) hands each rank. */
export const RANK_ENV = "LOWRANK_RANK";
export const WORLD_SIZE_ENV = "LOWRANK_WORLD_SIZE";
export const NCCL_ID_ENV = "LOWRANK_NCCL_ID";
/** Seconds a collective may wait for the other ranks before it aborts (default 600). */
export const NCCL_TIMEOUT_ENV = "LOWRANK_NCCL_TIMEOUT";

export abstract class Comm {
  /** The device this rank's tensors (and the bucket) live on. */
  readonly device: Device;

  constructor(readonly rank: number, readonly worldSize: number, device: DeviceLike) {
    this.device = parseDevice(device);
    if (!(Number.isInteger(worldSize) && worldSize >= 1)) throw new Error(`Comm: world size must be an integer >= 1, got ${worldSize}`);
    if (!(Number.isInteger(rank) && rank >= 0 && rank < worldSize)) throw new Error(`Comm: rank must be an integer in [0, ${worldSize}), got ${rank}`);
  }

  /**
   * Sums every tensor (float32, one device) over the ranks, in place, and returns the sums of
   * `scalars` (reduced in float32 with them). A world of one returns at once, everything unchanged.
   */
  allReduceSum(tensors: readonly Tensor[], scalars: readonly number[] = []): number[] {
    if (this.worldSize === 1) return [...scalars];
    const device = this.device;
    for (const t of tensors) {
      if (t.dtype !== "float32") throw new Error(`Comm.allReduceSum: tensor ${formatShape(t.shape)} is ${t.dtype}; gradients are reduced in float32`);
      if (t.device !== device.name) throw new Error(`Comm.allReduceSum: rank ${this.rank}'s communicator is on ${device.name} but a tensor is on ${t.device}; train rank r on cuda:r`);
    }
    const total = tensors.reduce((n, t) => n + t.size, 0);
    // tidy frees the bucket and its slices; noGrad keeps the copies off the tape.
    return tidy(() => noGrad(() => {
      const bucket = emptyLike([total + scalars.length], "float32", device);
      let at = 0;
      for (const t of tensors) {
        copyInto(bucket.slice(0, at, at + t.size).view([...t.shape]), t);
        at += t.size;
      }
      if (scalars.length > 0) copyInto(bucket.slice(0, total), tensor(Float32Array.from(scalars), { device }));
      this.reduceBucket(bucket);
      at = 0;
      for (const t of tensors) {
        copyInto(t, bucket.slice(0, at, at + t.size).view([...t.shape]));
        at += t.size;
      }
      return scalars.length > 0 ? Array.from(bucket.slice(0, total).dataSync()) : [];
    }));
  }

  /** Sums `bucket` (contiguous float32 [n]) over the ranks, in place. */
  protected abstract reduceBucket(bucket: Tensor): void;
  /**
   * Leaves the group. abort: after an error, at once (the peers may be gone or waiting in a
   * collective this rank will never join); else in step with the peers.
   */
  abstract dispose(abort?: boolean): void;
}

/** A world of one process: every reduction is the identity. */
export class SingleProcessComm extends Comm {
  constructor() {
    super(0, 1, "cpu");
  }
  protected reduceBucket(): void {}
  dispose(): void {}
}

/** Whether this build can train on several GPUs, and if not, why. */
export function ncclAvailable(): { ok: true; version: string } | { ok: false; why: string } {
  const i = native().commInfo();
  if (i.built) return { ok: true, version: i.version! };
  return {
    ok: false,
    why: "this build of lowrank has no NCCL, which training on several GPUs needs; rebuild on a machine with CUDA and NCCL " +
      "(nccl.h and libnccl.so, e.g. the libnccl-dev package, or the nvidia-nccl-cu13 pip wheel with NCCL_HOME set to its nvidia/nccl folder): LOWRANK_NCCL=1 npm run build:native",
  };
}

/** A fresh NCCL unique id as hex, for the launcher to hand every rank (NCCL_ID_ENV). */
export function ncclUniqueId(): string {
  return Buffer.from(native().commUniqueId()).toString("hex");
}

/** One rank of an NCCL communicator on one GPU. */
export class NcclComm extends Comm {
  private handle: number | null;

  /** Joins the communicator named by `idHex` (ncclUniqueId) as `rank` of `worldSize` on cuda:`device`. */
  constructor(opts: { rank: number; worldSize: number; idHex: string; device: number; timeoutSeconds?: number }) {
    super(opts.rank, opts.worldSize, `cuda:${opts.device}`);
    if (!/^[0-9a-f]{256}$/i.test(opts.idHex)) throw new Error(`NcclComm: the NCCL id must be 256 hex digits (128 bytes), got ${opts.idHex.length} characters`);
    const timeoutSeconds = opts.timeoutSeconds ?? 600;
    this.handle = native().commInit({
      id: new Uint8Array(Buffer.from(opts.idHex, "hex")), world: opts.worldSize, rank: opts.rank, device: opts.device, timeoutSeconds,
    });
  }

  protected reduceBucket(bucket: Tensor): void {
    if (this.handle === null) throw new Error("NcclComm: used after dispose()");
    native().commAllReduceSum({ comm: this.handle, buf: bucket.nativeView, count: bucket.size });
  }

  dispose(abort = false): void {
    if (this.handle === null) return;
    const h = this.handle;
    this.handle = null;
    native().commDestroy({ comm: h, abort });
  }
}

/** This process's place in a run, from the launcher's environment: null when not launched as a rank. */
export function rankFromEnv(env: NodeJS.ProcessEnv = process.env): { rank: number; worldSize: number; ncclId: string | null } | null {
  const r = env[RANK_ENV], w = env[WORLD_SIZE_ENV];
  if (r === undefined && w === undefined) return null;
  const rank = Number(r), worldSize = Number(w);
  if (!(Number.isInteger(worldSize) && worldSize >= 1 && Number.isInteger(rank) && rank >= 0 && rank < worldSize)) {
    throw new Error(`${RANK_ENV}=${r} and ${WORLD_SIZE_ENV}=${w} do not name a rank: the launcher (lowrank train --gpus N) sets both`);
  }
  return { rank, worldSize, ncclId: env[NCCL_ID_ENV] ?? null };
}

/** The product communicator of a launched rank: NCCL on cuda:<rank> (one process per GPU). */
export function commFromEnv(env: NodeJS.ProcessEnv = process.env): Comm {
  const me = rankFromEnv(env);
  if (me === null || me.worldSize === 1) return new SingleProcessComm();
  if (me.ncclId === null) throw new Error(`rank ${me.rank}: ${NCCL_ID_ENV} is not set; start ranks with lowrank train --gpus N`);
  const timeout = env[NCCL_TIMEOUT_ENV] === undefined ? undefined : Number(env[NCCL_TIMEOUT_ENV]);
  if (timeout !== undefined && !(timeout > 0)) throw new Error(`${NCCL_TIMEOUT_ENV}=${env[NCCL_TIMEOUT_ENV]}: give the seconds a collective may wait, a number > 0 (default 600)`);
  const nccl = ncclAvailable();
  if (!nccl.ok) throw new Error(`rank ${me.rank}: ${nccl.why}`);
  return new NcclComm({ rank: me.rank, worldSize: me.worldSize, idHex: me.ncclId, device: me.rank, timeoutSeconds: timeout });
}
