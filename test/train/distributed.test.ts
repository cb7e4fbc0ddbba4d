// Data parallel on the CPU, ranks simulated in one process: each rank's shard of a global batch
// (rows rank, rank + N, ...) covers the global batch exactly once for N = 1..4; the global loss is
// the sum of the ranks' token-weighted losses and the global gradient the sum of their gradients
// (what the all-reduce computes), within float32 summation error; a world of one is the identity.
import { describe, expect, it } from "vitest";
import { Generator, GPT2LMHeadModel, getPeftModel, LoraConfig, scale, tidy } from "../../lib/index.js";
import { DataLoader, shardBatch, toTensors, type HostBatch } from "../../lib/train/collate.js";
import { IGNORE_INDEX, type TokenizedExample } from "../../lib/train/data.js";
import { commFromEnv, rankFromEnv, SingleProcessComm } from "../../lib/train/distributed.js";
import { Trainer } from "../../lib/train/trainer.js";
import { native } from "../../lib/native/index.js";

const MODEL = "test/fixtures/gpt2-tiny"; // vocab 101, eos 100
const EOS = 100;
const tokenizer = { eosTokenId: EOS };

/** Prompts of 2-9 ids then an answer of 1-4 ids and EOS: rows of different lengths and loss-token counts. */
function examples(n: number, seed: number): TokenizedExample[] {
  let s = seed;
  const rnd = (k: number) => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) >>> 8) % k;
  return Array.from({ length: n }, (_, i) => {
    const prompt = Array.from({ length: 2 + rnd(8) }, () => rnd(100));
    const ids = [...prompt, ...Array.from({ length: 1 + rnd(4) }, () => rnd(100)), EOS];
    const labels = Int32Array.from(ids);
    labels.fill(IGNORE_INDEX, 0, prompt.length);
    return { inputIds: Int32Array.from(ids), labels, line: i + 1 };
  });
}

const row = (b: HostBatch, r: number, a: "inputIds" | "labels" | "attentionMask") => Array.from(b[a]!.subarray(r * b.seqLen, (r + 1) * b.seqLen));

describe("data-parallel sharding", () => {
  // 50 examples in batches of 12: the last batch of each epoch has 2 rows, so with N = 3 or 4 a rank gets an empty shard.
  const data = examples(50, 3);
  for (const packing of [false, true]) {
    it(`shards cover every global batch exactly once, in order, for N = 1..4 (${packing ? "packed" : "padded"})`, () => {
      const opts = { batchSize: 12, tokenizer, seed: 5, packBlockLength: packing ? 16 : undefined };
      for (let N = 1; N <= 4; N++) {
        const whole = new DataLoader(data, opts);
        const ranks = Array.from({ length: N }, (_, rank) => new DataLoader(data, { ...opts, shard: { rank, worldSize: N } }));
        for (const r of ranks) expect(r.state()).toEqual(whole.state()); // the position and fingerprint are the global batch's
        for (let step = 0; step < 2 * whole.batchesPerEpoch + 1; step++) {
          const g = whole.nextHost();
          const shards = ranks.map((r) => r.nextHost());
          expect(shards.reduce((n, s) => n + s.batchSize, 0)).toBe(g.batchSize);
          expect(shards.reduce((n, s) => n + s.lossTokens, 0)).toBe(g.lossTokens);
          expect(shards.reduce((n, s) => n + s.tokens, 0)).toBe(g.tokens);
          for (let r = 0; r < g.batchSize; r++) {
            const s = shards[r % N]!, i = Math.floor(r / N);
            expect(s.seqLen).toBe(g.seqLen);
            expect(row(s, i, "inputIds")).toEqual(row(g, r, "inputIds"));
            expect(row(s, i, "labels")).toEqual(row(g, r, "labels"));
            if (!packing) expect(row(s, i, "attentionMask")).toEqual(row(g, r, "attentionMask"));
          }
          for (const s of shards) expect(s.global).toEqual(N === 1 ? undefined : { tokens: g.tokens, lossTokens: g.lossTokens });
        }
      }
    });
  }

  it("refuses a global batch that does not divide by the number of processes, naming both", () => {
    expect(() => new DataLoader(data, { batchSize: 6, tokenizer, shard: { rank: 0, worldSize: 4 } }))
      .toThrow("batchSize 6 (the global batch) must divide by the number of processes 4");
    expect(() => new DataLoader(data, { batchSize: 4, tokenizer, shard: { rank: 4, worldSize: 4 } })).toThrow("shard rank 4 of world size 4");
  });
});

describe("data-parallel loss and gradients (ranks simulated in one process)", () => {
  function model() {
    const generator = new Generator(11);
    const base = GPT2LMHeadModel.fromPretrainedSync(MODEL, { generator });
    return getPeftModel(base, new LoraConfig({ r: 4, loraAlpha: 8, loraDropout: 0, targetModules: ["c_attn", "c_proj"], fanInFanOut: true }), "default", { generator });
  }
  const trainable = (m: ReturnType<typeof model>) => m.namedParameters().filter(([, p]) => p.requiresGrad);
  const grads = (m: ReturnType<typeof model>) => trainable(m).map(([n, p]) => [n, Float64Array.from(p.grad!.dataSync())] as const);
  const zero = (m: ReturnType<typeof model>) => trainable(m).forEach(([, p]) => { p.grad?.dispose(); p.grad = null; });

  /** The Trainer's rule: each batch's mean loss weighted by its share of the global batch's label tokens, summed. */
  function weightedLossAndBackward(m: ReturnType<typeof model>, b: HostBatch): number {
    if (b.lossTokens === 0) return 0;
    const weight = b.lossTokens / (b.global ?? b).lossTokens;
    return tidy(() => {
      const t = toTensors(b);
      const loss = m.forwardLoss({ inputIds: t.inputIds, attentionMask: t.attentionMask, labels: t.labels });
      scale(loss, weight).backward();
      return loss.item() * weight;
    });
  }

  for (const N of [2, 3, 4]) {
    it(`N = ${N}: the shards' summed losses and gradients equal the one-process loss and gradients`, () => {
      const m = model();
      const global = new DataLoader(examples(24, 9), { batchSize: 12, tokenizer, seed: 1 }).nextHost();
      const wholeLoss = weightedLossAndBackward(m, global);
      const want = grads(m);
      zero(m);
      let shardLoss = 0;
      for (let rank = 0; rank < N; rank++) shardLoss += weightedLossAndBackward(m, shardBatch(global, rank, N)); // .grad accumulates: the all-reduce's sum
      const got = grads(m);
      m.dispose();
      expect(Math.abs(shardLoss - wholeLoss)).toBeLessThan(1e-5 * wholeLoss);
      // lora_B starts at zero, so lora_A's gradient is exactly zero both ways; lora_B's is not.
      let maxRel = 0;
      for (const [i, [name, w]] of want.entries()) {
        const g = got[i]![1];
        const scaleOf = Math.max(...w.map(Math.abs));
        if (name.includes("lora_B")) expect(scaleOf, name).toBeGreaterThan(0);
        if (scaleOf === 0) expect(g.every((v) => v === 0), name).toBe(true);
        else for (let k = 0; k < w.length; k++) maxRel = Math.max(maxRel, Math.abs(g[k]! - w[k]!) / scaleOf);
      }
      expect(maxRel).toBeLessThan(1e-4);
    });
  }

  it("a world of one (SingleProcessComm) trains exactly as no communicator", async () => {
    const curve = async (withComm: boolean) => {
      const m = model();
      const comm = new SingleProcessComm();
      const trainer = new Trainer({
        model: m, trainData: new DataLoader(examples(24, 9), { batchSize: 4, tokenizer, seed: 2, shard: { rank: 0, worldSize: 1 } }),
        maxSteps: 4, lr: 1e-2, progress: { quiet: true }, ...(withComm ? { comm } : {}),
      });
      const h = (await trainer.train()).history.map((r) => [r.loss, r.gradNorm]);
      trainer.dispose();
      m.dispose();
      return h;
    };
    expect(await curve(true)).toEqual(await curve(false));
    expect(new SingleProcessComm().allReduceSum([], [1.5, 2])).toEqual([1.5, 2]);
  });
});

describe("a rank's place from the launcher's environment", () => {
  it("reads the rank, refuses a bad one, and makes the communicator (NCCL for more than one rank)", () => {
    expect(rankFromEnv({})).toBeNull();
    expect(rankFromEnv({ LOWRANK_RANK: "1", LOWRANK_WORLD_SIZE: "2", LOWRANK_NCCL_ID: "ab" })).toEqual({ rank: 1, worldSize: 2, ncclId: "ab" });
    expect(() => rankFromEnv({ LOWRANK_RANK: "2", LOWRANK_WORLD_SIZE: "2" })).toThrow("LOWRANK_RANK=2 and LOWRANK_WORLD_SIZE=2 do not name a rank");
    expect(commFromEnv({})).toBeInstanceOf(SingleProcessComm);
    expect(commFromEnv({ LOWRANK_RANK: "0", LOWRANK_WORLD_SIZE: "1" })).toBeInstanceOf(SingleProcessComm);
    const two = { LOWRANK_RANK: "0", LOWRANK_WORLD_SIZE: "2", LOWRANK_NCCL_ID: "00".repeat(128) };
    expect(() => commFromEnv({ ...two, LOWRANK_NCCL_TIMEOUT: "soon" })).toThrow("LOWRANK_NCCL_TIMEOUT=soon: give the seconds a collective may wait");
    if (!native().commInfo().built) expect(() => commFromEnv(two)).toThrow("rank 0: this build of lowrank has no NCCL, which training on several GPUs needs");
  });
});
