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
    const at = { seed: this._seed, offset: this._offset };
    this._offset += BigInt(n);
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

/** The generator used when none is passed. */
export const defaultGenerator = new Generator(0);

/** Seeds the default generator. */
export function manualSeed(seed: number | bigint): void {
  defaultGenerator.manualSeed(seed);
}
