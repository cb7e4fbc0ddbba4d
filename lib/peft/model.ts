// PeftModel: a base model with LoRA layers injected by name, PEFT-style. Its module tree is PEFT's
// (`base_model.model.<path>`), so named parameters, saved keys and parameter counts read as in
// Python; adapters save to and load from PEFT's on-disk format.
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { checkFitsInMemory } from "../runtime.js";
import { writeFileAtomic, writeFileAtomicAsync } from "../io/atomic.js";
import { readSafetensors, readSafetensorsAsync, serializeSafetensors, toTensor, type SafetensorsFile } from "../io/safetensors.js";
import { Conv1D, Embedding, Linear } from "../nn/layers.js";
import { Module } from "../nn/module.js";
import { Generator } from "../tensor/random.js";
import { tidy } from "../tensor/scope.js";
import type { ModuleInfo, ModuleKind, ModuleShape } from "../nn/shapes.js";
import { copyInto, formatShape, noGrad, type Tensor } from "../tensor/tensor.js";
import { emitLowrankWarning, LoraConfig, type WarningHandler } from "./config.js";
import {
  adapterPaths, adapterStateKey, DEFAULT_ADAPTER_NAME, formatTrainableParameters, parseAdapterStateKey, PEFT_KEY_PREFIX, validateAdapterName,
  type LoraTensorName,
} from "./format.js";
import { isBaseMutatingInit } from "./init.js";
import { LoraEmbedding, LoraLinear, wrapWithLora, type AdapterSpec, type LoraLayer } from "./layer.js";
import { findModulesToSave, ModulesToSaveWrapper } from "./modules-to-save.js";
import { countLoraParameters, planInjection, targetModulesRegex } from "./targets.js";
import { addWeightedAdapter, type WeightedAdapterOptions } from "./weighted.js";

/** What a wrapped model must offer: a module tree and a forward pass. */
export interface BaseModel extends Module {
  forward(...args: never[]): unknown;
  /** The token embeddings and the output head, as they are now (transformers' get_input_embeddings / get_output_embeddings). */
  getInputEmbeddings?(): Module;
  getOutputEmbeddings?(): Module;
  /** config.json's model_type (e.g. "gpt2") picks PEFT's default target modules. */
  readonly config?: { toHF?(): Record<string, unknown> };
}

export interface PeftOptions {
  /** Random stream for adapter init and LoRA dropout (default: a Generator seeded with 0). */
  generator?: Generator;
  onWarning?: WarningHandler;
}

/** PeftModel.fromPretrained's options. */
export interface LoadAdapterOptions extends PeftOptions {
  /** The name the adapter gets (default "default"). */
  adapterName?: string;
  /** Leave the adapter trainable and the modes as they are (default: frozen, eval mode). */
  isTrainable?: boolean;
}

/** PeftModel.savePretrained's options. */
export interface SaveAdapterOptions {
  /** The adapters to save (default: all); others than "default" go to <dir>/<name>, as PEFT does. */
  adapterNames?: string[];
  /** base_model_name_or_path written into adapter_config.json (default: the config's). */
  baseModelNameOrPath?: string;
}

/** LoraModel: holds the base model as `model`, so parameter paths read base_model.model.<path>. */
export class LoraModel extends Module {
  declare model: BaseModel;
  constructor(model: BaseModel) {
    super();
    this.registerModule("model", model);
  }
}

/** A module's kind and the dimensions LoRA's size depends on (a wrapped layer counts as its base layer). */
function moduleShape(name: string, module: Module): ModuleShape {
  const m = module instanceof LoraLinear || module instanceof LoraEmbedding ? module.base_layer : module;
  if (m instanceof Linear) return { name, kind: "linear", inFeatures: m.inFeatures, outFeatures: m.outFeatures };
  if (m instanceof Conv1D) return { name, kind: "conv1d", inFeatures: m.nx, outFeatures: m.nf };
  if (m instanceof Embedding) return { name, kind: "embedding", numEmbeddings: m.numEmbeddings, embeddingDim: m.embeddingDim };
  return { name, kind: "other" };
}

function modelType(model: BaseModel): string | undefined {
  const t = model.config?.toHF?.().model_type;
  return typeof t === "string" ? t : undefined;
}

/** A tensor of an adapter file whose shape differs from the model's; rankDim is where a LoRA factor keeps r. */
interface MisShaped {
  key: string;
  ownKey: string;
  file: readonly number[];
  model: readonly number[];
  rankDim?: number;
}

/** The dimension that holds r: lora_A is [r, in], lora_B [out, r] (the embedding factors likewise). */
const RANK_DIM: Partial<Record<LoraTensorName, number>> = { lora_A: 0, lora_B: 1, lora_embedding_A: 0, lora_embedding_B: 1 };

/** Module paths that belong to adapter machinery rather than to the model: never targets themselves. */
const ADAPTER_INTERNALS = /(^|\.)(base_layer|lora_A|lora_B|lora_embedding_A|lora_embedding_B|lora_magnitude_vector|original_module|modules_to_save)(\.|$)/;

/**
 * The model's modules LoRA can be matched against (PEFT matches the unwrapped names: a wrapped
 * layer's inner base_layer is not a new target). A top-level lm_head is the output embedding that
 * "all-linear" leaves out: transformers' get_output_embeddings() is lm_head for every causal LM
 * lowrank implements. Two modules holding the same weight tensor (a tied head) name each other.
 */
function targetableModules(model: BaseModel): ModuleShape[] {
  const modules = model.namedModules().filter(([path]) => path !== "" && !ADAPTER_INTERNALS.test(path));
  const holder = new Map<Tensor, string>(), tiedWith = new Map<string, string>();
  for (const [path, module] of modules) {
    const m = module instanceof LoraLinear || module instanceof LoraEmbedding ? module.base_layer : module;
    if (!(m instanceof Linear || m instanceof Conv1D || m instanceof Embedding)) continue;
    const first = holder.get(m.weight);
    if (first === undefined) {
      holder.set(m.weight, path);
    } else {
      tiedWith.set(path, first);
      tiedWith.set(first, path);
    }
  }
  return modules.map(([path, m]) => {
    const tied = tiedWith.get(path);
    return { ...moduleShape(path, m), ...(path === "lm_head" ? { isOutputHead: true } : {}), ...(tied === undefined ? {} : { tiedWith: tied }) };
  });
}

/** What an adapter would add to a model, from shapes alone: its float32 bytes and each targeted layer's rank and dimensions. */
export interface LoraEstimate {
  bytes: number;
  layers: { name: string; r: number; in: number; out: number }[];
  device: string;
}

/** Sizes the adapter `config` would add to `model` without allocating anything (see checkLoraFits). */
export function estimateLora(model: BaseModel, config: LoraConfig): LoraEstimate {
  const modules = targetableModules(model);
  const count = countLoraParameters(modules, config, { modelType: modelType(model), onWarning: () => {} });
  const byName = new Map(modules.map((m) => [m.name, m]));
  const layers = count.perModule.map(({ name, r }) => {
    const m = byName.get(name)!;
    return m.kind === "embedding" ? { name, r, in: m.numEmbeddings!, out: m.embeddingDim! } : { name, r, in: m.inFeatures!, out: m.outFeatures! };
  });
  return { bytes: 4 * count.total, layers, device: model.parameters()[0]?.device ?? "cpu" };
}

/** "h.0.attn.c_attn (128 -> 384), h.1.attn.c_attn (128 -> 384) and 6 more". */
function listLayers(layers: LoraEstimate["layers"]): string {
  const shown = layers.slice(0, 3).map((l) => `${l.name} (${l.in} -> ${l.out})`).join(", ");
  return layers.length > 3 ? `${shown} and ${layers.length - 3} more` : shown;
}

/** "r=64" or "r=8..64": the ranks of the adapted layers (rankPattern can give each its own). */
function describeRanks(layers: LoraEstimate["layers"]): string {
  const rs = layers.map((l) => l.r);
  const lo = Math.min(...rs), hi = Math.max(...rs);
  return lo === hi ? `r=${lo}` : `r=${lo}..${hi}`;
}

/**
 * Refuses, before any adapter weight is allocated, an adapter that cannot fit in its device's
 * memory: `copies` of it must (1 for the weights; 4 for training with AdamW: weights, gradients and
 * the two moments). The message names the rank, the layers and the bytes.
 */
export function checkLoraFits(model: BaseModel, config: LoraConfig, opts: { copies?: number; purpose?: string; estimate?: LoraEstimate } = {}): void {
  const e = opts.estimate ?? estimateLora(model, config);
  if (e.layers.length === 0) return;
  const copies = opts.copies ?? 1;
  const smallest = Math.min(...e.layers.map((l) => Math.min(l.in, l.out)));
  checkFitsInMemory(
    copies * e.bytes, e.device,
    `LoRA ${describeRanks(e.layers)} on ${e.layers.length} layer${e.layers.length === 1 ? "" : "s"} (${listLayers(e.layers)}) ${opts.purpose ?? "for the adapter's weights"}`,
    `lower r (these layers' smaller dimension is ${smallest}: a larger r adds no rank) or target fewer modules`,
  );
}

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

  /**
   * The loss forward({ ..., labels }) gives, without keeping the [B, T, V] logits: the base model's
   * forwardLoss (GPT-2 and the Llama family fuse their head with the loss), else forward's loss.
   */
  forwardLoss(input: Parameters<M["forward"]>[0] & { labels: Tensor }): Tensor {
    const base = this.model as unknown as { forwardLoss?(input: unknown): Tensor; forward(input: unknown): { loss?: Tensor } };
    if (base.forwardLoss) return base.forwardLoss(input);
    return tidy(() => {
      const { loss } = base.forward(input);
      if (!loss) throw new Error("PeftModel.forwardLoss: the base model's forward returned no loss for these labels");
      return loss;
    });
  }

  // ---- adapters -------------------------------------------------------------------------------

  /** Injects a new adapter (inactive until setAdapter, like PEFT's add_adapter). */
  addAdapter(name: string, config: LoraConfig): void {
    validateAdapterName(name);
    if (this.peftConfig.has(name)) throw new Error(`addAdapter: an adapter named "${name}" already exists; pick another name or deleteAdapter first`);
    const modules = targetableModules(this.model);
    const plan = planInjection(modules, config, { modelType: modelType(this.model), onWarning: this.warn });
    const estimate = estimateLora(this.model, config);
    const wasted = estimate.layers.filter((l) => l.r > Math.min(l.in, l.out));
    if (wasted.length > 0) {
      this.warn(
        `${describeRanks(wasted)} is larger than the smaller dimension of ${wasted.length} adapted layer${wasted.length === 1 ? "" : "s"} (${listLayers(wasted)}): ` +
          `B·A cannot have a rank above min(in, out), so the extra rank only costs memory and time; use r <= ${Math.min(...wasted.map((l) => Math.min(l.in, l.out)))}.`,
      );
    }
    checkLoraFits(this.model, config, { estimate });
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
        dropout: plan.config.loraDropout, init: plan.config.initLoraWeights, useDora: plan.config.useDora, loraBias: plan.config.loraBias,
        generator: this.generator,
      };
      if (spec.loraBias && layer instanceof LoraLinear && !layer.base_layer.bias) {
        this.warn(`loraBias=true on ${path}, whose base layer has no bias: merging this adapter (adapter "${name}") will not be possible (PEFT warns the same).`);
      }
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

  /** Folds the active adapters (or adapterNames) into the base weights (kept separately, so unmergeAdapter restores them). */
  mergeAdapter(opts: { safeMerge?: boolean; adapterNames?: string[] } = {}): void {
    const done: LoraLayer[] = [];
    try {
      for (const [path, layer] of this.loraLayers) {
        // by default each layer's active adapters, all of them (PEFT's check_adapters_to_merge)
        const names = opts.adapterNames?.filter((n) => layer.specs.has(n)) ?? layer.activeAdapters;
        layer.merge(names, { safe: opts.safeMerge, where: path });
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
      layer.releaseBaseLayer();
      const base = layer.base_layer;
      for (const name of layer.adapterNames) for (const p of layer.parametersOf(name)) p.dispose();
      layer.registerModule("base_layer", null);
      model.setSubmodule(path, base);
    }
    const dropped: Module[] = [];
    for (const [path, wrapper] of this.modulesToSave) {
      const kept = wrapper.current;
      dropped.push(...[wrapper.original_module, ...wrapper.modules_to_save.children()].filter((m) => m !== kept));
      wrapper.registerModule("original_module", null);
      wrapper.registerModule("modules_to_save", null);
      model.setSubmodule(path, kept);
    }
    // an original module's weight may live on in the model: a head tied to an embedding saved in full
    const held = new Set([...model.parameters(), ...model.namedBuffers().map(([, b]) => b)]);
    for (const m of dropped) m.dispose(held);
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
      const loraBias = layer instanceof LoraLinear ? layer.loraBias(name) : null;
      if (loraBias) out[adapterStateKey(path, "lora_B.bias")] = loraBias;
      const magnitude = layer instanceof LoraLinear ? layer.magnitude(name) : undefined;
      if (magnitude) out[adapterStateKey(path, "lora_magnitude_vector")] = magnitude;
    }
    // PEFT's save_embedding_layers="auto": where the config targets an embedding by name, the base
    // weights of the input and output embeddings that LoRA wraps are saved too (get_peft_model_state_dict)
    if (this.targetsEmbeddingByName(config)) {
      for (const embedding of [this.model.getInputEmbeddings?.(), this.model.getOutputEmbeddings?.()]) {
        const path = [...this.loraLayers].find(([, layer]) => layer === embedding)?.[0];
        if (path !== undefined) out[`${PEFT_KEY_PREFIX}${path}.base_layer.weight`] = (embedding as LoraLayer).base_layer.weight;
      }
    }
    // modules trained in full: saved under the module's own name, without the wrapper's segments
    for (const [path, wrapper] of this.modulesToSave) {
      for (const [param, t] of wrapper.adapterState(name)) out[`${PEFT_KEY_PREFIX}${path}.${param}`] = t;
    }
    if (config.bias !== "none") {
      for (const [n, p] of this.model.namedParameters()) {
        if (!n.endsWith(".bias") || !p.requiresGrad || n.includes(".lora_B.")) continue; // lora_B biases are saved above
        out[`base_model.model.${n}`] = p;
      }
    }
    return out;
  }

  /**
   * Whether targetModules names an embedding layer as PEFT's EMBEDDING_LAYER_NAMES does
   * (embed_tokens, lm_head): listed, or a module of that last name matched by the regex.
   */
  private targetsEmbeddingByName(config: LoraConfig): boolean {
    const names = ["embed_tokens", "lm_head"];
    const t = config.targetModules;
    if (t === null) return false;
    if (typeof t !== "string") return names.some((n) => t.includes(n));
    if (t === "all-linear") return false;
    const re = targetModulesRegex(t);
    return targetableModules(this.model).some(({ name }) => names.includes(name.split(".").pop()!) && re.test(name));
  }

  /**
   * The files savePretrained writes, per adapter: its folder, adapter_model.safetensors' bytes and
   * adapter_config.json's text, taken from the weights as they are now.
   */
  private adapterFiles(dir: string, opts: SaveAdapterOptions): { dir: string; weights: string; weightBytes: Uint8Array[]; config: string; configText: string }[] {
    return (opts.adapterNames ?? this.adapters).map((name) => {
      const paths = adapterPaths(dir, name);
      let config = this.peftConfig.get(name)!;
      const base = opts.baseModelNameOrPath ?? config.baseModelNameOrPath;
      config = config.with({ baseModelNameOrPath: base ?? null });
      const weightBytes = serializeSafetensors(noGrad(() => this.adapterStateDict(name)), { format: "pt" });
      return { dir: paths.dir, weights: paths.weights, weightBytes, config: paths.config, configText: config.toJSONString() };
    });
  }

  /**
   * Writes adapter_config.json and adapter_model.safetensors (float32) in PEFT's layout, each to a
   * temporary file renamed into place. The weights are copied to the host when it is called (later
   * training does not change what is written); the disk writes run off the main thread.
   * savePretrainedSync blocks instead.
   */
  async savePretrained(dir: string, opts: SaveAdapterOptions = {}): Promise<void> {
    for (const f of this.adapterFiles(dir, opts)) {
      await mkdir(f.dir, { recursive: true });
      await writeFileAtomicAsync(f.weights, f.weightBytes);
      await writeFileAtomicAsync(f.config, f.configText);
    }
  }

  /** savePretrained, blocking the thread until every file is written. */
  savePretrainedSync(dir: string, opts: SaveAdapterOptions = {}): void {
    for (const f of this.adapterFiles(dir, opts)) {
      mkdirSync(f.dir, { recursive: true });
      writeFileAtomic(f.weights, f.weightBytes);
      writeFileAtomic(f.config, f.configText);
    }
  }

  /**
   * Loads an adapter saved by PEFT or lowrank onto `model` (PEFT's PeftModel.from_pretrained).
   * Every tensor in the file must land in the model: missing or unexpected keys are errors (PEFT
   * only warns, and a silently missing adapter is an adapter that does nothing). Unless
   * `isTrainable`, the adapter is frozen and the model is put in eval mode (dropout off), as PEFT
   * does for inference; with `isTrainable` the modes are left as they are (the Trainer sets them).
   * The weights are read off the main thread; fromPretrainedSync blocks instead.
   */
  static async fromPretrained<M extends BaseModel>(model: M, dir: string, opts: LoadAdapterOptions = {}): Promise<PeftModel<M>> {
    const config = readAdapterConfig(dir, opts.onWarning);
    return PeftModel.wrapLoaded(model, dir, config, await readSafetensorsAsync(adapterWeightsPath(dir)), opts);
  }

  /** fromPretrained, blocking the thread until the adapter is loaded. */
  static fromPretrainedSync<M extends BaseModel>(model: M, dir: string, opts: LoadAdapterOptions = {}): PeftModel<M> {
    const config = readAdapterConfig(dir, opts.onWarning);
    return PeftModel.wrapLoaded(model, dir, config, readSafetensors(adapterWeightsPath(dir)), opts);
  }

  /**
   * fromPretrained once the files are read (so a file that cannot be read leaves `model`
   * unwrapped): the adapter's layers injected, its weights copied in, the modes set.
   */
  private static wrapLoaded<M extends BaseModel>(model: M, dir: string, config: LoraConfig, file: SafetensorsFile, opts: LoadAdapterOptions): PeftModel<M> {
    const adapterName = opts.adapterName ?? DEFAULT_ADAPTER_NAME;
    let peft: PeftModel<M>;
    try {
      peft = new PeftModel(model, config.with({ inferenceMode: !opts.isTrainable }), adapterName, opts);
    } catch (err) {
      // e.g. target modules the model does not have: say which adapter asked for them
      throw new Error(`PeftModel.fromPretrained: the adapter in ${dir} does not fit the model: ${(err as Error).message}`, { cause: err });
    }
    peft.applyAdapterWeights(file, dir, adapterName);
    if (!opts.isTrainable) peft.eval();
    return peft;
  }

  /**
   * Loads another saved adapter under `adapterName` (PEFT's load_adapter); it is not activated.
   * Unless `isTrainable`, the whole model goes to eval mode, as in PEFT.
   */
  loadAdapter(dir: string, adapterName: string, opts: { isTrainable?: boolean } = {}): void {
    const config = readAdapterConfig(dir, this.warn).with({ inferenceMode: !opts.isTrainable });
    const file = readSafetensors(adapterWeightsPath(dir));
    this.addAdapter(adapterName, config);
    this.applyAdapterWeights(file, dir, adapterName);
    if (!opts.isTrainable) this.eval();
  }

  /** Copies the adapter weights of `file` (dir's adapter_model.safetensors) into adapter `adapterName`. */
  private applyAdapterWeights(file: SafetensorsFile, dir: string, adapterName: string): void {
    const weightsPath = file.source;
    // every key is checked before any tensor is copied, and a bad one names the file
    const parsedKeys = new Map(file.names.map((key) => {
      try {
        return [key, parseAdapterStateKey(key)] as const;
      } catch (err) {
        throw new Error(`PeftModel.fromPretrained: ${weightsPath}: ${(err as Error).message}`, { cause: err });
      }
    }));
    const targets = this.adapterStateDict(adapterName);
    // every name of a tied weight: PEFT saves an embedding it targets under its own path (lm_head.base_layer.weight)
    const baseParams = new Map(this.model.namedParameters({ removeDuplicate: false }));
    const unexpected: string[] = [];
    const misShaped: MisShaped[] = [];
    const loaded = new Set<string>();
    noGrad(() => {
      for (const key of file.names) {
        const parsed = parsedKeys.get(key)!;
        const ownKey = parsed.kind === "lora" ? adapterStateKey(parsed.modulePath, parsed.tensor) : key;
        // targets holds the LoRA tensors, the modulesToSave copies and the trained biases of this adapter
        const dst = targets[ownKey] ?? (parsed.kind === "base" ? baseParams.get(parsed.path) ?? baseParams.get(parsed.baseParam) : undefined);
        if (!dst) {
          unexpected.push(key);
          continue;
        }
        const entry = file.get(key);
        if (entry.shape.length !== dst.ndim || entry.shape.some((s, i) => s !== dst.shape[i])) {
          misShaped.push({ key, ownKey, file: entry.shape, model: dst.shape, rankDim: parsed.kind === "lora" ? RANK_DIM[parsed.tensor] : undefined });
          continue;
        }
        const t = toTensor({ ...entry, name: key }, { device: dst.device, dtype: dst.dtype });
        copyInto(dst, t);
        t.dispose();
        loaded.add(ownKey);
      }
    });
    const savedCopies = new Set([...this.modulesToSave].flatMap(([path, w]) => w.adapterState(adapterName).map(([p]) => `${PEFT_KEY_PREFIX}${path}.${p}`)));
    const present = new Set(misShaped.map((m) => m.ownKey));
    const missing = Object.keys(targets).filter((k) => !loaded.has(k) && !present.has(k) && (k.includes(".lora_") || savedCopies.has(k)));
    // Every mis-shape in the rank dimension alone: the weights were trained at another r than the config says.
    const rankOnly = misShaped.every((m) => m.rankDim !== undefined && m.file.length === m.model.length && m.file.every((s, i) => i === m.rankDim || s === m.model[i]));
    if (misShaped.length > 0 && rankOnly && !missing.length && !unexpected.length) {
      const ranks = (pick: "file" | "model") => [...new Set(misShaped.map((m) => m[pick][m.rankDim!]))].map((r) => `r=${r}`).join(", ");
      const m = misShaped[0]!;
      throw new Error(
        `PeftModel: ${adapterPaths(dir).config} says ${ranks("model")} but ${weightsPath} holds ${ranks("file")} tensors ` +
          `(${m.key}: expected ${formatShape(m.model)}, found ${formatShape(m.file)}${misShaped.length > 1 ? `; ${misShaped.length - 1} more differ the same way` : ""}); ` +
          `set "r" (and any rank_pattern) in adapter_config.json to the rank the weights were trained with`,
      );
    }
    if (unexpected.length || misShaped.length || missing.length) {
      const list = (items: string[]) => `${items.slice(0, 3).join(", ")}${items.length > 3 ? ` (+${items.length - 3} more)` : ""}`;
      const parts = [
        missing.length ? `missing: ${list(missing)}` : "",
        unexpected.length ? `unexpected: ${list(unexpected)}` : "",
        misShaped.length ? `mis-shaped: ${list(misShaped.map((m) => `${m.key}: expected ${formatShape(m.model)}, found ${formatShape(m.file)}`))}` : "",
      ].filter(Boolean);
      throw new Error(`PeftModel: adapter ${weightsPath} does not fit the model (${parts.join(" | ")}); was it trained for another base model or config?`);
    }
  }
}

/** adapter_model.safetensors of an adapter folder; an error when it is missing. */
function adapterWeightsPath(dir: string): string {
  const weightsPath = adapterPaths(dir).weights;
  if (!existsSync(weightsPath)) {
    throw new Error(`PeftModel.fromPretrained: ${weightsPath} is missing (adapter_model.bin pickles cannot be read; re-save with safetensors)`);
  }
  return weightsPath;
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
  try {
    return LoraConfig.fromJSON(json, { onWarning });
  } catch (err) {
    throw new Error(`PeftModel.fromPretrained: ${paths.config}: ${(err as Error).message}`, { cause: err });
  }
}

/** Wraps `model` with LoRA per `config` (PEFT's get_peft_model); base weights are frozen. */
export function getPeftModel<M extends BaseModel>(model: M, config: LoraConfig, adapterName = DEFAULT_ADAPTER_NAME, opts: PeftOptions = {}): PeftModel<M> {
  return new PeftModel(model, config, adapterName, opts);
}
