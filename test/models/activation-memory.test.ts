// What a training forward leaves alive: the tensors its backward saved and its output, nothing
// else. Each transformer block runs in its own tidy() scope (ModuleList.chain), so the block's
// other intermediates (layer-norm outputs, the MLP's activation, residual sums that no backward
// reads) are freed as the forward goes, not at the end of the step: the peak of a training step
// on a GPU is the saved activations plus one block's intermediates.
import { describe, expect, it } from "vitest";
import { GPT2Config } from "../../lib/models/gpt2/config.js";
import { GPT2LMHeadModel } from "../../lib/models/gpt2/model.js";
import { LlamaConfig } from "../../lib/models/llama/config.js";
import { LlamaForCausalLM } from "../../lib/models/llama/model.js";
import { Generator, getPeftModel, LoraConfig, memory, tensor, tidy, type Tensor } from "../../lib/index.js";
import type { NativeStorage } from "../../lib/native/addon.js";

/** The storages the recorded graph behind `out` keeps for its backward rules. */
function savedStorages(out: Tensor): Set<NativeStorage> {
  const storages = new Set<NativeStorage>();
  const seen = new Set<unknown>();
  const stack = [out.gradFn];
  while (stack.length > 0) {
    const node = stack.pop();
    if (!node || seen.has(node)) continue;
    seen.add(node);
    for (const t of node.saved) storages.add(t.storage.native);
    for (const input of node.inputs) if (input) stack.push(input.gradFn);
  }
  return storages;
}

const bytesOf = (storages: Iterable<NativeStorage>) => [...storages].reduce((n, s) => n + s.byteLength, 0);

type Model = GPT2LMHeadModel | LlamaForCausalLM;

const models: [string, () => Model][] = [
  ["GPT-2", () => new GPT2LMHeadModel(new GPT2Config({ nLayer: 3, nEmbd: 64, nHead: 4, vocabSize: 101, nPositions: 64 }), { generator: new Generator(1) })],
  [
    "Llama",
    () =>
      new LlamaForCausalLM(
        new LlamaConfig({ vocabSize: 97, hiddenSize: 48, intermediateSize: 100, numHiddenLayers: 3, numAttentionHeads: 6, numKeyValueHeads: 2 }),
        { generator: new Generator(1) },
      ),
  ],
];

describe.each(models)("%s with LoRA in training mode", (_name, make) => {
  it.each([false, true])("keeps only what its backward saved and the loss after the forward (gradient checkpointing %s)", (checkpointing) => {
    const model = make();
    model.gradientCheckpointing = checkpointing;
    const peft = getPeftModel(model, new LoraConfig({ r: 4, loraAlpha: 8, loraDropout: 0.1, targetModules: "all-linear", fanInFanOut: model instanceof GPT2LMHeadModel }));
    peft.train();
    const inputIds = tensor(Int32Array.from({ length: 2 * 24 }, (_, i) => (i * 7) % 90), { shape: [2, 24], dtype: "int32" });
    const params = new Set(peft.parameters().map((p) => p.storage.native));
    const step = (check: boolean) =>
      tidy(() => {
        const before = memory().cpu!.bytes;
        const loss = peft.forwardLoss({ inputIds, labels: inputIds });
        if (check) {
          const held = [...savedStorages(loss)].filter((s) => !params.has(s));
          // The saved activations of 3 blocks are most of it; the rest would be intermediates left alive.
          expect(bytesOf(held)).toBeGreaterThan(0);
          expect(memory().cpu!.bytes - before).toBe(bytesOf(new Set([...held, loss.storage.native])));
        }
        loss.backward();
      });
    step(false); // the first step may build buffers that stay (the one-GEMM path's padded weights)
    step(true);
    inputIds.dispose();
    peft.dispose();
  });
});
