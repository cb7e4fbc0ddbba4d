// Gradient checkpointing (lib/autograd/checkpoint.ts): the recomputed backward gives exactly the
// plain run's gradients (dropout masks replayed), keeps less alive after the forward, and a LoRA
// run on GPT-2 and on a Llama model gives the same losses and adapters with and without it.
import { describe, expect, it } from "vitest";
import { checkpoint } from "../../lib/autograd/checkpoint.js";
import { AdamW, AutoModelForCausalLM, Generator, getPeftModel, LoraConfig, memory, tensor, tidy, type Tensor } from "../../lib/index.js";
import * as ops from "../../lib/ops/index.js";
import { recordDraws, replayDraws } from "../../lib/tensor/random.js";
import { randomValues } from "../helpers.js";

const t = (shape: number[], seed: number) => tensor(randomValues(shape.reduce((a, b) => a * b, 1), seed), { shape });

describe("checkpoint", () => {
  // a block with a parameter, a nonlinearity and two dropouts drawing from one generator
  const block = (w: Tensor, g: Generator) => (x: Tensor) =>
    ops.dropout(ops.gelu(ops.matmul(ops.dropout(x, 0.3, { generator: g }), w)), 0.2, { generator: g });

  for (const inputGrad of [true, false]) {
    it(`gives the plain run's gradients bit for bit (input ${inputGrad ? "requires" : "does not require"} grad)`, () => {
      const run = (useCheckpoint: boolean) =>
        tidy(() => {
          const x = t([5, 7], 1).requireGrad(inputGrad), w = t([7, 6], 2).requireGrad();
          const f = block(w, new Generator(9));
          const h = useCheckpoint ? checkpoint(f, x, [], [w]) : f(x);
          const y = useCheckpoint ? checkpoint((u) => ops.tanh(ops.matmul(u, w.transpose(0, 1))), h, [], [w]) : ops.tanh(ops.matmul(h, w.transpose(0, 1)));
          ops.sum(ops.mul(y, y)).backward();
          return { y: Array.from(y.dataSync()), gw: Array.from(w.grad!.dataSync()), gx: x.grad ? Array.from(x.grad.dataSync()) : null };
        });
      const plain = run(false), recomputed = run(true);
      expect(recomputed.y).toEqual(plain.y);
      expect(recomputed.gw).toEqual(plain.gw);
      expect(recomputed.gx).toEqual(plain.gx);
      if (inputGrad) expect(plain.gx).not.toBeNull();
    });
  }

  it("replays the first pass's random draws, and refuses a recomputation that draws differently", () => {
    const g = new Generator(4);
    const { draws } = recordDraws(() => [g.next(10), g.next(3)]);
    expect(g.offset).toBe(13n);
    expect(replayDraws(draws, () => [g.next(10), g.next(3)])).toEqual([{ seed: 4n, offset: 0n }, { seed: 4n, offset: 10n }]);
    expect(g.offset).toBe(13n); // replaying does not move the stream
    expect(() => replayDraws(draws, () => g.next(11))).toThrow(/drew other random numbers than the first pass/);
    expect(() => replayDraws(draws, () => g.next(10))).toThrow(/drew 1 times/);
  });
});

/** The model-level check on `device` (test/gpu/checkpoint.test.ts runs it on CUDA). */
export function describeModelCheckpointing(device: string, skipReason?: string): void {
  if (skipReason) {
    describe(`gradientCheckpointing on ${device}`, () => it.skip(skipReason, () => {}));
    return;
  }
  describe.each([
  { dir: "test/fixtures/gpt2-tiny", targets: ["c_attn", "c_proj"], fanInFanOut: true },
  { dir: "test/fixtures/llama-tiny/llama-gqa", targets: ["q_proj", "v_proj", "down_proj"], fanInFanOut: false },
])(`gradientCheckpointing on ${device}: $dir`, ({ dir, targets, fanInFanOut }) => {
  const ids = () => tensor(Int32Array.from(randomValues(2 * 24, 5), (u) => Math.floor(((u + 1) / 2) * 90)), { shape: [2, 24], device });

  const run = (recompute: boolean) => {
    const model = AutoModelForCausalLM.fromPretrainedSync(dir, { device, generator: new Generator(3) });
    model.gradientCheckpointing = recompute;
    const peft = getPeftModel(model, new LoraConfig({ r: 4, loraAlpha: 8, loraDropout: 0.1, targetModules: targets, fanInFanOut, initLoraWeights: "gaussian" }), "default", { generator: new Generator(7) });
    peft.train();
    const opt = new AdamW(peft.trainableParameters(), { lr: 1e-2 });
    const x = ids();
    const losses: number[] = [];
    let liveAfterForward = 0;
    for (let s = 0; s < 3; s++) {
      losses.push(tidy(() => {
        const before = memory()[device]!.bytes;
        const loss = peft.forward({ inputIds: x, labels: x }).loss!;
        liveAfterForward = memory()[device]!.bytes - before;
        loss.backward();
        return loss.item();
      }));
      opt.step();
      opt.zeroGrad();
    }
    const adapter = peft.trainableParameters().map((p) => Array.from(p.dataSync()));
    x.dispose();
    peft.dispose();
    return { losses, adapter, liveAfterForward };
  };

  it("the same losses and adapter bit for bit, with dropout on, and less kept alive after the forward", () => {
    const plain = run(false), recomputed = run(true);
    expect(recomputed.losses).toEqual(plain.losses);
    expect(recomputed.adapter).toEqual(plain.adapter);
    expect(recomputed.liveAfterForward).toBeLessThan(plain.liveAfterForward / 2);
    console.log(`${dir}: live after the forward ${plain.liveAfterForward} -> ${recomputed.liveAfterForward} bytes`);
  });
});
}

describeModelCheckpointing("cpu");
