// The Llama family on CUDA (issue 13): every random-init model in test/fixtures/llama-tiny against
// transformers' float32 logits, loss and gradients (the CPU test's bar, 1e-4 relative L2: float32
// on both sides, other summation orders), and greedy generation with the KV cache equal to
// transformers' generate. Every fixture folder is taken, so new architectures are covered here
// as soon as their fixtures exist. Runs on a GPU host; skipped with the reason elsewhere.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { LlamaForCausalLM } from "../../lib/models/llama/model.js";
import { generate, memory, readSafetensors, tensor, tidy, toTensor } from "../../lib/index.js";
import { hasCuda, noCudaReason, relError } from "../helpers.js";

const ROOT = "test/fixtures/llama-tiny";
const CASES = readdirSync(ROOT, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name).sort();
const DEVICE = "cuda:0";
const TOL = 1e-4;
const ids = (rows: number[][]) => tensor(Int32Array.from(rows.flat()), { shape: [rows.length, rows[0]!.length], device: DEVICE });

if (!hasCuda) describe("LlamaForCausalLM on CUDA", () => it.skip(noCudaReason, () => {}));

describe.skipIf(!hasCuda).each(CASES)("LlamaForCausalLM %s on CUDA against transformers", (name) => {
  const dir = join(ROOT, name);
  const ref = JSON.parse(readFileSync(join(dir, "reference.json"), "utf8"));

  it("logits, loss and the gradient of every parameter agree within 1e-4 relative", () => {
    const expected = readSafetensors(join(dir, "reference.safetensors"));
    const model = LlamaForCausalLM.fromPretrained(dir, { device: DEVICE });
    const before = memory()[DEVICE]!.bytes;
    tidy(() => {
      const { logits, loss } = model.forward({ inputIds: ids(ref.input_ids), labels: ids(ref.labels) });
      expect(relError(logits.dataSync(), toTensor(expected.get("logits")).dataSync())).toBeLessThan(TOL);
      expect(Math.abs(loss!.item() - ref.loss) / ref.loss).toBeLessThan(TOL);
      loss!.backward();
      const params = new Map(model.namedParameters());
      for (const pname of ref.parameters as string[]) {
        const want = toTensor(expected.get(`grad.${pname}`)).dataSync();
        expect(relError(params.get(pname)!.grad!.dataSync(), want), pname).toBeLessThan(TOL);
      }
    });
    model.zeroGrad();
    expect(memory()[DEVICE]!.bytes, "the step's tensors are all freed").toBe(before);
    model.dispose();
  });

  it("greedy generate with the KV cache equals transformers' generate", () => {
    const model = LlamaForCausalLM.fromPretrained(dir, { device: DEVICE });
    (ref.input_ids as number[][]).forEach((prompt, i) => {
      expect(generate(model, prompt, { maxNewTokens: ref.generate_max_new_tokens, useCache: true }), `row ${i}`).toEqual(ref.generate[i]);
    });
    model.dispose();
  });
});
