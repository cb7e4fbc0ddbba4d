// fineTune on CUDA: mixed precision by default (bf16 frozen weights, float32 adapters), and
// float32 when asked for.
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { fineTune } from "../../lib/index.js";
import { tinyTrainingFolder } from "../cli/helpers.js";
import { hasCuda, noCudaReason } from "../helpers.js";

const tiny = tinyTrainingFolder("lowrank-gpu-fine-tune-");
let dir: string, model: string, data: string;
beforeAll(() => ({ dir, model, data } = tiny));

if (!hasCuda) describe("fineTune on CUDA", () => it.skip(noCudaReason, () => {}));
describe.skipIf(!hasCuda)("fineTune on CUDA", () => {
  for (const dtype of [undefined, "float32"] as const) {
    it(`dtype ${dtype ?? "not given"}: ${dtype ?? "bfloat16"} frozen weights, float32 adapters`, async () => {
      const r = await fineTune({ model, data, out: join(dir, `dtype-${dtype}`), steps: 2, r: 2, batchSize: 4, evalSplit: 0, device: "cuda:0", dtype, progress: { quiet: true } });
      const weights = r.model.namedParameters().filter(([n]) => n.endsWith("c_attn.base_layer.weight")).map(([, p]) => p.dtype);
      const adapters = r.model.trainableParameters().map((p) => p.dtype);
      r.model.dispose();
      expect(weights.length).toBeGreaterThan(0);
      expect(new Set(weights)).toEqual(new Set([dtype ?? "bfloat16"]));
      expect(new Set(adapters)).toEqual(new Set(["float32"]));
    });
  }
});
