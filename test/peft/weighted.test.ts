// addWeightedAdapter against PEFT 0.21's add_weighted_adapter on the tiny GPT-2
// (test/fixtures/peft-extra/weighted). "linear" and "cat" factors are compared directly; "svd"
// factors are unique only up to the sign of each singular pair (LAPACK's choice is not ours), so
// B·A is compared, and A, B after aligning signs. Logits: 1e-4 relative (float32 with different
// summation orders differs by ~1e-6; a wrong weight, sign or scaling by far more).
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { getPeftModel, LoraConfig, PeftModel, type GPT2LMHeadModel } from "../../lib/index.js";
import { quantileClamp, matrix } from "../../lib/linalg/index.js";
import { relError } from "../helpers.js";
import { alignSigns, EXTRA, fixtureTensors, loadGpt2, logitsOf, PEFT_TINY, product, quiet, readJson } from "./extra-fixtures.js";

const DIR = join(EXTRA, "weighted");
const TOL = 1e-4;
const T = fixtureTensors(DIR);
interface Case {
  args: { adapters: string[]; weights: number[]; combination_type: "linear" | "cat" | "svd"; svd_rank?: number; svd_clamp?: number };
  r: number;
  lora_alpha: number;
  target_modules: string[];
  scaling: Record<string, number>;
}
const ref = readJson<{ cases: Record<string, Case>; existing_name_left_unchanged: boolean; linear_unequal_ranks_error: string }>(join(DIR, "reference.json"));

/** The three source adapters, as the fixture loaded them. */
function threeAdapters(onWarning: (m: string) => void = () => {}): PeftModel<GPT2LMHeadModel> {
  const peft = PeftModel.fromPretrainedSync(loadGpt2(), join(PEFT_TINY, "adapter-c_attn"), { adapterName: "a", onWarning });
  peft.loadAdapter(join(DIR, "adapter-b"), "b");
  peft.loadAdapter(join(DIR, "adapter-c"), "c");
  peft.eval();
  return peft;
}

function add(peft: PeftModel, name: string, c: Case): void {
  const { adapters, weights, combination_type: combinationType, svd_rank: svdRank, svd_clamp: svdClamp } = c.args;
  peft.addWeightedAdapter(adapters, weights, name, { combinationType, svdRank, svdClamp });
}

describe("addWeightedAdapter against PEFT", () => {
  it("the source adapters give PEFT's logits", () => {
    const peft = threeAdapters();
    for (const name of ["a", "b", "c"]) {
      peft.setAdapter(name);
      expect(relError(logitsOf(peft), T.get(`logits.${name}`)), name).toBeLessThan(TOL);
    }
    peft.dispose();
  });

  for (const [name, c] of Object.entries(ref.cases)) {
    it(`${name}: ${c.args.combination_type} of [${c.args.adapters}] with weights [${c.args.weights}] → PEFT's config, factors and logits`, () => {
      const peft = threeAdapters();
      add(peft, name, c);
      const config = peft.peftConfig.get(name)!;
      expect([config.r, config.loraAlpha]).toEqual([c.r, c.lora_alpha]);
      expect([...(config.targetModules as string[])].sort()).toEqual(c.target_modules);
      const scalings = [...peft.loraLayers].filter(([, l]) => l.specs.has(name)).map(([p, l]) => [p, l.specs.get(name)!.scaling]);
      expect(Object.fromEntries(scalings)).toEqual(c.scaling);
      // added frozen and inactive, like any added adapter
      expect(peft.activeAdapter).toBe("a");
      expect(peft.loraLayers.get("transformer.h.0.attn.c_attn")!.parametersOf(name).some((p) => p.requiresGrad)).toBe(false);
      for (const path of Object.keys(c.scaling)) {
        const layer = peft.loraLayers.get(path)!;
        const A = layer.loraA(name).dataSync() as Float32Array, B = layer.loraB(name).dataSync() as Float32Array;
        const refA = T.get(`${name}.${path}.lora_A`), refB = T.get(`${name}.${path}.lora_B`);
        expect(layer.loraA(name).shape).toEqual(T.shape(`${name}.${path}.lora_A`));
        expect(layer.loraB(name).shape).toEqual(T.shape(`${name}.${path}.lora_B`));
        const [out, inDim] = [layer.loraB(name).shape[0]!, layer.loraA(name).shape[1]!];
        if (c.args.combination_type === "svd" && c.args.adapters.length > 1) {
          // Beyond the rank of ΔW (the sum of the ranks present on this layer: only c's 2 on c_fc) the
          // singular values are 0 and the singular vectors arbitrary, in PEFT as here: compare the first
          // k pairs, and expect B's other columns to be (numerically) zero.
          const k = Math.min(c.r, c.args.adapters.filter((a) => layer.specs.has(a)).reduce((n, a) => n + layer.specs.get(a)!.r, 0));
          const head = (m: Float32Array, cols: number, keepRows: number, keepCols: number) =>
            Float32Array.from({ length: keepRows * keepCols }, (_, i) => m[Math.floor(i / keepCols) * cols + (i % keepCols)]!);
          const firstA = (m: Float32Array) => head(m, inDim, k, inDim), firstB = (m: Float32Array) => head(m, c.r, out, k);
          if (c.args.svd_clamp === undefined) {
            expect(relError(product(B, A, out, c.r, inDim), product(refB, refA, out, c.r, inDim)), path).toBeLessThan(1e-5);
            const aligned = alignSigns(firstA(A), firstB(B), firstA(refA), k);
            expect(relError(aligned.A, firstA(refA)), path).toBeLessThan(1e-4);
            expect(relError(aligned.B, firstB(refB)), path).toBeLessThan(1e-4);
            for (let o = 0; o < out; o++) for (let j = k; j < c.r; j++) expect(B[o * c.r + j]).toBe(0);
          } else {
            const plain = threeAdapters();
            plain.addWeightedAdapter(c.args.adapters, c.args.weights, "plain", { combinationType: "svd", svdRank: c.args.svd_rank });
            const pl = plain.loraLayers.get(path)!;
            const plainA = pl.loraA("plain").dataSync() as Float32Array, plainB = pl.loraB("plain").dataSync() as Float32Array;
            // The adapter built with svdClamp is the unclamped one with every entry clamped to ±(the
            // q-quantile of the entries): the largest entries are cut.
            const own = quantileClamp(matrix(c.r, inDim, plainA), matrix(out, c.r, plainB), c.args.svd_clamp);
            expect(relError(A, own.A.data), path).toBeLessThan(1e-6);
            expect(relError(B, own.B.data), path).toBeLessThan(1e-6);
            const bound = Math.max(...[...A, ...B].map(Math.abs));
            expect(bound, path).toBeLessThan(Math.max(...[...plainA, ...plainB].map(Math.abs)));
            if (k === c.r) {
              // The clamp's quantile is of the signed entries, so it depends on the sign choice: clamping our
              // unclamped factors after aligning their signs with PEFT's must give PEFT's result. (Where
              // k < r the quantile also sees the arbitrary vectors, so there is nothing to compare.)
              const aligned = alignSigns(plainA, plainB, refA, c.r);
              const clamped = quantileClamp(matrix(c.r, inDim, aligned.A), matrix(out, c.r, aligned.B), c.args.svd_clamp);
              expect(relError(clamped.A.data, refA), path).toBeLessThan(1e-4);
              expect(relError(clamped.B.data, refB), path).toBeLessThan(1e-4);
            }
            plain.dispose();
          }
        } else {
          expect(relError(A, refA), path).toBeLessThan(1e-6);
          expect(relError(B, refB), path).toBeLessThan(1e-6);
        }
      }
      peft.setAdapter(name);
      // with svd_clamp the signs matter (above), and our clamped adapter is a different one from PEFT's
      if (c.args.svd_clamp === undefined) expect(relError(logitsOf(peft), T.get(`logits.${name}`))).toBeLessThan(TOL);
      peft.dispose();
    });
  }

  it('"cat" is exact: its output equals all source adapters active at once, each scaled by its weight', () => {
    const peft = threeAdapters();
    peft.addWeightedAdapter(["a", "b", "c"], [1, 1, 1], "sum", { combinationType: "cat" });
    peft.setAdapter("sum");
    const cat = logitsOf(peft);
    peft.setAdapter(["a", "b", "c"]);
    expect(relError(cat, logitsOf(peft))).toBeLessThan(1e-5);
    peft.dispose();
  });

  it("embedding adapters combine in the same B·A orientation: cat, and svd at full rank, equal both active at once", () => {
    const peft = getPeftModel(loadGpt2(), new LoraConfig({ r: 3, loraAlpha: 6, targetModules: ["wte"], initLoraWeights: false }), "e1", quiet);
    peft.addAdapter("e2", new LoraConfig({ r: 2, loraAlpha: 2, targetModules: ["wte"], initLoraWeights: false }));
    peft.eval();
    peft.setAdapter(["e1", "e2"]);
    const both = logitsOf(peft);
    for (const combinationType of ["cat", "svd"] as const) {
      peft.addWeightedAdapter(["e1", "e2"], [1, 1], combinationType, { combinationType, svdRank: 5 });
      peft.setAdapter(combinationType);
      expect(relError(logitsOf(peft), both), combinationType).toBeLessThan(1e-5);
    }
    peft.dispose();
  });

  it("an existing name is left unchanged, with a warning (PEFT returns silently)", () => {
    const warnings: string[] = [];
    const peft = threeAdapters((m) => warnings.push(m));
    add(peft, "linear", ref.cases.linear!);
    const before = peft.loraLayers.get("transformer.h.0.attn.c_attn")!.loraA("linear").dataSync();
    peft.addWeightedAdapter(["a", "b"], [5, 5], "linear", { combinationType: "linear" });
    expect(ref.existing_name_left_unchanged).toBe(true);
    expect(peft.loraLayers.get("transformer.h.0.attn.c_attn")!.loraA("linear").dataSync()).toEqual(before);
    expect(warnings.some((w) => /"linear" already exists; nothing was added/.test(w))).toBe(true);
    peft.dispose();
  });

  it("refuses what PEFT refuses, and mismatched weights", () => {
    const peft = threeAdapters();
    const peftMessage = ref.linear_unequal_ranks_error;
    expect(() => peft.addWeightedAdapter(["a", "c"], [1, 1], "x", { combinationType: "linear" })).toThrow(peftMessage);
    expect(() => peft.addWeightedAdapter(["a", "zzz"], [1, 1], "x")).toThrow(/Adapter zzz does not exist/);
    expect(() => peft.addWeightedAdapter(["a", "b"], [1], "x")).toThrow(/weights must be 2 finite numbers/);
    expect(() => peft.addWeightedAdapter(["a", "b"], [1, 1], "x", { combinationType: "ties" as "svd" })).toThrow(/"ties" is not implemented/);
    expect(peft.adapters).toEqual(["a", "b", "c"]);
    peft.dispose();
  });

  it("a combined adapter saves in PEFT's format (lora_alpha = r) and loads back to the same logits", () => {
    const out = mkdtempSync(join(tmpdir(), "lowrank-weighted-"));
    try {
      const peft = threeAdapters();
      add(peft, "svd", ref.cases.svd!);
      peft.savePretrainedSync(out, { adapterNames: ["svd"] });
      const config = JSON.parse(readFileSync(join(out, "svd", "adapter_config.json"), "utf8"));
      expect(config).toMatchObject({ r: 4, lora_alpha: 4, peft_type: "LORA" });
      const again = PeftModel.fromPretrainedSync(loadGpt2(), join(out, "svd"), quiet);
      again.eval();
      expect(relError(logitsOf(again), T.get("logits.svd"))).toBeLessThan(TOL);
      again.dispose();
      peft.dispose();
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });
});
