// PeftModel: a base model with LoRA layers injected by name, PEFT-style. Its module tree is PEFT's
// (`base_model.model.<path>`), so named parameters, saved keys and parameter counts read as in
// Python; adapters save to and load from PEFT's on-disk format.
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { writeFileAtomic } from "../io/atomic.js";
import { readSafetensors, toTensor, writeSafetensors } from "../io/safetensors.js";
import { Conv1D, Embedding, Linear } from "../nn/layers.js";
import { Module } from "../nn/module.js";
import { Generator } from "../tensor/random.js";
import { copyInto, formatShape, noGrad, type Tensor } from "../tensor/tensor.js";
import { emitLowrankWarning, LoraConfig, type WarningHandler } from "./config.js";
import {
  adapterPaths, adapterStateKey, DEFAULT_ADAPTER_NAME, formatTrainableParameters, parseAdapterStateKey, PEFT_KEY_PREFIX, validateAdapterName,
} from "./format.js";
import { isBaseMutatingInit } from "./init.js";
import { LoraEmbedding, LoraLinear, wrapWithLora, type AdapterSpec, type LoraLayer } from "./layer.js";
import { findModulesToSave, ModulesToSaveWrapper } from "./modules-to-save.js";
import type { ModuleInfo, ModuleKind } from "../nn/shapes.js";
import { planInjection } from "./targets.js";
import { addWeightedAdapter, type WeightedAdapterOptions } from "./weighted.js";

/** What a wrapped model must offer: a module tree and a forward pass. */
export interface BaseModel extends Module {
  forward(...args: never[]): unknown;
  /** config.json's model_type (e.g. "gpt2") picks PEFT's default target modules. */
  readonly config?: { toHF?(): Record<string, unknown> };
}

export interface PeftOptions {
  /** Random stream for adapter init and LoRA dropout (default: a Generator seeded with 0). */
  generator?: Generator;
  onWarning?: WarningHandler;
}

/** LoraModel: holds the base model as `model`, so parameter paths read base_model.model.<path>. */
export class LoraModel extends Module {
  declare model: BaseModel;
  constructor(model: BaseModel) {
    super();
    this.registerModule("model", model);
  }
}

function moduleKind(m: Module): ModuleKind {
  if (m instanceof Linear) return "linear";
  if (m instanceof Conv1D) return "conv1d";
  if (m instanceof Embedding) return "embedding";
  return "other";
}

function modelType(model: BaseModel): string | undefined {
  const t = model.config?.toHF?.().model_type;
  return typeof t === "string" ? t : undefined;
}

/** Module paths that belong to adapter machinery rather than to the model: never targets themselves. */
const ADAPTER_INTERNALS = /(^|\.)(base_layer|lora_A|lora_B|lora_embedding_A|lora_embedding_B|lora_magnitude_vector|original_module|modules_to_save)(\.|$)/;

export class PeftModel<M extends BaseModel = BaseModel> extends Module {
  declare base_model: LoraModel;
  /** Each adapter's config as it is saved (after target expansion). */
  readonly peftConfig = new Map<string, LoraConfig>();
  /** The adapter forward uses (PEFT's PeftModel has exactly one). */
  activeAdapter: string;
  /** The wrapped layers by path in the base model. */
  readonly loraLayers = new Map<string, LoraLayer>();
  /** The modules trained in full (LoraConfig.modulesToSave), by path in the base model. */
  readonly modulesToSave = new Map<string, ModulesToSaveWrapper>();
  private readonly generator: Generator;
  private readonly warn: WarningHandler;

  constructor(model: M, config: LoraConfig, adapterName = DEFAULT_ADAPTER_NAME, opts: PeftOptions = {}) {
    super();
    this.registerModule("base_model", new LoraModel(model));
    this.generator = opts.generator ?? new Generator(0);
    this.warn = opts.onWarning ?? emitLowrankWarning;
    this.activeAdapter = adapterName;
    model.requiresGrad_(false);
    this.addAdapter(adapterName, config);
    this.setAdapter(adapterName);
  }

  /** The base model (with LoRA layers inside). */
  get model(): M {
    return this.base_model.model as M;
  }

  /** Runs the base model; the LoRA layers add their adapters. */
  forward(...args: Parameters<M["forward"]>): ReturnType<M["forward"]> {
    return (this.model.forward as (...a: unknown[]) => ReturnType<M["forward"]>)(...args);
  }

  // ---- adapters -------------------------------------------------------------------------------

  /** Injects a new adapter (inactive until setAdapter, like PEFT's add_adapter). */
  addAdapter(name: string, config: LoraConfig): void {
    validateAdapterName(name);
    if (this.peftConfig.has(name)) throw new Error(`addAdapter: an adapter named "${name}" already exists; pick another name or deleteAdapter first`);
    // PEFT matches against the unwrapped names: a wrapped layer's inner base_layer is not a new target.
    const modules: ModuleInfo[] = this.model
      .namedModules()
      .filter(([path]) => path !== "" && !ADAPTER_INTERNALS.test(path))
      .map(([path, m]) => ({ name: path, kind: m instanceof LoraLinear || m instanceof LoraEmbedding ? moduleKind(m.base_layer) : moduleKind(m) }));
    const plan = planInjection(modules, config, { modelType: modelType(this.model), onWarning: this.warn });
    const mutating = [config, ...this.peftConfig.values()].find((c) => isBaseMutatingInit(c.initLoraWeights));
    if (mutating && this.peftConfig.size > 0) {
      this.warn(
        `initLoraWeights "${String(mutating.initLoraWeights)}" changes the base weights of the model and should thus not be used with ` +
          "other adapters (PEFT warns the same): the others would run on the rewritten base.",
      );
    }
    for (const path of plan.targets) {
      let layer = this.loraLayers.get(path);
      if (!layer) {
        const wrapped = wrapWithLora(this.model.getSubmodule(path));
        if (!wrapped) throw new Error(`addAdapter: module ${path} cannot carry LoRA`);
        this.model.setSubmodule(path, wrapped);
        this.loraLayers.set(path, wrapped);
        layer = wrapped;
      }
      const spec: AdapterSpec = {
        r: plan.config.rankFor(path), alpha: plan.config.alphaFor(path), scaling: plan.config.scalingFor(path),
        dropout: plan.config.loraDropout, init: plan.config.initLoraWeights, useDora: plan.config.useDora, generator: this.generator,
      };
      layer.addAdapter(name, spec);
      for (const p of layer.parametersOf(name)) p.requiresGrad = false;
    }
    this.peftConfig.set(name, plan.config);
    this.applyBiasMode(name, plan.config);
    this.addModulesToSave(name, plan.config, modules.map((m) => m.name));
  }

  /** Gives adapter `name` its trainable copies of config.modulesToSave (PEFT's _set_trainable), inactive. */
  private addModulesToSave(name: string, config: LoraConfig, paths: readonly string[]): void {
    const entries = config.modulesToSave ?? [];
    for (const path of findModulesToSave(paths, entries)) {
      let wrapper = this.modulesToSave.get(path);
      if (!wrapper) {
        wrapper = new ModulesToSaveWrapper(this.model.getSubmodule(path));
        this.model.setSubmodule(path, wrapper);
        this.modulesToSave.set(path, wrapper);
      }
      wrapper.addAdapter(name);
    }
    const unmatched = entries.filter((e) => !paths.some((p) => p.endsWith(e)));
    if (unmatched.length > 0) {
      this.warn(`modulesToSave entries ${JSON.stringify(unmatched)} match no module of the model (a module matches when its full name ends with the entry); they are ignored, as in PEFT.`);
    }
  }

  /**
   * Adds adapter `adapterName` made from existing ones (PEFT's add_weighted_adapter): "linear"
   * (equal ranks; A and B are weighted sums), "cat" (rank Σr, exact) or "svd" (the truncated SVD
   * of Σ wᵢ·sᵢ·Bᵢ·Aᵢ per layer). The new adapter has loraAlpha = r and is not active. See weighted.ts.
   */
  addWeightedAdapter(adapters: readonly string[], weights: readonly number[], adapterName: string, opts: WeightedAdapterOptions = {}): void {
    addWeightedAdapter(this, adapters, weights, adapterName, opts, this.warn);
  }

  /**
   * Makes `names` the adapters forward uses (their outputs are summed) and the only trainable ones
   * (PEFT's set_adapter; PeftModel takes one name, LoraModel a list).
   */
  setAdapter(names: string | readonly string[]): void {
    const list = typeof names === "string" ? [names] : [...names];
    for (const name of list) {
      if (!this.peftConfig.has(name)) throw new Error(`setAdapter: unknown adapter "${name}"; adapters: ${[...this.peftConfig.keys()].join(", ")}`);
    }
    // A module trained in full can run only one adapter's copy (PEFT refuses several too).
    const activeCopies = [...this.modulesToSave].map(([path, w]) => [path, list.filter((n) => w.adapterNames.includes(n))] as const);
    const clash = activeCopies.find(([, names]) => names.length > 1);
    if (clash) throw new Error(`setAdapter: adapters ${clash[1].join(", ")} each have their own copy of ${clash[0]} (modulesToSave); only one of them can be active`);
    this.activeAdapter = list[0]!;
    for (const layer of this.loraLayers.values()) {
      layer.activeAdapters = list.filter((n) => layer.specs.has(n));
      for (const other of layer.adapterNames) {
        const trainable = list.includes(other) && !this.peftConfig.get(other)!.inferenceMode;
        for (const p of layer.parametersOf(other)) p.requiresGrad = trainable;
      }
    }
    for (const [path, names] of activeCopies) {
      const active = names[0] ?? null;
      this.modulesToSave.get(path)!.setAdapter(active, active !== null && !this.peftConfig.get(active)!.inferenceMode);
    }
  }

  /** Removes an adapter; refused while it is merged. */
  deleteAdapter(name: string): void {
    if (!this.peftConfig.has(name)) throw new Error(`deleteAdapter: unknown adapter "${name}"`);
    const merged = [...this.loraLayers.values()].some((l) => l.merged.includes(name));
    if (merged) throw new Error(`Cannot delete adapter(s) ['${name}'] while they are merged. Please unmerge them first.`);
    for (const layer of this.loraLayers.values()) if (layer.specs.has(name)) layer.deleteAdapter(name);
    for (const wrapper of this.modulesToSave.values()) wrapper.deleteAdapter(name);
    this.peftConfig.delete(name);
    if (this.activeAdapter === name) this.activeAdapter = [...this.peftConfig.keys()][0] ?? "";
  }

  get adapters(): string[] {
    return [...this.peftConfig.keys()];
  }

  /** bias "all": every bias trains; "lora_only": the biases of the wrapped layers train. */
  private applyBiasMode(name: string, config: LoraConfig): void {
    if (config.bias === "none") return;
    const others = [...this.peftConfig.entries()].filter(([n, c]) => n !== name && c.bias !== "none");
    if (others.length > 0) throw new Error(`LoraConfig: only one adapter may train biases (bias="${config.bias}"); "${others[0]![0]}" already does`);
    if (config.bias === "all") {
      for (const [n, p] of this.model.namedParameters()) if (n === "bias" || n.endsWith(".bias")) p.requiresGrad = true;
    } else {
      for (const layer of this.loraLayers.values()) {
        const b = (layer.base_layer as { bias?: Tensor | null }).bias;
        if (b) b.requiresGrad = true;
      }
    }
  }

  // ---- parameters -----------------------------------------------------------------------------

  /** [trainable, all] parameter counts, adapters included (PEFT's get_nb_trainable_parameters). */
  getNbTrainableParameters(): [number, number] {
    let trainable = 0, all = 0;
    for (const p of this.parameters()) {
      all += p.size;
      if (p.requiresGrad) trainable += p.size;
    }
    return [trainable, all];
  }

  /** PEFT's line: `trainable params: 294,912 || all params: 124,734,720 || trainable%: 0.2364`. */
  trainableParametersLine(): string {
    const [t, a] = this.getNbTrainableParameters();
    return formatTrainableParameters(t, a);
  }

  printTrainableParameters(): void {
    console.log(this.trainableParametersLine());
  }

  /** The tensors an optimizer should update. */
  trainableParameters(): Tensor[] {
    return this.parameters().filter((p) => p.requiresGrad);
  }

  // ---- merging --------------------------------------------------------------------------------

  /** Folds the active adapter into the base weights (kept separately, so unmergeAdapter restores them). */
  mergeAdapter(opts: { safeMerge?: boolean; adapterNames?: string[] } = {}): void {
    const names = opts.adapterNames ?? [this.activeAdapter];
    const layers = [...this.loraLayers.values()];
    const done: LoraLayer[] = [];
    try {
      for (const layer of layers) {
        layer.merge(names.filter((n) => layer.specs.has(n)), { safe: opts.safeMerge });
        done.push(layer);
      }
    } catch (err) {
      // A refused safe merge leaves the model as it was: undo the layers already merged.
      for (const layer of done) layer.unmerge();
      throw err;
    }
  }

  unmergeAdapter(): void {
    for (const layer of this.loraLayers.values()) layer.unmerge();
  }

  /** Runs fn with the adapters off (base model only), then restores them (PEFT's disable_adapter()). */
  disableAdapter<T>(fn: () => T): T {
    const layers = [...this.loraLayers.values(), ...this.modulesToSave.values()];
    layers.forEach((l) => (l.disabled = true));
    try {
      return fn();
    } finally {
      layers.forEach((l) => (l.disabled = false));
    }
  }

  /**
   * Merges the active adapter (unless `merge` is false) and returns the bare base model with its
   * original layers back in place; the adapters are freed. A module in modulesToSave is replaced by
   * the active adapter's trained copy (also by unload(), as in PEFT). The PeftModel is unusable afterwards.
   */
  mergeAndUnload(opts: { safeMerge?: boolean; merge?: boolean } = {}): M {
    if (opts.merge !== false) this.mergeAdapter({ safeMerge: opts.safeMerge });
    const model = this.model;
    for (const [path, layer] of this.loraLayers) {
      const base = layer.base_layer;
      for (const name of layer.adapterNames) for (const p of layer.parametersOf(name)) p.dispose();
      layer.registerModule("base_layer", null);
      model.setSubmodule(path, base);
    }
    for (const [path, wrapper] of this.modulesToSave) {
      const kept = wrapper.current;
      for (const m of [wrapper.original_module, ...wrapper.modules_to_save.children()]) if (m !== kept) m.dispose();
      wrapper.registerModule("original_module", null);
      wrapper.registerModule("modules_to_save", null);
      model.setSubmodule(path, kept);
    }
    this.modulesToSave.clear();
    this.loraLayers.clear();
    this.peftConfig.clear();
    this.base_model.registerModule("model", null);
    return model;
  }

  /** The base model with its original layers and without merging (PEFT's unload()). */
  unload(): M {
    this.unmergeAdapter();
    return this.mergeAndUnload({ merge: false });
  }

  // ---- saving and loading ---------------------------------------------------------------------

  /** The adapter's tensors under PEFT's saved keys (adapter name stripped). */
  adapterStateDict(name = this.activeAdapter): Record<string, Tensor> {
    const config = this.peftConfig.get(name);
    if (!config) throw new Error(`adapterStateDict: unknown adapter "${name}"`);
    const out: Record<string, Tensor> = {};
    for (const [path, layer] of this.loraLayers) {
      if (!layer.specs.has(name)) continue;
      const [A, B] = layer.parametersOf(name) as [Tensor, Tensor];
      const emb = layer instanceof LoraEmbedding;
      out[adapterStateKey(path, emb ? "lora_embedding_A" : "lora_A")] = A;
      out[adapterStateKey(path, emb ? "lora_embedding_B" : "lora_B")] = B;
      const magnitude = layer instanceof LoraLinear ? layer.magnitude(name) : undefined;
      if (magnitude) out[adapterStateKey(path, "lora_magnitude_vector")] = magnitude;
    }
    // modules trained in full: saved under the module's own name, without the wrapper's segments
    for (const [path, wrapper] of this.modulesToSave) {
      for (const [param, t] of wrapper.adapterState(name)) out[`${PEFT_KEY_PREFIX}${path}.${param}`] = t;
    }
    if (config.bias !== "none") {
      for (const [n, p] of this.model.namedParameters()) {
        if (!n.endsWith(".bias") || !p.requiresGrad) continue;
        out[`base_model.model.${n}`] = p;
      }
    }
    return out;
  }

  /** Writes adapter_config.json and adapter_model.safetensors (float32) in PEFT's layout; atomic. */
  savePretrained(dir: string, opts: { adapterNames?: string[]; baseModelNameOrPath?: string } = {}): void {
    for (const name of opts.adapterNames ?? this.adapters) {
      const paths = adapterPaths(dir, name);
      mkdirSync(paths.dir, { recursive: true });
      let config = this.peftConfig.get(name)!;
      const base = opts.baseModelNameOrPath ?? config.baseModelNameOrPath;
      config = config.with({ baseModelNameOrPath: base ?? null });
      writeSafetensors(paths.weights, noGrad(() => this.adapterStateDict(name)), { format: "pt" });
      writeFileAtomic(paths.config, config.toJSONString());
    }
  }

  /**
   * Loads an adapter saved by PEFT or lowrank onto `model` (PEFT's PeftModel.from_pretrained).
   * Every tensor in the file must land in the model: missing or unexpected keys are errors (PEFT
   * only warns, and a silently missing adapter is an adapter that does nothing).
   */
  static fromPretrained<M extends BaseModel>(
    model: M, dir: string, opts: PeftOptions & { adapterName?: string; isTrainable?: boolean } = {},
  ): PeftModel<M> {
    const adapterName = opts.adapterName ?? DEFAULT_ADAPTER_NAME;
    const config = readAdapterConfig(dir, opts.onWarning).with({ inferenceMode: !opts.isTrainable });
    const peft = new PeftModel(model, config, adapterName, opts);
    peft.loadAdapterWeights(dir, adapterName);
    return peft;
  }

  /** Loads another saved adapter under `adapterName` (PEFT's load_adapter); it is not activated. */
  loadAdapter(dir: string, adapterName: string, opts: { isTrainable?: boolean } = {}): void {
    const config = readAdapterConfig(dir, this.warn).with({ inferenceMode: !opts.isTrainable });
    this.addAdapter(adapterName, config);
    this.loadAdapterWeights(dir, adapterName);
  }

  private loadAdapterWeights(dir: string, adapterName: string): void {
    const weightsPath = adapterPaths(dir).weights;
    if (!existsSync(weightsPath)) {
      throw new Error(`PeftModel.fromPretrained: ${weightsPath} is missing (adapter_model.bin pickles cannot be read; re-save with safetensors)`);
    }
    const file = readSafetensors(weightsPath);
    const targets = this.adapterStateDict(adapterName);
    const baseParams = new Map(this.model.namedParameters());
    const unexpected: string[] = [];
    const misShaped: string[] = [];
    const loaded = new Set<string>();
    noGrad(() => {
      for (const key of file.names) {
        const parsed = parseAdapterStateKey(key);
        const ownKey = parsed.kind === "lora" ? adapterStateKey(parsed.modulePath, parsed.tensor) : key;
        // targets holds the LoRA tensors, the modulesToSave copies and the trained biases of this adapter
        const dst = targets[ownKey] ?? (parsed.kind === "base" ? baseParams.get(parsed.path) ?? baseParams.get(parsed.baseParam) : undefined);
        if (!dst) {
          unexpected.push(key);
          continue;
        }
        const entry = file.get(key);
        if (entry.shape.length !== dst.ndim || entry.shape.some((s, i) => s !== dst.shape[i])) {
          misShaped.push(`${key}: file ${formatShape(entry.shape)}, model ${formatShape(dst.shape)}`);
          continue;
        }
        const t = toTensor({ ...entry, name: key }, { device: dst.device });
        copyInto(dst, t);
        t.dispose();
        loaded.add(ownKey);
      }
    });
    const savedCopies = new Set([...this.modulesToSave].flatMap(([path, w]) => w.adapterState(adapterName).map(([p]) => `${PEFT_KEY_PREFIX}${path}.${p}`)));
    const missing = Object.keys(targets).filter((k) => !loaded.has(k) && (k.includes(".lora_") || savedCopies.has(k)));
    if (unexpected.length || misShaped.length || missing.length) {
      const parts = [
        missing.length ? `missing: ${missing.slice(0, 8).join(", ")}${missing.length > 8 ? ` (+${missing.length - 8} more)` : ""}` : "",
        unexpected.length ? `unexpected: ${unexpected.slice(0, 8).join(", ")}${unexpected.length > 8 ? ` (+${unexpected.length - 8} more)` : ""}` : "",
        misShaped.length ? `mis-shaped: ${misShaped.join("; ")}` : "",
      ].filter(Boolean);
      throw new Error(`PeftModel: adapter ${weightsPath} does not fit the model (${parts.join(" | ")}); was it trained for another base model or config?`);
    }
  }
}

function readAdapterConfig(dir: string, onWarning?: WarningHandler): LoraConfig {
  const paths = adapterPaths(dir);
  if (!existsSync(dir)) throw new Error(`PeftModel.fromPretrained: adapter directory ${dir} does not exist`);
  if (!existsSync(paths.config)) throw new Error(`PeftModel.fromPretrained: ${paths.config} is missing; is ${dir} a PEFT adapter folder?`);
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(paths.config, "utf8"));
  } catch (err) {
    throw new Error(`PeftModel.fromPretrained: ${paths.config} is not valid JSON (${(err as Error).message})`);
  }
  return LoraConfig.fromJSON(json, { onWarning });
}

/** Wraps `model` with LoRA per `config` (PEFT's get_peft_model); base weights are frozen. */
export function getPeftModel<M extends BaseModel>(model: M, config: LoraConfig, adapterName = DEFAULT_ADAPTER_NAME, opts: PeftOptions = {}): PeftModel<M> {
  return new PeftModel(model, config, adapterName, opts);
}
