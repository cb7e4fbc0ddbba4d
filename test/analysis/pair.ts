// A fine-tuned twin of the tiny GPT-2 fixture with a known update: every c_attn weight gets
// ΔW = u₁v₁ᵀ + 0.3·u₂v₂ᵀ (rank 2), everything else is copied byte for byte.
import { copyFileSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { readSafetensors, writeSafetensors, type SafetensorsTensor } from "../../lib/io/safetensors.js";
import { matrix, type Matrix } from "../../lib/linalg/index.js";
import { randomValues } from "../helpers.js";

export const TINY = new URL("../fixtures/gpt2-tiny", import.meta.url).pathname;

/** float32 values of a little-endian F32 safetensors entry, decoded here without the addon. */
export function f32(bytes: Uint8Array): Float32Array {
  return new Float32Array(bytes.slice().buffer);
}

/** Writes the tuned twin into `dir`; returns the exact float64 update of each changed weight (stored in×out). */
export function makeRankTwoPair(dir: string): Map<string, Matrix> {
  mkdirSync(dir, { recursive: true });
  copyFileSync(join(TINY, "config.json"), join(dir, "config.json"));
  const file = readSafetensors(join(TINY, "model.safetensors"));
  const tensors: Record<string, SafetensorsTensor> = {};
  const updates = new Map<string, Matrix>();
  for (const [n, e] of file.entries.entries()) {
    if (!e.name.endsWith("c_attn.weight")) {
      tensors[e.name] = e;
      continue;
    }
    const [rows, cols] = e.shape as [number, number];
    const [u1, u2, v1, v2] = [rows, rows, cols, cols].map((len, i) => randomValues(len, 100 * n + i));
    const delta = matrix(rows, cols, Array.from({ length: rows * cols }, (_, k) => {
      const i = Math.floor(k / cols), j = k % cols;
      return u1![i]! * v1![j]! + 0.3 * u2![i]! * v2![j]!;
    }));
    const w = f32(e.bytes).map((x, k) => x + delta.data[k]!);
    tensors[e.name] = { dtype: "F32", shape: e.shape, bytes: new Uint8Array(w.buffer) };
    updates.set(e.name, delta);
  }
  writeSafetensors(join(dir, "model.safetensors"), tensors, { format: "pt" });
  return updates;
}

export function readJson<T>(path: string): T {
  return JSON.parse(readFileSync(path, "utf8")) as T;
}
