// Seeded mutations for the input fuzz test (inputs.test.ts): every run makes the same corrupted
// inputs from the committed fixtures, so a failure names a case that can be replayed.
import { prng } from "../helpers.js";

/** Seeded choices over test/helpers.ts's prng. */
export class Rng {
  readonly next: () => number;
  constructor(seed: number) {
    this.next = prng(seed);
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }
}

/** Values that are wrong for almost any field: wrong types, non-finite and huge numbers, NaN strings. */
const BAD_VALUES: readonly unknown[] = [
  null, true, false, 0, -1, 1.5, 1e308, -1e308, 2 ** 53 + 1, 2 ** 31, 1e12, "NaN", "Infinity", "-Infinity", "nan",
  "", "x", "1", [], [1, 2], [-1], [null], {}, { a: 1 }, "\u0000", "é😀", "a".repeat(10_000),
];

/** One structural edit of a parsed JSON value at a random place: replace, delete, add a key, or wrap. */
export function mutateJsonValue(value: unknown, rng: Rng): unknown {
  const copy = structuredClone(value);
  // collect the containers and their keys, then edit one slot
  const slots: [Record<string, unknown> | unknown[], string | number][] = [];
  const walk = (v: unknown, depth: number) => {
    if (depth > 6 || v === null || typeof v !== "object") return;
    if (Array.isArray(v)) {
      // long arrays (tensors, vocabularies): a few random slots, not all
      for (let k = 0; k < Math.min(v.length, 4); k++) {
        const i = rng.int(v.length);
        slots.push([v, i]);
        walk(v[i], depth + 1);
      }
    } else {
      const keys = Object.keys(v);
      for (const k of keys.length > 64 ? Array.from({ length: 16 }, () => rng.pick(keys)) : keys) {
        slots.push([v as Record<string, unknown>, k]);
        walk((v as Record<string, unknown>)[k], depth + 1);
      }
    }
  };
  walk(copy, 0);
  if (slots.length === 0 || rng.next() < 0.05) return rng.pick(BAD_VALUES);
  const [container, key] = rng.pick(slots);
  const op = rng.int(10);
  if (op < 6) {
    (container as Record<string | number, unknown>)[key] = rng.pick(BAD_VALUES);
  } else if (op < 8 && !Array.isArray(container)) {
    delete container[key as string];
  } else if (op < 9) {
    const old = (container as Record<string | number, unknown>)[key];
    (container as Record<string | number, unknown>)[key] = rng.next() < 0.5 ? [old] : { value: old };
  } else if (!Array.isArray(container)) {
    container[`unexpected_${rng.int(100)}`] = rng.pick(BAD_VALUES);
  } else {
    container.push(rng.pick(BAD_VALUES));
  }
  return copy;
}

/** Byte-level damage: truncation, flipped bits, overwritten, inserted or deleted bytes, invalid UTF-8. */
export function mutateBytes(bytes: Uint8Array, rng: Rng, span = bytes.length): Buffer {
  const b = Buffer.from(bytes);
  const at = () => rng.int(Math.max(1, Math.min(span, b.length)));
  switch (rng.int(6)) {
    case 0:
      return b.subarray(0, at());
    case 1:
      for (let k = 1 + rng.int(6); k > 0; k--) b[at()] ^= 1 << rng.int(8);
      return b;
    case 2:
      for (let k = 1 + rng.int(6); k > 0; k--) b[at()] = rng.int(256);
      return b;
    case 3: {
      const i = at();
      return Buffer.concat([b.subarray(0, i), Buffer.from(rng.pick(["\xff", "\xc3", "\u0000", "{", "}", "\"", ",", "\n", "]", "\\"]), "latin1"), b.subarray(i)]);
    }
    case 4: {
      const i = at();
      return Buffer.concat([b.subarray(0, i), b.subarray(i + 1 + rng.int(16))]);
    }
    default:
      return rng.next() < 0.5 ? Buffer.alloc(0) : Buffer.concat([b, Buffer.from(rng.pick(["garbage", "\n{\"x\":", "\x00\x00\x00", "}"]), "latin1")]);
  }
}

/** A JSON file corrupted either as text (bytes) or as structure (a field set to a wrong value). */
export function mutateJsonFile(text: Uint8Array, rng: Rng): Buffer {
  if (rng.next() < 0.35) return mutateBytes(text, rng);
  const indent = rng.next() < 0.5 ? 2 : undefined;
  return Buffer.from(JSON.stringify(mutateJsonValue(JSON.parse(Buffer.from(text).toString("utf8")), rng), null, indent), "utf8");
}

/** A safetensors file: bytes, the header length, or its JSON header (dtypes, shapes, offsets, names). */
export function mutateSafetensors(file: Uint8Array, rng: Rng): Buffer {
  const base = Buffer.from(file);
  const n = Number(base.readBigUInt64LE(0));
  const data = base.subarray(8 + n);
  const kind = rng.int(5);
  if (kind === 0) return mutateBytes(base, rng, 8 + n + 64); // damage in the length, header and first data
  if (kind === 1) {
    const b = Buffer.from(base);
    b.writeBigUInt64LE(rng.pick([0n, 1n, 2n ** 63n, 2n ** 64n - 1n, BigInt(n + 1), BigInt(n - 1), BigInt(b.length), 100_000_001n, BigInt(rng.int(b.length))]), 0);
    return b;
  }
  const header = JSON.parse(base.subarray(8, 8 + n).toString("utf8")) as Record<string, { dtype: string; shape: number[]; data_offsets: number[] }>;
  const names = Object.keys(header).filter((k) => k !== "__metadata__");
  const name = rng.pick(names);
  const entry = header[name]!;
  let tail = data;
  switch (rng.int(9)) {
    case 0: entry.dtype = rng.pick(["F31", "f32", "", "BOOL", "F64", "I32", "I64", "U8", "F8_E4M3", "BF16", "F16", "I8"]); break;
    case 1: (entry as Record<string, unknown>).dtype = rng.pick(BAD_VALUES); break;
    case 2: entry.shape = rng.pick([[], [0], [-1], [1e3], [2 ** 53], [2 ** 40, 2 ** 40], [...entry.shape].reverse(), [entry.shape.reduce((a, b) => a * b, 1)], [...entry.shape, 1], [1, ...entry.shape]]); break;
    case 3: (entry as Record<string, unknown>).shape = rng.pick(BAD_VALUES); break;
    case 4: entry.data_offsets = rng.pick([[entry.data_offsets[1]!, entry.data_offsets[0]!], [0, 2 ** 60], [entry.data_offsets[0]!, entry.data_offsets[1]! + 4], [-4, 0]]); break;
    case 5: header[`${name}.renamed`] = entry; delete header[name]; break;
    case 6: delete header[name]; break;
    case 7: (header as Record<string, unknown>).__metadata__ = rng.pick(BAD_VALUES); break;
    default: tail = data.subarray(0, rng.int(data.length)); // truncated data
  }
  const json = Buffer.from(JSON.stringify(header), "utf8");
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(json.length), 0);
  return Buffer.concat([prefix, json, tail]);
}

/** A text file of lines (merges.txt, JSONL): lines dropped, duplicated, swapped, cut, or corrupted. */
export function mutateLines(text: string, rng: Rng): Buffer {
  const lines = text.split("\n");
  for (let k = 1 + rng.int(3); k > 0; k--) {
    const i = rng.int(lines.length);
    const line = lines[i]!;
    switch (rng.int(7)) {
      case 0: lines[i] = line.slice(0, rng.int(line.length + 1)); break;
      case 1: lines[i] = `${line} ${line}`; break;
      case 2: lines[i] = rng.pick(["{", "}", "[]", "null", "42", "\"text\"", "{\"text\": 5}", "{\"instruction\": null, \"output\": \"x\"}", "a b c", "\t"]); break;
      case 3: { const j = rng.int(line.length + 1); lines[i] = line.slice(0, j) + rng.pick(["\"", "\\", "\u0000", "\ud800", "{", ","]) + line.slice(j); break; }
      case 4: lines[i] = line.split("").reverse().join(""); break;
      case 5: lines.splice(i, 0, line); break;
      default: {
        try {
          lines[i] = JSON.stringify(mutateJsonValue(JSON.parse(line), rng));
        } catch {
          lines[i] = line.replace(/\S+/, "");
        }
      }
    }
  }
  return Buffer.from(lines.join("\n"), "utf8");
}
