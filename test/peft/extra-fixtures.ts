// Shared helpers for the tests against test/fixtures/peft-extra (made by
// test/fixtures/make_peft_extra_fixtures.py): the tiny GPT-2, its fixed batch, and fixture tensors.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { GPT2LMHeadModel, noGrad, readSafetensors, tensor, tidy, toTensor, type Tensor } from "../../lib/index.js";

export const MODEL = "test/fixtures/gpt2-tiny";
export const PEFT_TINY = "test/fixtures/peft-tiny";
export const EXTRA = "test/fixtures/peft-extra";
export const quiet = { onWarning: () => {} };

export const loadGpt2 = () => GPT2LMHeadModel.fromPretrainedSync(MODEL);

/** gpt2-tiny/reference.json: input_ids, attention_mask, labels_masked. */
export const batch = JSON.parse(readFileSync(join(MODEL, "reference.json"), "utf8")) as {
  input_ids: number[][];
  attention_mask: number[][];
  labels_masked: number[][];
};

export const ids = (rows: number[][]) => tensor(Int32Array.from(rows.flat()), { shape: [rows.length, rows[0]!.length] });

type CausalLM = { forward(i: { inputIds: Tensor; attentionMask?: Tensor; labels?: Tensor }): { logits: Tensor; loss?: Tensor | null } };

/** Logits for the fixed batch, without gradient. */
export function logitsOf(model: CausalLM): Float32Array {
  return noGrad(() => tidy(() => model.forward({ inputIds: ids(batch.input_ids), attentionMask: ids(batch.attention_mask) }).logits.dataSync() as Float32Array));
}

/** The causal-LM loss of the fixed batch (pad labels ignored), recorded for backward. */
export function lossOf(model: CausalLM): Tensor {
  return model.forward({ inputIds: ids(batch.input_ids), attentionMask: ids(batch.attention_mask), labels: ids(batch.labels_masked) }).loss!;
}

/** A fixture's tensors.safetensors: name -> values (and shape). */
export function fixtureTensors(dir: string): { get(name: string): Float32Array; shape(name: string): number[]; names: string[] } {
  const file = readSafetensors(join(dir, "tensors.safetensors"));
  return {
    names: file.names,
    get: (name) => {
      const t = toTensor(file.get(name));
      const data = t.dataSync() as Float32Array;
      t.dispose();
      return data;
    },
    shape: (name) => [...file.get(name).shape],
  };
}

export function readJson<T = Record<string, unknown>>(path: string): T {
  return JSON.parse(readFileSync(path, "utf8")) as T;
}

/** B·A in float64 (B [out, r], A [r, in]): the update an adapter applies, free of the SVD's sign choices. */
export function product(B: ArrayLike<number>, A: ArrayLike<number>, out: number, r: number, inDim: number): Float64Array {
  const p = new Float64Array(out * inDim);
  for (let o = 0; o < out; o++) {
    for (let k = 0; k < r; k++) {
      const b = B[o * r + k]!;
      for (let i = 0; i < inDim; i++) p[o * inDim + i]! += b * A[k * inDim + i]!;
    }
  }
  return p;
}

/** Flips the sign of each (row i of A, column i of B) pair so that A's rows point like ref's: the freedom an SVD leaves. */
export function alignSigns(A: Float32Array, B: Float32Array, refA: Float32Array, r: number): { A: Float32Array; B: Float32Array } {
  const a = Float32Array.from(A), b = Float32Array.from(B);
  const inDim = A.length / r, out = B.length / r;
  for (let k = 0; k < r; k++) {
    let dot = 0;
    for (let i = 0; i < inDim; i++) dot += a[k * inDim + i]! * refA[k * inDim + i]!;
    if (dot >= 0) continue;
    for (let i = 0; i < inDim; i++) a[k * inDim + i] = -a[k * inDim + i]!;
    for (let o = 0; o < out; o++) b[o * r + k] = -b[o * r + k]!;
  }
  return { A: a, B: b };
}
