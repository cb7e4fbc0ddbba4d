// Five AdamW steps against a PEFT training fixture written by make_fixtures.py's make_peft_train
// (GPT-2: peft-tiny/train-c_attn; Llama family: peft-llama/train-*): reference.json (losses,
// grad_norms, final_loss), grads_step0.safetensors (PEFT's in-memory names, ours too) and
// adapter-after-5-steps/ (the trained adapter as PEFT saves it).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { expect } from "vitest";
import { AdamW, noGrad, readSafetensors, tidy, toTensor, type PeftModel, type Tensor } from "../../lib/index.js";
import { relError } from "../helpers.js";

/**
 * Trains `peft` (its adapter loaded from the fixture's starting adapter, isTrainable) as the
 * fixture did: eval mode (no dropout), torch.optim.AdamW(lr=1e-2, betas=(0.9, 0.999), eps=1e-8,
 * weight_decay=0.01), 5 steps of loss, backward, step, zero_grad, no clipping; `loss()` gives the
 * loss of the fixture's batch. Expects PEFT's losses, gradient norms, step-0 gradients, final loss
 * and trained adapter within `tol` relative.
 */
export function expectTrainsLikePeft(peft: PeftModel, loss: () => Tensor, dir: string, tol = 1e-4): void {
  const ref = JSON.parse(readFileSync(join(dir, "reference.json"), "utf8")) as { losses: number[]; grad_norms: number[]; final_loss: number };
  peft.eval();
  const opt = new AdamW(peft.trainableParameters(), { lr: 1e-2, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0.01 });
  const losses: number[] = [], gradNorms: number[] = [];
  const stepZeroGrads = readSafetensors(join(dir, "grads_step0.safetensors"));
  expect(stepZeroGrads.names.sort()).toEqual(peft.namedParameters().filter(([, p]) => p.requiresGrad).map(([n]) => n).sort());
  const params = new Map(peft.namedParameters());
  for (let step = 0; step < 5; step++) {
    tidy(() => {
      const l = loss();
      losses.push(l.item());
      l.backward();
    });
    gradNorms.push(Math.sqrt(peft.trainableParameters().reduce((s, p) => s + Array.from(p.grad!.dataSync()).reduce((a, g) => a + g * g, 0), 0)));
    if (step === 0) {
      for (const name of stepZeroGrads.names) {
        expect(relError(params.get(name)!.grad!.dataSync(), toTensor(stepZeroGrads.get(name)).dataSync()), name).toBeLessThan(tol);
      }
    }
    opt.step();
    opt.zeroGrad();
  }
  const finalLoss = noGrad(() => tidy(() => loss().item()));
  expect(relError(losses, ref.losses)).toBeLessThan(tol);
  expect(relError(gradNorms, ref.grad_norms)).toBeLessThan(tol);
  expect(Math.abs(finalLoss - ref.final_loss) / ref.final_loss).toBeLessThan(tol);
  const want = readSafetensors(join(dir, "adapter-after-5-steps", "adapter_model.safetensors"));
  const state = peft.adapterStateDict();
  for (const key of want.names) expect(relError(state[key]!.dataSync(), toTensor(want.get(key)).dataSync()), key).toBeLessThan(tol);
  opt.dispose();
}
