// Batching tokenized examples: padding (each batch padded to its longest example) or packing
// (examples concatenated into fixed-length blocks), and a resumable, seeded DataLoader that builds
// the batch tensors only when asked, so the caller owns and disposes them step by step.
import { tensor, type DeviceLike, type Tensor } from "../tensor/index.js";
import { IGNORE_INDEX, shuffledIndices, type TokenizedExample, type TokenizerLike } from "./data.js";

/** A batch as host arrays, row-major [batchSize, seqLen]. */
export interface HostBatch {
  inputIds: Int32Array;
  /** 1 on tokens, 0 on padding; null when packing (every position is attended, see packExamples). */
  attentionMask: Int32Array | null;
  /** Unshifted labels; IGNORE_INDEX on masked prompt tokens and on padding. */
  labels: Int32Array;
  batchSize: number;
  seqLen: number;
  /** Real (non-pad) tokens. */
  tokens: number;
  /**
   * Positions the causal-LM loss averages over: labels != IGNORE_INDEX from column 1 on, since the
   * model shifts (logits at t predict labels at t+1) and the first column is never predicted.
   * Use it to weight losses across gradient-accumulation steps.
   */
  lossTokens: number;
  /**
   * On one rank of a data-parallel run (DataLoaderOptions.shard): the tokens and loss tokens of
   * the whole global batch this shard is part of, so each rank weights its loss by its share of the
   * global batch. Absent when the batch is the whole batch.
   */
  global?: { tokens: number; lossTokens: number };
}

/** A batch as int32 tensors [B, T]. The caller disposes it (or uses `using`). */
export interface Batch {
  inputIds: Tensor;
  attentionMask: Tensor | null;
  labels: Tensor;
  tokens: number;
  lossTokens: number;
  /** See HostBatch.global. */
  global?: { tokens: number; lossTokens: number };
  dispose(): void;
  [Symbol.dispose](): void;
}

function countLossTokens(labels: Int32Array, batchSize: number, seqLen: number): number {
  let n = 0;
  for (let b = 0; b < batchSize; b++) {
    for (let t = 1; t < seqLen; t++) if (labels[b * seqLen + t] !== IGNORE_INDEX) n++;
  }
  return n;
}

/**
 * Right-pads examples to the longest one: padId in inputIds, 0 in attentionMask, IGNORE_INDEX in
 * labels. Right padding suits training: with causal attention no real token attends to a pad.
 */
export function padBatch(examples: readonly TokenizedExample[], padId: number): HostBatch {
  if (examples.length === 0) throw new Error("padBatch: no examples");
  const batchSize = examples.length;
  const seqLen = Math.max(...examples.map((e) => e.inputIds.length));
  const inputIds = new Int32Array(batchSize * seqLen).fill(padId);
  const attentionMask = new Int32Array(batchSize * seqLen);
  const labels = new Int32Array(batchSize * seqLen).fill(IGNORE_INDEX);
  let tokens = 0;
  examples.forEach((e, b) => {
    inputIds.set(e.inputIds, b * seqLen);
    labels.set(e.labels, b * seqLen);
    attentionMask.fill(1, b * seqLen, b * seqLen + e.inputIds.length);
    tokens += e.inputIds.length;
  });
  return { inputIds, attentionMask, labels, batchSize, seqLen, tokens, lossTokens: countLossTokens(labels, batchSize, seqLen) };
}

/** Concatenated examples, cut into blocks later. */
export interface PackedStream {
  inputIds: Int32Array;
  labels: Int32Array;
}

/**
 * Concatenates examples in the given order. Each example already ends with EOS, which separates
 * it from the next; an example truncated before its EOS gets one added, labelled IGNORE_INDEX
 * (the cut response did not end there, so the model must not learn to stop there).
 *
 * Packed blocks are attended as a whole (no attention mask), so a token can attend to the end of
 * the previous example in its block: this is the simple packing of transformers' run_clm
 * group_texts and TRL's ConstantLengthDataset. The EOS separator tells the model where one
 * example ends; the labels keep each example's prompt mask.
 */
export function packExamples(examples: readonly TokenizedExample[], eosId: number): PackedStream {
  const inputIds = new Int32Array(packedLength(examples, eosId));
  const labels = new Int32Array(inputIds.length);
  let at = 0;
  for (const e of examples) {
    inputIds.set(e.inputIds, at);
    labels.set(e.labels, at);
    at += e.inputIds.length;
    if (needsEos(e, eosId)) {
      inputIds[at] = eosId;
      labels[at++] = IGNORE_INDEX;
    }
  }
  return { inputIds, labels };
}

function needsEos(e: TokenizedExample, eosId: number): boolean {
  return e.inputIds[e.inputIds.length - 1] !== eosId;
}

/** Tokens in packExamples' stream, separators included; the same for every order. */
export function packedLength(examples: readonly TokenizedExample[], eosId: number): number {
  return examples.reduce((n, e) => n + e.inputIds.length + (needsEos(e, eosId) ? 1 : 0), 0);
}

/**
 * Rows [firstBlock, firstBlock + rows) of blockLength tokens from a packed stream. The stream's
 * last block is right-padded (padId, IGNORE_INDEX): without a mask the pads are attended, but
 * only by later pads, never by a real token (causal attention), so nothing is lost or changed.
 */
export function blockBatch(stream: PackedStream, blockLength: number, firstBlock: number, rows: number, padId: number): HostBatch {
  const size = rows * blockLength;
  const start = firstBlock * blockLength;
  const inputIds = new Int32Array(size).fill(padId);
  const labels = new Int32Array(size).fill(IGNORE_INDEX);
  const end = Math.min(start + size, stream.inputIds.length);
  if (end <= start) throw new Error(`blockBatch: block ${firstBlock} is past the end of the packed stream (${stream.inputIds.length} tokens)`);
  inputIds.set(stream.inputIds.subarray(start, end));
  labels.set(stream.labels.subarray(start, end));
  return { inputIds, attentionMask: null, labels, batchSize: rows, seqLen: blockLength, tokens: end - start, lossTokens: countLossTokens(labels, rows, blockLength) };
}

/** Int32 tensors [B, T] for a host batch, on `device`. */
export function toTensors(host: HostBatch, device?: DeviceLike): Batch {
  const shape = [host.batchSize, host.seqLen];
  const inputIds = tensor(host.inputIds, { shape, device });
  const attentionMask = host.attentionMask && tensor(host.attentionMask, { shape, device });
  const labels = tensor(host.labels, { shape, device });
  const dispose = () => {
    inputIds.dispose();
    attentionMask?.dispose();
    labels.dispose();
  };
  return { inputIds, attentionMask, labels, tokens: host.tokens, lossTokens: host.lossTokens, global: host.global, dispose, [Symbol.dispose]: dispose };
}

/**
 * Rank `rank`'s rows of a global batch in a world of `worldSize`: rows rank, rank + N, rank + 2N, ...
 * (as PyTorch's DistributedSampler interleaves), at the global batch's sequence length, so each
 * row is exactly the row the one-process run trains on. A global batch with fewer rows than ranks
 * (an epoch's last, smaller batch) leaves some ranks an empty shard (no rows, no loss tokens).
 */
export function shardBatch(batch: HostBatch, rank: number, worldSize: number): HostBatch {
  const rows: number[] = [];
  for (let r = rank; r < batch.batchSize; r += worldSize) rows.push(r);
  const T = batch.seqLen;
  const take = (a: Int32Array) => {
    const out = new Int32Array(rows.length * T);
    rows.forEach((r, i) => out.set(a.subarray(r * T, (r + 1) * T), i * T));
    return out;
  };
  const attentionMask = batch.attentionMask && take(batch.attentionMask);
  const labels = take(batch.labels);
  // Real tokens: the mask's ones when padded; when packed, the real tokens are a prefix of the
  // flattened batch (only the stream's last block is padded, at its end).
  const tokens = attentionMask
    ? attentionMask.reduce((n, m) => n + m, 0)
    : rows.reduce((n, r) => n + Math.min(Math.max(batch.tokens - r * T, 0), T), 0);
  return {
    inputIds: take(batch.inputIds), attentionMask, labels, batchSize: rows.length, seqLen: T, tokens,
    lossTokens: countLossTokens(labels, rows.length, T), global: { tokens: batch.tokens, lossTokens: batch.lossTokens },
  };
}

// ---- DataLoader --------------------------------------------------------------------------------

export interface DataLoaderOptions {
  batchSize: number;
  /** Supplies eosTokenId (packing separator) and padTokenId (default: eosTokenId). */
  tokenizer: Pick<TokenizerLike, "eosTokenId" | "padTokenId">;
  /** Pack examples into blocks of this many tokens; omit to pad each batch to its longest example. */
  packBlockLength?: number;
  /** Reshuffle every epoch (default true); eval loaders turn it off. */
  shuffle?: boolean;
  seed?: number;
  /** Drop each epoch's last, smaller batch (default false). */
  dropLast?: boolean;
  /** Where batch tensors are created (default: the default device). */
  device?: DeviceLike;
  /**
   * Data parallel: this loader yields rank `rank`'s rows of each global batch of batchSize rows
   * (see shardBatch), so the global batches, and the run, are the same for every worldSize.
   * batchSize must divide by worldSize. The position and fingerprint are the global batch's, so a
   * checkpoint resumes with any worldSize.
   */
  shard?: { rank: number; worldSize: number };
}

/** Where a loader stands: the next batch is batch `index` of epoch `epoch`. */
export interface LoaderState {
  epoch: number;
  index: number;
  /** Hash of the examples and loader options; restore() refuses a state from other data. */
  fingerprint: string;
}

/** FNV-1a over 32-bit words, as 8 hex digits. */
function fnv1a(words: Iterable<number>, h = 0x811c9dc5): number {
  for (const w of words) {
    for (let k = 0; k < 32; k += 8) h = Math.imul(h ^ ((w >>> k) & 0xff), 0x01000193);
  }
  return h >>> 0;
}

/**
 * Yields batches forever, epoch after epoch. Epoch e visits the examples in a Fisher-Yates order
 * drawn from (seed, stream e) (file order when shuffle is off), so the order is the same on every
 * machine. Padding: consecutive groups of batchSize examples in that order, no sorting by length.
 * Packing: the examples in that order packed into one stream, cut into blocks, batchSize blocks a
 * batch. state()/restore() resume exactly: a restored loader yields the same remaining batches.
 */
export class DataLoader {
  readonly batchesPerEpoch: number;
  private readonly examples: readonly TokenizedExample[];
  private readonly batchSize: number;
  private readonly padId: number;
  private readonly eosId: number;
  private readonly blockLength: number | undefined;
  private readonly blocksPerEpoch: number;
  private readonly shuffle: boolean;
  private readonly seed: number;
  private readonly device: DeviceLike | undefined;
  private readonly shard: { rank: number; worldSize: number } | null;
  private readonly fingerprint: string;
  private epoch = 0;
  private index = 0;
  /** The current epoch's example order (and packed stream), computed once per epoch. */
  private cache: { epoch: number; order: number[]; stream: PackedStream | null } | null = null;

  constructor(examples: readonly TokenizedExample[], opts: DataLoaderOptions) {
    const { batchSize, packBlockLength } = opts;
    if (!(Number.isInteger(batchSize) && batchSize >= 1)) throw new Error(`DataLoader: batchSize must be a positive integer, got ${batchSize}`);
    if (packBlockLength !== undefined && !(Number.isInteger(packBlockLength) && packBlockLength >= 2)) {
      throw new Error(`DataLoader: packBlockLength must be an integer >= 2, got ${packBlockLength}`);
    }
    if (examples.length === 0) throw new Error("DataLoader: no examples");
    this.examples = examples;
    this.batchSize = batchSize;
    this.eosId = opts.tokenizer.eosTokenId;
    this.padId = opts.tokenizer.padTokenId ?? opts.tokenizer.eosTokenId;
    this.blockLength = packBlockLength;
    this.shuffle = opts.shuffle ?? true;
    this.seed = opts.seed ?? 0;
    this.device = opts.device;
    this.shard = opts.shard && opts.shard.worldSize > 1 ? opts.shard : null;
    if (opts.shard) {
      const { rank, worldSize } = opts.shard;
      if (!(Number.isInteger(worldSize) && worldSize >= 1 && Number.isInteger(rank) && rank >= 0 && rank < worldSize)) {
        throw new Error(`DataLoader: shard rank ${rank} of world size ${worldSize} is not a rank (rank in [0, worldSize), worldSize >= 1)`);
      }
      if (batchSize % worldSize !== 0) {
        throw new Error(`DataLoader: batchSize ${batchSize} (the global batch) must divide by the number of processes ${worldSize}, so every GPU gets ${worldSize > batchSize ? "at least one row" : "the same number of rows"}; use a batchSize that is a multiple of ${worldSize}`);
      }
    }
    const units = packBlockLength === undefined ? examples.length : Math.ceil(packedLength(examples, this.eosId) / packBlockLength);
    this.blocksPerEpoch = units;
    this.batchesPerEpoch = opts.dropLast ? Math.floor(units / batchSize) : Math.ceil(units / batchSize);
    if (this.batchesPerEpoch === 0) {
      throw new Error(`DataLoader: ${units} ${packBlockLength === undefined ? "examples" : "packed blocks"} make no full batch of ${batchSize} (dropLast is on)`);
    }
    let h = fnv1a([batchSize, packBlockLength ?? 0, this.padId, this.eosId, this.shuffle ? 1 : 0, this.seed >>> 0, Math.floor(this.seed / 2 ** 32), this.batchesPerEpoch, examples.length]);
    for (const e of examples) h = fnv1a(e.labels, fnv1a(e.inputIds, fnv1a([e.inputIds.length], h)));
    this.fingerprint = h.toString(16).padStart(8, "0");
  }

  /** The position of the next batch. */
  state(): LoaderState {
    return { epoch: this.epoch, index: this.index, fingerprint: this.fingerprint };
  }

  /** Continues from a saved state (same examples and options, checked by fingerprint). */
  restore(state: LoaderState): void {
    if (state.fingerprint !== this.fingerprint) {
      throw new Error(`DataLoader.restore: the state was saved for other data or loader options (fingerprint ${state.fingerprint}, this loader ${this.fingerprint})`);
    }
    if (!(Number.isInteger(state.epoch) && state.epoch >= 0 && Number.isInteger(state.index) && state.index >= 0 && state.index < this.batchesPerEpoch)) {
      throw new Error(`DataLoader.restore: bad position epoch ${state.epoch}, index ${state.index} (index must be in [0, ${this.batchesPerEpoch}))`);
    }
    this.epoch = state.epoch;
    this.index = state.index;
  }

  /** The next batch (this rank's shard of it, with the shard option) as host arrays; advances the position. */
  nextHost(): HostBatch {
    const { order, stream } = this.epochData();
    const first = this.index * this.batchSize;
    let batch: HostBatch;
    if (stream === null) {
      batch = padBatch(order.slice(first, first + this.batchSize).map((i) => this.examples[i]!), this.padId);
    } else {
      const rows = Math.min(this.batchSize, this.blocksPerEpoch - first);
      batch = blockBatch(stream, this.blockLength!, first, rows, this.padId);
    }
    if (++this.index === this.batchesPerEpoch) {
      this.epoch++;
      this.index = 0;
    }
    return this.shard ? shardBatch(batch, this.shard.rank, this.shard.worldSize) : batch;
  }

  /** The next batch as int32 tensors [B, T]; the caller disposes it. */
  next(): Batch {
    return toTensors(this.nextHost(), this.device);
  }

  private epochData(): { order: number[]; stream: PackedStream | null } {
    if (this.cache?.epoch !== this.epoch) {
      const n = this.examples.length;
      const order = this.shuffle ? shuffledIndices(n, this.seed, this.epoch) : Array.from({ length: n }, (_, i) => i);
      const stream = this.blockLength === undefined ? null : packExamples(order.map((i) => this.examples[i]!), this.eosId);
      this.cache = { epoch: this.epoch, order, stream };
    }
    return this.cache;
  }
}
