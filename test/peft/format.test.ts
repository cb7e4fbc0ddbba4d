import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { formatFixed } from "../../lib/io/pyformat.js";
import {
  ADAPTER_CONFIG_NAME,
  ADAPTER_WEIGHTS_NAME,
  adapterPaths,
  adapterStateKey,
  formatTrainableParameters,
  parseAdapterStateKey,
  validateAdapterName,
  type LoraTensorName,
} from "../../lib/peft/format.js";

const FIXTURES = join(import.meta.dirname, "..", "fixtures");
const PEFT_TINY = join(FIXTURES, "peft-tiny");
const format = JSON.parse(readFileSync(join(FIXTURES, "peft-format.json"), "utf8")) as {
  trainable_lines: [number, number, string][];
};
const targets = JSON.parse(readFileSync(join(FIXTURES, "peft-targets.json"), "utf8")) as {
  models: Record<string, { cases: Record<string, { saved_keys?: Record<string, number[]> }> }>;
};

/** Every adapter folder under peft-tiny (a folder holding adapter_model.safetensors). */
function adapterDirs(dir = PEFT_TINY): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (!statSync(p).isDirectory()) continue;
    if (existsSync(join(p, ADAPTER_WEIGHTS_NAME))) out.push(p);
    out.push(...adapterDirs(p));
  }
  return out;
}

/** The tensor names in a safetensors file's header (8-byte little-endian length, then JSON). */
function safetensorsKeys(path: string): string[] {
  const buf = readFileSync(path);
  const len = Number(buf.readBigUInt64LE(0));
  return Object.keys(JSON.parse(buf.subarray(8, 8 + len).toString("utf8"))).filter((k) => k !== "__metadata__");
}

describe("adapter files and folders", () => {
  it("uses PEFT's file names, and <dir>/<name>/ for adapters other than default", () => {
    expect(adapterPaths("/x")).toEqual({ dir: "/x", config: "/x/adapter_config.json", weights: "/x/adapter_model.safetensors" });
    expect(adapterPaths("/x", "second")).toEqual({
      dir: "/x/second",
      config: "/x/second/adapter_config.json",
      weights: "/x/second/adapter_model.safetensors",
    });
    // PEFT's save_pretrained of two adapters wrote exactly this layout
    const two = join(PEFT_TINY, "adapter-two");
    for (const name of ["default", "second"]) {
      const p = adapterPaths(two, name);
      expect(existsSync(p.config), p.config).toBe(true);
      expect(existsSync(p.weights), p.weights).toBe(true);
    }
    expect(ADAPTER_CONFIG_NAME).toBe("adapter_config.json");
  });

  it("refuses adapter names PEFT cannot store or that would escape the folder", () => {
    for (const bad of ["", "a.b", "../x", "a/b", "a\\b"]) expect(() => validateAdapterName(bad)).toThrow(/Adapter name/);
    expect(() => adapterPaths("/x", "my.adapter")).toThrow(/"my_adapter"/);
    expect(() => validateAdapterName("second")).not.toThrow();
  });
});

describe("tensor keys", () => {
  it("builds PEFT's keys for every LoRA tensor", () => {
    const path = "transformer.h.0.attn.c_attn";
    const want: Record<LoraTensorName, string> = {
      lora_A: `base_model.model.${path}.lora_A.weight`,
      lora_B: `base_model.model.${path}.lora_B.weight`,
      "lora_B.bias": `base_model.model.${path}.lora_B.bias`,
      lora_embedding_A: `base_model.model.${path}.lora_embedding_A`,
      lora_embedding_B: `base_model.model.${path}.lora_embedding_B`,
      lora_magnitude_vector: `base_model.model.${path}.lora_magnitude_vector`,
    };
    for (const [tensor, key] of Object.entries(want)) {
      expect(adapterStateKey(path, tensor as LoraTensorName)).toBe(key);
      expect(parseAdapterStateKey(key)).toEqual({ kind: "lora", modulePath: path, tensor });
    }
    expect(() => adapterStateKey("", "lora_A")).toThrow(/module path/);
    expect(() => adapterStateKey("a..b", "lora_A")).toThrow(/empty segment/);
    expect(() => adapterStateKey("a", "lora_C" as LoraTensorName)).toThrow(/unknown LoRA tensor "lora_C"/);
  });

  it("parses every key PEFT saved in the fixtures and rebuilds it", () => {
    const keys = new Set<string>();
    for (const dir of adapterDirs()) for (const k of safetensorsKeys(join(dir, ADAPTER_WEIGHTS_NAME))) keys.add(k);
    for (const model of Object.values(targets.models)) {
      for (const c of Object.values(model.cases)) for (const k of Object.keys(c.saved_keys ?? {})) keys.add(k);
    }
    // the fixtures cover linear/Conv1D, embedding, DoRA and lora_B bias keys
    for (const suffix of ["lora_A.weight", "lora_B.weight", "lora_B.bias", "lora_embedding_A", "lora_embedding_B", "lora_magnitude_vector"]) {
      expect([...keys].some((k) => k.endsWith(suffix)), suffix).toBe(true);
    }
    const baseParams: string[] = [];
    for (const key of keys) {
      const p = parseAdapterStateKey(key);
      if (p.kind === "lora") {
        expect(adapterStateKey(p.modulePath, p.tensor)).toBe(key);
      } else {
        expect(p.baseParam).toBe(p.path.replace(".base_layer", ""));
        baseParams.push(p.baseParam);
      }
    }
    // the full matrix of a targeted output embedding (save_embedding_layers="auto"), and the
    // copies of modules_to_save (modules_to_save=["mlp"]), under their base-model names
    expect(baseParams).toContain("lm_head.weight");
    expect(baseParams).toContain("transformer.h.1.mlp.c_fc.bias");
  });

  it("tolerates keys that still carry the adapter name", () => {
    const base = "base_model.model.transformer.h.1.mlp.c_fc";
    expect(parseAdapterStateKey(`${base}.lora_A.default.weight`)).toEqual({
      kind: "lora", modulePath: "transformer.h.1.mlp.c_fc", tensor: "lora_A", adapterName: "default",
    });
    expect(parseAdapterStateKey(`${base}.lora_B.second.bias`)).toMatchObject({ tensor: "lora_B.bias", adapterName: "second" });
    expect(parseAdapterStateKey(`${base}.lora_embedding_B.x`)).toMatchObject({ tensor: "lora_embedding_B", adapterName: "x" });
    expect(parseAdapterStateKey(`${base}.lora_magnitude_vector.default.weight`)).toMatchObject({
      tensor: "lora_magnitude_vector", adapterName: "default",
    });
    expect(parseAdapterStateKey(`${base}.lora_magnitude_vector.default`)).toMatchObject({ adapterName: "default" });
  });

  it("returns the non-LoRA tensors PEFT also saves, with their base-model names", () => {
    expect(parseAdapterStateKey("base_model.model.transformer.wte.base_layer.weight")).toEqual({
      kind: "base", path: "transformer.wte.base_layer.weight", baseParam: "transformer.wte.weight",
    });
    expect(parseAdapterStateKey("base_model.model.score.weight")).toEqual({ kind: "base", path: "score.weight", baseParam: "score.weight" });
  });

  it("refuses keys PEFT does not write, saying what was expected", () => {
    expect(() => parseAdapterStateKey("transformer.h.0.attn.c_attn.lora_A.weight")).toThrow(/does not start with "base_model\.model\."/);
    expect(() => parseAdapterStateKey("base_model.model.x.lora_C.weight")).toThrow(/"lora_C".*another PEFT method/);
    expect(() => parseAdapterStateKey("base_model.model.x.lora_A.bias")).toThrow(/expected "lora_A\.weight"/);
    expect(() => parseAdapterStateKey("base_model.model.x.lora_A.a.b.weight")).toThrow(/not a LoRA tensor/);
    expect(() => parseAdapterStateKey("base_model.model.x.lora_embedding_A.a.b")).toThrow(/"lora_embedding_A" \(optionally/);
    expect(() => parseAdapterStateKey("base_model.model.lora_A.weight")).toThrow(/no module path/);
    expect(() => parseAdapterStateKey("base_model.model.x..lora_A.weight")).toThrow(/empty path segment/);
  });
});

describe("print_trainable_parameters", () => {
  it("formats print_trainable_parameters lines like PEFT, ties to even included", () => {
    for (const [t, a, line] of format.trainable_lines) expect(formatTrainableParameters(t, a)).toBe(line);
    // the case Number#toFixed gets wrong: 100/3200 = 0.03125 exactly
    expect((0.03125).toFixed(4)).toBe("0.0313");
    expect(formatFixed(0.03125, 4)).toBe("0.0312");
  });

  it("matches every print_trainable_parameters line PEFT printed for the fixtures", () => {
    const lines: { trainable: number; all: number; print_trainable_parameters: string }[] = [];
    for (const dir of adapterDirs()) {
      const ref = join(dir, "reference.json");
      if (!existsSync(ref)) continue;
      const r = JSON.parse(readFileSync(ref, "utf8"));
      if (r.print_trainable_parameters) lines.push(r);
    }
    const m124 = JSON.parse(readFileSync(join(PEFT_TINY, "params-124m.json"), "utf8"));
    lines.push(...(Object.values(m124.cases) as typeof lines));
    expect(lines.length).toBeGreaterThanOrEqual(6);
    for (const l of lines) expect(formatTrainableParameters(l.trainable, l.all)).toBe(l.print_trainable_parameters);
    expect(formatTrainableParameters(294912, 124734720)).toBe(
      "trainable params: 294,912 || all params: 124,734,720 || trainable%: 0.2364",
    );
  });

  it("refuses counts that have no percentage", () => {
    expect(() => formatTrainableParameters(1, 0)).toThrow(/no parameters/);
    expect(() => formatTrainableParameters(5, 4)).toThrow(/exceeds all=4/);
    expect(() => formatTrainableParameters(-1, 4)).toThrow(/non-negative integers; got trainable=-1/);
    expect(() => formatTrainableParameters(1.5, 4)).toThrow(/non-negative integers/);
  });
});
