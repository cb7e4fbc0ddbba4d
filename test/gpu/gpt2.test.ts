// GPT-2 and LoRA training on CUDA against the transformers/PEFT fixtures and the CPU backend.
// GPT-2 124M parity runs when LOWRANK_GPT2_124M points at a checkpoint made by
// test/gpu/make_gpt2_124m.py (random init; nothing is downloaded).
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { AdamW, GPT2LMHeadModel, memory, noGrad, PeftModel, synchronize, tensor, tidy, type Tensor } from "../../lib/index.js";
import { hasCuda, noCudaReason, relError } from "../helpers.js";

const gpu = describe.skipIf(!hasCuda);
if (!hasCuda) describe("CUDA GPT-2", () => it.skip(noCudaReason, () => {}));

const MODEL = "test/fixtures/gpt2-tiny";
const ref = JSON.parse(readFileSync(join(MODEL, "reference.json"), "utf8"));
const flat = (x: unknown): number[] => (Array.isArray(x) ? x.flatMap(flat) : [x as number]);
const ids = (rows: number[][], device: string) => tensor(Int32Array.from(rows.flat()), { shape: [rows.length, rows[0]!.length], dtype: "int32", device });
const quiet = { onWarning: () => {} };

gpu("GPT-2 on CUDA", () => {
  it("tiny model: logits and loss equal transformers' (1e-4 relative)", () => {
    const model = GPT2LMHeadModel.fromPretrainedSync(MODEL, { device: "cuda:0" });
    model.eval();
    noGrad(() =>
      tidy(() => {
        const out = model.forward({ inputIds: ids(ref.input_ids, "cuda:0"), attentionMask: ids(ref.attention_mask, "cuda:0"), labels: ids(ref.labels_masked, "cuda:0") });
        expect(relError(out.logits.dataSync(), flat(ref.logits_mask))).toBeLessThan(1e-4);
        expect(Math.abs(out.loss!.item() - ref.loss.labels_masked) / ref.loss.labels_masked).toBeLessThan(1e-4);
      }),
    );
    model.dispose();
  });

  it("5 LoRA AdamW steps on CUDA give PEFT's losses, and a step leaks no GPU memory", () => {
    const train = JSON.parse(readFileSync("test/fixtures/peft-tiny/train-c_attn/reference.json", "utf8"));
    const peft = PeftModel.fromPretrainedSync(GPT2LMHeadModel.fromPretrainedSync(MODEL, { device: "cuda:0" }), "test/fixtures/peft-tiny/adapter-c_attn", { isTrainable: true, ...quiet });
    peft.eval();
    const opt = new AdamW(peft.trainableParameters(), { lr: 1e-2, weightDecay: 0.01 });
    const losses: number[] = [];
    let before: ReturnType<typeof memory>[string] | undefined;
    for (let step = 0; step < 5; step++) {
      if (step === 2) { synchronize("cuda:0"); before = memory()["cuda:0"]; }
      tidy(() => {
        const { loss } = peft.forward({ inputIds: ids(ref.input_ids, "cuda:0"), attentionMask: ids(ref.attention_mask, "cuda:0"), labels: ids(ref.labels_masked, "cuda:0") });
        losses.push(loss!.item());
        loss!.backward();
      });
      opt.step();
      opt.zeroGrad();
    }
    expect(relError(losses, train.losses)).toBeLessThan(1e-4);
    expect(memory()["cuda:0"]).toMatchObject({ bytes: before!.bytes, buffers: before!.buffers, tensors: before!.tensors });
    opt.dispose();
    peft.dispose();
  });
});

const big = process.env.LOWRANK_GPT2_124M;
const noBig = !big || !existsSync(big);
if (noBig) {
  const reason = big ? `LOWRANK_GPT2_124M=${big} does not exist` : "LOWRANK_GPT2_124M is not set";
  describe("GPT-2 124M shapes", () => it.skip(`${reason}: test/gpu/device-run.sh makes the model with make_gpt2_124m.py and sets it`, () => {}));
}
describe.skipIf(noBig)("GPT-2 124M shapes (LOWRANK_GPT2_124M)", () => {
  it("logits equal transformers' on CPU and CUDA (1e-4 relative)", () => {
    const r = JSON.parse(readFileSync(join(big!, "reference.json"), "utf8"));
    for (const device of hasCuda ? ["cpu", "cuda:0"] : ["cpu"]) {
      const model = GPT2LMHeadModel.fromPretrainedSync(big!, { device });
      model.eval();
      noGrad(() =>
        tidy(() => {
          const out = model.forward({ inputIds: ids(r.input_ids, device), attentionMask: ids(r.attention_mask, device), labels: ids(r.labels, device) });
          const err = relError(out.logits.dataSync(), flat(r.logits));
          console.log(`GPT-2 124M on ${device}: logits relative error ${err.toExponential(2)}, loss ${out.loss!.item()} vs ${r.loss}`);
          expect(err).toBeLessThan(1e-4);
          expect(Math.abs(out.loss!.item() - r.loss) / r.loss).toBeLessThan(1e-4);
        }),
      );
      model.dispose();
    }
  });
});
export type { Tensor };
