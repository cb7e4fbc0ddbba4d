// Seeded random streams. A Generator is (seed, offset): each draw of n numbers reads Philox
// blocks offset..offset+n-1 (native/core/philox.h) and advances the offset by n, so the same seed
// gives the same numbers on the CPU and on CUDA, and the state saves and restores exactly.

export interface GeneratorState {
  seed: string;
  offset: string;
}

export class Generator {
  private _seed: bigint;
  private _offset = 0n;

  constructor(seed: number | bigint = 0) {
    this._seed = Generator.toSeed(seed);
  }

  private static toSeed(seed: number | bigint): bigint {
    const s = BigInt(seed);
    if (s < 0n || s >= 1n << 64n) throw new Error(`Generator: seed must be an integer in [0, 2^64), got ${seed}`);
    return s;
  }

  get seed(): bigint {
    return this._seed;
  }
  get offset(): bigint {
    return this._offset;
  }

  /** Restarts the stream at `seed`. */
  manualSeed(seed: number | bigint): this {
    this._seed = Generator.toSeed(seed);
    this._offset = 0n;
    return this;
  }

  /** Reserves n counters; returns the (seed, offset) pair the kernel uses. */
  next(n: number): { seed: bigint; offset: bigint } {
    if (replaying) return replaying.take(this, n);
    const at = { seed: this._seed, offset: this._offset };
    this._offset += BigInt(n);
    recording?.push({ generator: this, n, ...at });
    return at;
  }

  getState(): GeneratorState {
    return { seed: this._seed.toString(), offset: this._offset.toString() };
  }

  setState(state: GeneratorState): this {
    this._seed = BigInt(state.seed);
    this._offset = BigInt(state.offset);
    return this;
  }
}

/** One reservation of counters: which generator, how many, and the (seed, offset) it returned. */
export interface Draw {
  generator: Generator;
  n: number;
  seed: bigint;
  offset: bigint;
}

let recording: Draw[] | null = null;
let replaying: { take(generator: Generator, n: number): { seed: bigint; offset: bigint } } | null = null;

/** Runs fn and lists the counters every generator reserved during it, in order. */
export function recordDraws<T>(fn: () => T): { result: T; draws: Draw[] } {
  const outer = recording;
  const draws: Draw[] = [];
  recording = draws;
  try {
    return { result: fn(), draws };
  } finally {
    recording = outer;
  }
}

/**
 * Runs fn with every generator handing out the recorded draws again, in order, without moving its
 * state: a recomputation (gradient checkpointing) sees the dropout masks of the first pass. A draw
 * from another generator or of another size, or one left unused, is an error: the recomputed
 * code did not do what the first pass did.
 */
export function replayDraws<T>(draws: readonly Draw[], fn: () => T): T {
  if (replaying) throw new Error("replayDraws: already replaying (nested recomputation is not supported)");
  let next = 0;
  const mismatch = (what: string) =>
    new Error(`replayDraws: the recomputation ${what}; it must run the same random ops in the same order`);
  replaying = {
    take(generator, n) {
      const d = draws[next++];
      if (!d || d.generator !== generator || d.n !== n) throw mismatch("drew other random numbers than the first pass");
      return { seed: d.seed, offset: d.offset };
    },
  };
  try {
    const result = fn();
    if (next !== draws.length) throw mismatch(`drew ${next} times, the first pass ${draws.length}`);
    return result;
  } finally {
    replaying = null;
  }
}

/** The generator used when none is passed. */
export const defaultGenerator = new Generator(0);

/** Seeds the default generator. */
export function manualSeed(seed: number | bigint): void {
  defaultGenerator.manualSeed(seed);
}
