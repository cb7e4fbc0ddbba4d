// PEFT on CUDA: adapters, merging and the demo's training path on the GPU, against the fixtures and
// the CPU results. Runs on a GPU host; skipped with the reason elsewhere.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { GPT2LMHeadModel, noGrad, PeftModel, runDemo, tensor, tidy } from "../../lib/index.js";
import { hasCuda, noCudaReason, relError } from "../helpers.js";

const gpu = describe.skipIf(!hasCuda);
if (!hasCuda) describe("CUDA PEFT", () => it.skip(noCudaReason, () => {}));

const flat = (x: unknown): number[] => (Array.isArray(x) ? x.flatMap(flat) : [x as number]);

gpu("PEFT on CUDA", () => {
  for (const name of ["adapter-rslora", "adapter-all-linear"]) {
    it(`${name}: PEFT's logits unmerged, safely merged, and after unmerge (1e-4 relative)`, () => {
      const ref = JSON.parse(readFileSync(`test/fixtures/peft-tiny/${name}/reference.json`, "utf8"));
      const peft = PeftModel.fromPretrainedSync(GPT2LMHeadModel.fromPretrainedSync("test/fixtures/gpt2-tiny", { device: "cuda:0" }), `test/fixtures/peft-tiny/${name}`, { onWarning: () => {} });
      peft.eval();
      const ids = (rows: number[][]) => tensor(Int32Array.from(rows.flat()), { shape: [rows.length, rows[0]!.length], device: "cuda:0" });
      const run = () => noGrad(() => tidy(() => peft.forward({ inputIds: ids(ref.input_ids), attentionMask: ids(ref.attention_mask) }).logits.dataSync()));
      expect(relError(run(), flat(ref.logits_mask))).toBeLessThan(1e-4);
      peft.mergeAdapter({ safeMerge: true });
      expect(relError(run(), flat(ref.logits_merged_mask))).toBeLessThan(1e-4);
      peft.unmergeAdapter();
      expect(relError(run(), flat(ref.logits_mask))).toBeLessThan(1e-4);
      peft.dispose();
    });
  }

  it("the demo's training path learns the task on the GPU", async () => {
    const out = mkdtempSync(join(tmpdir(), "lowrank-demo-gpu-"));
    try {
      const r = await runDemo({ device: "cuda:0", steps: 60, evalCount: 10, out, quiet: true });
      console.log(`demo on cuda:0: ${r.before.right}/${r.before.total} -> ${r.after.right}/${r.after.total}, merge diff ${r.mergeMaxDiff}, ${r.seconds.toFixed(1)} s`);
      expect(r.mergeOk).toBe(true);
      expect(r.after.right).toBeGreaterThanOrEqual(8);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });
});
