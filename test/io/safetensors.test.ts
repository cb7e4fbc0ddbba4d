import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { tensor, tidy } from "../../lib/index.js";
import { writeFileAtomic, writeFileAtomicAsync, writeJsonAtomic } from "../../lib/io/atomic.js";
import { decodeF16, f16BitsToF32, f32ToF16Bits } from "../../lib/io/float16.js";
import {
  fromTensor, parseSafetensors, readSafetensors, readShardedSafetensors, serializeSafetensors, toTensor,
  writeSafetensors, writeSafetensorsAsync, type SafetensorsDType, type SafetensorsEntry,
} from "../../lib/io/safetensors.js";
import { prng } from "../helpers.js";

const FIXTURES = join(import.meta.dirname, "..", "fixtures", "safetensors");
type Expected = Record<string, Record<string, { dtype: string; shape: number[]; values: (number | string)[] }>>;
const expected = JSON.parse(readFileSync(join(FIXTURES, "expected.json"), "utf8")) as Expected;
const TORCH_TO_SAFETENSORS: Record<string, SafetensorsDType> = { float32: "F32", float16: "F16", bfloat16: "BF16", int32: "I32", int64: "I64" };

const scratch = mkdtempSync(join(tmpdir(), "lowrank-safetensors-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

const concat = (chunks: Uint8Array[]) => Buffer.concat(chunks);
const fromJsonValue = (v: number | string) => (v === "nan" ? NaN : v === "inf" ? Infinity : v === "-inf" ? -Infinity : (v as number));

/** Values equal bit-for-bit as numbers: NaN equals NaN, and -0 differs from 0. */
function expectSameValues(got: ArrayLike<number>, want: readonly number[]): void {
  expect(got.length).toBe(want.length);
  for (let i = 0; i < want.length; i++) expect(Object.is(got[i], want[i]), `index ${i}: ${got[i]} vs ${want[i]}`).toBe(true);
}

/** A small file in the reference layout, with a hand-written header. */
function fileWithHeader(header: string, dataBytes: number): Buffer {
  const json = Buffer.from(header, "utf8");
  const out = Buffer.alloc(8 + json.length + dataBytes);
  out.writeBigUInt64LE(BigInt(json.length), 0);
  json.copy(out, 8);
  return out;
}

describe("reading Python's safetensors files", () => {
  for (const file of ["f32.safetensors", "f16.safetensors", "bf16.safetensors", "i64.safetensors", "mixed.safetensors"]) {
    it(`reads ${file} exactly as torch does`, () => {
      const st = readSafetensors(join(FIXTURES, file));
      const want = expected[file]!;
      expect(new Set(st.names)).toEqual(new Set(Object.keys(want)));
      tidy(() => {
        for (const entry of st.entries) {
          const w = want[entry.name]!;
          expect(entry.dtype).toBe(TORCH_TO_SAFETENSORS[w.dtype]);
          expect(entry.shape).toEqual(w.shape);
          if (entry.name === "too_big") {
            expect(() => toTensor(entry)).toThrow(/tensor "too_big" is I64 and holds 1099511627776 at flat index 0, outside the int32 range/);
            continue;
          }
          const t = toTensor(entry);
          expect(t.shape).toEqual(w.shape);
          expect(t.dtype).toBe(entry.dtype.startsWith("I") ? "int32" : "float32");
          expect(t.name).toBe(entry.name);
          expectSameValues(t.dataSync(), w.values.map(fromJsonValue));
        }
      });
    });
  }

  it("keeps the metadata, and parses an in-memory buffer into views without copying", () => {
    const bytes = readFileSync(join(FIXTURES, "f32.safetensors"));
    const st = parseSafetensors(bytes, "f32 in memory");
    expect(st.metadata).toEqual({ format: "pt" });
    expect(readSafetensors(join(FIXTURES, "f16.safetensors")).metadata).toEqual({});
    for (const e of st.entries) expect(e.bytes.buffer).toBe(bytes.buffer);
    expect(st.get("weight").shape).toEqual([2, 3]);
    expect(() => st.get("bias")).toThrow(/safetensors: "f32 in memory" has no tensor "bias" \(it has 4: /);
  });

  it("keeps BF16 data bit for bit when asked for bfloat16", () => {
    const entry = readSafetensors(join(FIXTURES, "bf16.safetensors")).get("values");
    tidy(() => {
      const t = toTensor(entry, { dtype: "bfloat16" });
      expect(t.dtype).toBe("bfloat16");
      expect(Buffer.from(fromTensor(t).bytes)).toEqual(Buffer.from(entry.bytes));
    });
  });

  it("reads a sharded checkpoint through its index, in weight_map order", () => {
    const st = readShardedSafetensors(join(FIXTURES, "sharded"));
    expect(st.names).toEqual(["transformer.h.0.ln_1.bias", "transformer.h.0.ln_1.weight", "transformer.ln_f.weight", "transformer.wte.weight"]);
    expect(st.metadata).toEqual({ format: "pt" });
    tidy(() => {
      const wte = expected["sharded/model-00001-of-00002.safetensors"]!["transformer.wte.weight"]!;
      expectSameValues(toTensor(st.get("transformer.wte.weight")).dataSync(), wte.values as number[]);
      expect(Array.from(toTensor(st.get("transformer.h.0.ln_1.bias")).dataSync())).toEqual([0, -0.25]);
    });
  });
});

describe("sharded checkpoint errors", () => {
  function shardedCopy(name: string, editIndex?: (index: { weight_map: Record<string, string> }) => void): string {
    const dir = join(scratch, name);
    mkdirSync(dir);
    for (const f of readdirSync(join(FIXTURES, "sharded"))) copyFileSync(join(FIXTURES, "sharded", f), join(dir, f));
    if (editIndex) {
      const indexPath = join(dir, "model.safetensors.index.json");
      const index = JSON.parse(readFileSync(indexPath, "utf8"));
      editIndex(index);
      writeFileSync(indexPath, JSON.stringify(index));
    }
    return dir;
  }

  it("names a missing shard file", () => {
    const dir = shardedCopy("missing-shard");
    rmSync(join(dir, "model-00002-of-00002.safetensors"));
    expect(() => readShardedSafetensors(dir)).toThrow(/shard file "model-00002-of-00002.safetensors" \(holding "transformer.h.0.ln_1.bias" and 1 more\) is missing/);
  });

  it("names a tensor mapped to a shard that lacks it, and a tensor the index does not list", () => {
    const moved = shardedCopy("wrong-shard", (i) => { i.weight_map["transformer.ln_f.weight"] = "model-00001-of-00002.safetensors"; });
    expect(() => readShardedSafetensors(moved)).toThrow(/weight_map puts "transformer.ln_f.weight" in "model-00001-of-00002.safetensors", but that shard has no such tensor/);
    const unlisted = shardedCopy("unlisted", (i) => { delete i.weight_map["transformer.ln_f.weight"]; });
    expect(() => readShardedSafetensors(unlisted)).toThrow(/shard "model-00002-of-00002.safetensors" holds "transformer.ln_f.weight", which weight_map does not list for it/);
  });

  it("rejects shard paths outside the folder, a missing index and an index that is not JSON", () => {
    const escape = shardedCopy("escape", (i) => { i.weight_map["transformer.ln_f.weight"] = "../model-00002-of-00002.safetensors"; });
    expect(() => readShardedSafetensors(escape)).toThrow(/maps "transformer.ln_f.weight" to "..\/model-00002-of-00002.safetensors"; shards must be file names inside/);
    expect(() => readShardedSafetensors(join(scratch, "nowhere"))).toThrow(/model.safetensors.index.json": ENOENT/);
    const broken = shardedCopy("broken-index");
    writeFileSync(join(broken, "model.safetensors.index.json"), "{\"weight_map\": ");
    expect(() => readShardedSafetensors(broken)).toThrow(/index ".*broken-index.model.safetensors.index.json": not valid JSON/);
    writeFileSync(join(broken, "model.safetensors.index.json"), "[]");
    expect(() => readShardedSafetensors(broken)).toThrow(/expected \{"weight_map": \{tensor name: shard file\}\}/);
  });
});

describe("writing", () => {
  it("writes byte-identical files to Python's safetensors for the same tensors", () => {
    for (const file of ["f32.safetensors", "f16.safetensors", "bf16.safetensors", "i64.safetensors", "mixed.safetensors"]) {
      const original = readFileSync(join(FIXTURES, file));
      const st = parseSafetensors(original, file);
      // Python writes __metadata__ only when it was given; these fixtures have one key or none.
      const metadata = Object.keys(st.metadata).length ? st.metadata : undefined;
      // Reverse the entries so the writer's own ordering is what is tested.
      expect(concat(serializeSafetensors([...st.entries].reverse(), metadata)), file).toEqual(original);
    }
  });

  it("writes lowrank tensors byte-identically to torch's save_file", () => {
    const want = expected["f32.safetensors"]!;
    const path = join(scratch, "from-tensors.safetensors");
    tidy(() => {
      const values = (name: string) => Float32Array.from(want[name]!.values.map(fromJsonValue));
      writeSafetensors(path, {
        weight: tensor(values("weight"), { shape: [2, 3] }),
        specials: tensor(values("specials")),
        scalar: tensor(3.25),
        empty: tensor(new Float32Array(0), { shape: [0, 4] }),
      }, { format: "pt" });
    });
    expect(readFileSync(path)).toEqual(readFileSync(join(FIXTURES, "f32.safetensors")));
  });

  it("round-trips every dtype, 0-d and empty tensors, Unicode names and metadata", async () => {
    const entries: SafetensorsEntry[] = [];
    const bitsPerElement: Record<SafetensorsDType, number> = {
      BOOL: 8, F4: 4, F6_E2M3: 6, F6_E3M2: 6, U8: 8, I8: 8, F8_E5M2: 8, F8_E4M3: 8, F8_E8M0: 8, F8_E4M3FNUZ: 8, F8_E5M2FNUZ: 8,
      I16: 16, U16: 16, F16: 16, BF16: 16, I32: 32, U32: 32, F32: 32, C64: 64, F64: 64, I64: 64, U64: 64,
    };
    for (const [i, [dtype, bits]] of (Object.entries(bitsPerElement) as [SafetensorsDType, number][]).entries()) {
      const bytes = Uint8Array.from({ length: bits }, (_, j) => (i * 31 + j * 7) & 0xff); // 8 elements
      entries.push({ name: `t.${dtype}`, dtype, shape: [4, 2], bytes });
    }
    entries.push({ name: "scalar", dtype: "F32", shape: [], bytes: new Uint8Array(new Float32Array([2.5]).buffer) });
    entries.push({ name: "empty", dtype: "I64", shape: [3, 0, 2], bytes: new Uint8Array(0) });
    entries.push({ name: "naïve 名前 😀\n\"quoted\"", dtype: "U8", shape: [1], bytes: Uint8Array.of(9) });
    const metadata = { format: "pt", "clé": "välue 😀", empty: "" };
    const path = join(scratch, "all-dtypes.safetensors");
    await writeSafetensorsAsync(path, entries, metadata);
    const back = readSafetensors(path);
    expect(back.metadata).toEqual(metadata);
    expect(back.entries).toHaveLength(entries.length);
    for (const e of entries) {
      const got = back.get(e.name);
      expect(got.dtype).toBe(e.dtype);
      expect(got.shape).toEqual(e.shape);
      expect(Buffer.from(got.bytes)).toEqual(Buffer.from(e.bytes));
    }
    // The header is padded with spaces to 8 bytes, so the data section starts aligned.
    const raw = readFileSync(path);
    const n = Number(raw.readBigUInt64LE(0));
    expect(n % 8).toBe(0);
    expect(raw.subarray(8, 8 + n).toString("utf8")).toMatch(/^\{"__metadata__":\{"format":"pt","clé":"välue 😀","empty":""\},"t.U64":.* *$/);
  });

  it("round-trips float32, bfloat16 and int32 tensors, and stores floats as F16 and BF16 on request", () => {
    const path = join(scratch, "tensors.safetensors");
    tidy(() => {
      const f = tensor([[1.5, -2.25, 3], [0, -0, 1e-3]]);
      const b = tensor([0.1, -7, 1e30]).to("cpu", "bfloat16");
      const i = tensor(new Int32Array([1, -2, 2147483647]), { shape: [3, 1] });
      // A transposed view is written in its logical (row-major) order.
      writeSafetensors(path, { f, b, i, ft: f.transpose(0, 1), half: fromTensor(f, "F16"), brain: fromTensor(f, "BF16") });
      const st = readSafetensors(path);
      expect(st.get("f").dtype).toBe("F32");
      expect(st.get("b").dtype).toBe("BF16");
      expect(st.get("i").dtype).toBe("I32");
      expectSameValues(toTensor(st.get("f")).dataSync(), Array.from(f.dataSync()));
      expectSameValues(toTensor(st.get("ft")).dataSync(), Array.from(f.transpose(0, 1).contiguous().dataSync()));
      expect(toTensor(st.get("b"), { dtype: "bfloat16" }).dtype).toBe("bfloat16");
      expectSameValues(toTensor(st.get("b")).dataSync(), Array.from(b.dataSync()));
      expect(toTensor(st.get("i")).toArray()).toEqual([[1], [-2], [2147483647]]);
      expectSameValues(toTensor(st.get("half")).dataSync(), [1.5, -2.25, 3, 0, -0, f16BitsToF32(f32ToF16Bits(1e-3))]);
      expectSameValues(toTensor(st.get("brain")).dataSync(), Array.from(f.to("cpu", "bfloat16").dataSync()));
      expect(() => fromTensor(i, "F32")).toThrow(/fromTensor: cannot store a int32 tensor \[3, 1\] as F32; convert it with .to\(device, dtype\) first/);
    });
  });

  it("rejects bad entries with the tensor's name", () => {
    const bytes = new Uint8Array(4);
    expect(() => serializeSafetensors([{ name: "w", dtype: "F32", shape: [2], bytes }])).toThrow(/tensor "w": shape \[2\] of F32 needs 8 bytes, but 4 were given/);
    expect(() => serializeSafetensors([{ name: "w", dtype: "F4", shape: [3], bytes }])).toThrow(/tensor "w": shape \[3\] of F4 needs 1.5 bytes/);
    expect(() => serializeSafetensors([{ name: "w", dtype: "F31" as never, shape: [1], bytes }])).toThrow(/tensor "w": unknown dtype "F31"/);
    expect(() => serializeSafetensors([{ name: "w", dtype: "F32", shape: [-1], bytes }])).toThrow(/tensor "w": shape \[-1\] must be a list of non-negative integers/);
    expect(() => serializeSafetensors([{ name: "w", dtype: "F32", shape: [1], bytes }, { name: "w", dtype: "F32", shape: [1], bytes }])).toThrow(/tensor "w": the name is given twice/);
    expect(() => serializeSafetensors({ __metadata__: { dtype: "F32", shape: [1], bytes } })).toThrow(/"__metadata__" is reserved/);
    expect(() => serializeSafetensors({ "bad\ud800": { dtype: "F32", shape: [1], bytes } })).toThrow(/unpaired UTF-16 surrogate/);
    expect(() => serializeSafetensors({}, { n: 1 as never })).toThrow(/metadata "n" must map to a well-formed string, got number/);
  });

  it("writes Python's layout for an empty file", () => {
    expect(concat(serializeSafetensors({}))).toEqual(Buffer.from([8, 0, 0, 0, 0, 0, 0, 0, 123, 125, 32, 32, 32, 32, 32, 32]));
  });
});

describe("float16", () => {
  it("decodes and re-encodes all 65536 half values exactly", () => {
    const all = Uint16Array.from({ length: 65536 }, (_, i) => i);
    const values = decodeF16(all);
    for (let h = 0; h < 65536; h++) {
      const v = values[h]!;
      if (Number.isNaN(v)) {
        expect((h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0).toBe(true);
        expect(f32ToF16Bits(v) & 0x7e00).toBe(0x7e00); // a quiet NaN
      } else if (f32ToF16Bits(v) !== h) {
        throw new Error(`half 0x${h.toString(16)} -> ${v} -> 0x${f32ToF16Bits(v).toString(16)}`);
      }
    }
    expect(values[0x0001]).toBe(2 ** -24);
    expect(values[0x03ff]).toBe(1023 * 2 ** -24);
    expect(values[0x7bff]).toBe(65504);
    expect(Object.is(values[0x8000], -0)).toBe(true);
  });

  it("rounds to nearest even, overflows to Inf from 65520, and underflows to subnormals and zero", () => {
    expect(f32ToF16Bits(1 + 2 ** -11)).toBe(0x3c00); // halfway between 1 and the next half: even is 1
    expect(f32ToF16Bits(1 + 3 * 2 ** -11)).toBe(0x3c02); // halfway, rounds up to the even neighbour
    expect(f32ToF16Bits(1 + 2 ** -11 + 2 ** -20)).toBe(0x3c01);
    expect(f32ToF16Bits(65519)).toBe(0x7bff);
    expect(f32ToF16Bits(65520)).toBe(0x7c00);
    expect(f32ToF16Bits(-1e9)).toBe(0xfc00);
    expect(f32ToF16Bits(2 ** -25)).toBe(0x0000); // exactly half the smallest subnormal: ties to even (0)
    expect(f32ToF16Bits(2 ** -25 * 1.5)).toBe(0x0001);
    expect(f32ToF16Bits(3 * 2 ** -25)).toBe(0x0002); // 1.5 subnormal units: ties to even (2)
    expect(f32ToF16Bits(2 ** -14 - 2 ** -26)).toBe(0x0400); // rounds up into the normal range
    expect(f32ToF16Bits(-1e-30)).toBe(0x8000);
  });
});

describe("validation", () => {
  const valid = (extra = "") => `{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}${extra}}`;
  const cases: [string, Buffer, RegExp][] = [
    ["a file shorter than 8 bytes", Buffer.from([1, 2, 3]), /has 3 bytes, fewer than the 8-byte header length/],
    ["a header length past the end", (() => { const b = fileWithHeader(valid(), 8); b.writeBigUInt64LE(1000n, 0); return b; })(), /header length 1000 runs past the end of the \d+-byte file/],
    ["a header length of 2^63", (() => { const b = fileWithHeader(valid(), 8); b.writeBigUInt64LE(2n ** 63n, 0); return b; })(), /header length 9223372036854775808 exceeds the 100000000-byte limit/],
    ["invalid UTF-8", Buffer.from([7, 0, 0, 0, 0, 0, 0, 0, 0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d]), /the header is not valid UTF-8/],
    ["a BOM", fileWithHeader(`\ufeff${valid()}`, 8), /not valid JSON: unexpected character U\+FEFF at character 0/],
    ["non-JSON", fileWithHeader("{nope}", 0), /not valid JSON: expected a string key at character 1/],
    ["trailing text", fileWithHeader(`${valid()}x`, 8), /unexpected text after the JSON value/],
    ["a header that is not an object", fileWithHeader("[1,2]", 0), /the header must be a JSON object, got an array/],
    ["deep nesting", fileWithHeader(`{"a":${"[".repeat(100_000)}}`, 0), /nesting deeper than 64 levels/],
    ["an unknown dtype", fileWithHeader(`{"w":{"dtype":"F31","shape":[1],"data_offsets":[0,4]}}`, 4), /tensor "w": unknown dtype "F31"; safetensors dtypes are BOOL, F4/],
    ["a lowercase dtype", fileWithHeader(`{"w":{"dtype":"f32","shape":[1],"data_offsets":[0,4]}}`, 4), /tensor "w": unknown dtype "f32"/],
    ["a negative size", fileWithHeader(`{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}`, 4), /tensor "w": shape must be an array of integers in \[0, 2\^53\), got \[-1\]/],
    ["a fractional size", fileWithHeader(`{"w":{"dtype":"F32","shape":[1.0],"data_offsets":[0,4]}}`, 4), /tensor "w": shape must be .*, got \[1\]/],
    ["a huge size", fileWithHeader(`{"w":{"dtype":"F32","shape":[18446744073709551617],"data_offsets":[0,4]}}`, 4), /got \[18446744073709551617\]/],
    ["a shape that is not an array", fileWithHeader(`{"w":{"dtype":"F32","shape":"1","data_offsets":[0,4]}}`, 4), /tensor "w": shape must be .*, got "1"/],
    ["three offsets", fileWithHeader(`{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4,4]}}`, 4), /tensor "w": data_offsets must be \[begin, end\]/],
    ["a missing field", fileWithHeader(`{"w":{"dtype":"F32","shape":[1]}}`, 4), /tensor "w": data_offsets must be .*, got nothing/],
    ["a tensor that is not an object", fileWithHeader(`{"w":7}`, 0), /tensor "w": expected an object with dtype, shape and data_offsets/],
    ["a shape that disagrees with the bytes", fileWithHeader(`{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, 8), /tensor "w": shape \[3\] of F32 needs 12 bytes, but data_offsets \[0, 8\] hold 8/],
    ["overflowing shapes", fileWithHeader(`{"w":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8]}}`, 8), /needs 147573952589676412928 bytes/],
    ["a partial byte", fileWithHeader(`{"w":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}`, 2), /shape \[3\] of F4 is not a whole number of bytes/],
    ["reversed offsets", fileWithHeader(`{"w":{"dtype":"F32","shape":[0],"data_offsets":[4,0]}}`, 4), /data_offsets \[4, 0\] end before they begin/],
    ["a range past the data", fileWithHeader(`{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}`, 8), /tensor "w": data_offsets \[0, 16\] run past the end of the 8-byte data section/],
    ["overlapping ranges", fileWithHeader(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, 8), /tensor "b": data_offsets \[4, 8\] overlap tensor "a", which ends at 8/],
    ["a hole", fileWithHeader(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, 8), /tensor "a": data_offsets \[4, 8\] leave bytes 0..4 of the data section unused/],
    ["trailing data", fileWithHeader(valid(), 12), /the tensors cover 8 bytes, but the data section has 12/],
    ["a duplicate name", fileWithHeader(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, 8), /duplicate key "a" at character/],
    ["non-string metadata", fileWithHeader(valid(`,"__metadata__":{"n":1}`), 8), /__metadata__ entry "n" must be a string, got 1/],
    ["a lone surrogate escape", fileWithHeader(`{"\\ud800":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}`, 0), /unpaired UTF-16 surrogate escape/],
    ["a raw control character", fileWithHeader(`{"a\nb":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}`, 0), /control character in string/],
  ];
  for (const [what, bytes, message] of cases) {
    it(`rejects ${what} with a one-line error naming the file`, () => {
      let error: unknown;
      try {
        parseSafetensors(bytes, "bad.safetensors");
      } catch (err) {
        error = err;
      }
      expect(error).toBeInstanceOf(Error);
      const msg = (error as Error).message;
      expect(msg).toMatch(/^safetensors: "bad.safetensors" is not a valid safetensors file: /);
      expect(msg).toMatch(message);
      expect(msg).not.toContain("\n");
    });
  }

  it("accepts what the reference reader accepts: whitespace, unknown fields, null metadata, empty tensors at one offset", () => {
    const st = parseSafetensors(fileWithHeader(`  {"__metadata__":null,"b":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},"e":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},` +
      `"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"extra":[1,{"x":null}]}}\t\n `, 4), "ok");
    expect(st.names).toEqual(["e", "a", "b"]);
    expect(st.metadata).toEqual({});
  });

  it("reports files that cannot be opened, naming them", () => {
    expect(() => readSafetensors(join(scratch, "absent.safetensors"))).toThrow(/safetensors: cannot open ".*absent.safetensors": ENOENT/);
    const short = join(scratch, "short.safetensors");
    writeFileSync(short, Buffer.from([4, 0, 0]));
    expect(() => readSafetensors(short)).toThrow(/short.safetensors" is not a valid safetensors file: the file has 3 bytes/);
  });
});

describe("fuzzing", () => {

  it("turns hundreds of corrupted files into valid entries or one clear Error, without huge allocations", () => {
    const rand = prng(20240611);
    const int = (n: number) => Math.floor(rand() * n);
    const bases = ["f32.safetensors", "f16.safetensors", "mixed.safetensors", "i64.safetensors"].map((f) => readFileSync(join(FIXTURES, f)));
    const headerEdits: ((h: string) => string)[] = [
      (h) => h.replace(/\d+/g, (d) => (rand() < 0.3 ? String(Number(d) + int(9) - 4) : d)),
      (h) => h.replace(/"(F32|F16|BF16|I64|I32)"/, () => ["\"F31\"", "\"f32\"", "\"\"", "null", "7", "\"BOOL\"", "\"F4\""][int(7)]!),
      (h) => h.replace(/"data_offsets":\[(\d+),(\d+)\]/, (_m, a, b) => `"data_offsets":[${b},${a}]`),
      (h) => h.replace(/"shape":\[[^\]]*\]/, () => ["\"shape\":[18446744073709551616]", "\"shape\":[-1]", "\"shape\":[1e3]", "\"shape\":{}", "\"shape\":[2,2,2,2,2,2]"][int(5)]!),
      (h) => h.replace(/\}$/, () => [",\"__metadata__\":[]}", ",\"x\":{}}", ",}", "}}", "" ][int(5)]!),
      (h) => { const at = int(h.length); return h.slice(0, at) + "{[\"\\:,]}"[int(8)] + h.slice(at); },
      (h) => { const at = int(h.length); return h.slice(0, at) + h.slice(at + 1 + int(4)); },
      (h) => "[".repeat(1 + int(5000)) + h,
    ];
    let parsed = 0, rejected = 0;
    const arrayBuffersBefore = process.memoryUsage().arrayBuffers;
    for (let i = 0; i < 600; i++) {
      const base = bases[int(bases.length)]!;
      let bytes: Buffer;
      const kind = i % 6;
      if (kind === 0) {
        bytes = base.subarray(0, int(base.length + 1)); // truncation
      } else if (kind === 1) {
        bytes = Buffer.from(base);
        for (let k = 1 + int(4); k > 0; k--) bytes[int(Math.min(bytes.length, 8 + 64))] ^= 1 << int(8); // flips in length and header start
      } else if (kind === 2) {
        bytes = Buffer.from(base);
        const n = Number(bytes.readBigUInt64LE(0));
        const bogus = [2n ** 63n, 2n ** 64n - 1n, BigInt(n + 1), BigInt(Math.max(0, n - 1)), 0n, BigInt(bytes.length), 100_000_001n, BigInt(int(bytes.length))][int(8)]!;
        bytes.writeBigUInt64LE(bogus, 0);
      } else if (kind === 3 || kind === 4) {
        const n = Number(base.readBigUInt64LE(0));
        let header = base.subarray(8, 8 + n).toString("utf8");
        for (let k = 1 + int(3); k > 0; k--) header = headerEdits[int(headerEdits.length)]!(header);
        const json = Buffer.from(header, "utf8");
        const prefix = Buffer.alloc(8);
        prefix.writeBigUInt64LE(BigInt(json.length), 0);
        bytes = Buffer.concat([prefix, json, base.subarray(8 + n, 8 + n + int(base.length))]);
      } else {
        bytes = Buffer.from(base);
        for (let k = 1 + int(8); k > 0; k--) bytes[int(bytes.length)] = int(256); // anywhere, data included
      }
      try {
        const st = parseSafetensors(bytes, `fuzz#${i}`);
        parsed++;
        // Whatever parses must be self-consistent: entries tile the data section exactly.
        const dataLength = bytes.length - 8 - Number(bytes.readBigUInt64LE(0));
        expect(st.entries.reduce((sum, e) => sum + e.bytes.byteLength, 0)).toBe(dataLength);
      } catch (err) {
        rejected++;
        expect(err).toBeInstanceOf(Error);
        const msg = (err as Error).message;
        expect(msg.startsWith(`safetensors: "fuzz#${i}" is not a valid safetensors file: `), msg).toBe(true);
        expect(msg).not.toContain("\n");
      }
    }
    expect(parsed + rejected).toBe(600);
    expect(rejected).toBeGreaterThan(300);
    expect(parsed).toBeGreaterThan(20); // flips in the data section leave a valid file
    expect(process.memoryUsage().arrayBuffers - arrayBuffersBefore).toBeLessThan(64 * 2 ** 20);
  });
});

describe("atomic writes", () => {
  it("replaces a file whole, writes JSON with a trailing newline, and leaves no temporary files", async () => {
    const dir = join(scratch, "atomic");
    mkdirSync(dir);
    const path = join(dir, "config.json");
    writeJsonAtomic(path, { r: 8, target_modules: ["c_attn"] });
    expect(readFileSync(path, "utf8")).toBe('{\n  "r": 8,\n  "target_modules": [\n    "c_attn"\n  ]\n}\n');
    writeFileAtomic(path, [Buffer.from("ab"), Buffer.from("cd")]);
    expect(readFileSync(path, "utf8")).toBe("abcd");
    await writeFileAtomicAsync(path, "async text");
    expect(readFileSync(path, "utf8")).toBe("async text");
    expect(readdirSync(dir)).toEqual(["config.json"]);
  });

  it("cleans up and names the target when the write fails", async () => {
    const dir = join(scratch, "atomic-fail");
    mkdirSync(dir);
    // Renaming a file over a non-empty directory fails after the data was written.
    mkdirSync(join(dir, "target"));
    writeFileSync(join(dir, "target", "keep"), "x");
    const target = join(dir, "target");
    expect(() => writeFileAtomic(target, "data")).toThrow(`cannot write ${target}: ${target} is a folder, not a file (EISDIR)`);
    await expect(writeFileAtomicAsync(target, "data")).rejects.toThrow(`cannot write ${target}: ${target} is a folder, not a file (EISDIR)`);
    expect(readdirSync(dir)).toEqual(["target"]);
    const missing = join(dir, "no-such-dir", "f.json");
    expect(() => writeFileAtomic(missing, "x")).toThrow(`cannot write ${missing}: the folder ${join(dir, "no-such-dir")} does not exist (ENOENT)`);
    writeFileSync(join(dir, "a-file"), "x");
    const under = join(dir, "a-file", "f.json");
    expect(() => writeFileAtomic(under, "x")).toThrow(`cannot write ${under}: ${join(dir, "a-file")} is a file, not a folder (ENOTDIR)`);
    expect(() => writeJsonAtomic(join(dir, "u.json"), undefined)).toThrow(/the value is not JSON-serializable/);
  });
});
