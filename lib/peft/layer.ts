// LoRA layers (PEFT's lora.Linear and lora.Embedding): a frozen base layer plus, per adapter,
// trainable factors A and B. Parameter names follow PEFT's in-memory layout, so a PeftModel's
// named parameters read `<path>.base_layer.weight`, `<path>.lora_A.<adapter>.weight`,
// `<path>.lora_B.<adapter>.weight` (Embedding: `<path>.lora_embedding_A.<adapter>`).
//
//   Linear / Conv1D:  y = base(x) + Σ_active s·B(A(dropout(x)))           W: [out, in] / [in, out]
//   Embedding:        y = base(ids) + Σ_active s·(A[:, ids])ᵀ·Bᵀ          A: [r, num], B: [dim, r]
//   merge:            W += s·B·A (Conv1D: W += s·(B·A)ᵀ, Embedding: W += s·(B·A)ᵀ), unmerge subtracts
//
// Variants on Linear / Conv1D: DoRA adapters (./dora.ts) add a magnitude vector
// `<path>.lora_magnitude_vector.<adapter>.weight` and rescale the output per feature; the
// initialisations "pissa", "pissa_niter_N" and "olora" (./init.ts) factor W into A and B and
// replace W by W − s·B·A.
import { Conv1D, Embedding, Linear } from "../nn/layers.js";
import { Module } from "../nn/module.js";
import { add, scale } from "../ops/elementwise.js";
import { embedding } from "../ops/embedding.js";
import { AugmentedWeight, loraDelta, loraLinear, loraMerge, type LoraDeltaOptions } from "../ops/lora.js";
import { linear } from "../ops/matmul.js";
import { randn, zeros } from "../tensor/creation.js";
import type { Generator } from "../tensor/random.js";
import { keep } from "../tensor/scope.js";
import { copyInto, isSoleView, noGrad, type Tensor } from "../tensor/tensor.js";
import type { InitLoraWeights } from "./config.js";
import { DoraMagnitude, doraForward, doraMerge, doraUnmerge, doraWeightNorm, type DoraOperands } from "./dora.js";
import { applyBaseMutatingInit, isBaseMutatingInit } from "./init.js";

/** How one adapter's factors start (LoraConfig.initLoraWeights). */
export type LoraInit = InitLoraWeights;

export interface AdapterSpec {
  r: number;
  alpha: number;
  scaling: number;
  dropout: number;
  init: LoraInit;
  /** DoRA (Linear / Conv1D only): a trainable magnitude per output feature. */
  useDora?: boolean;
  /** PEFT's lora_bias (Linear / Conv1D only): lora_B gets a bias b [out], so the update is s·(B·A·x + b). */
  loraBias?: boolean;
  generator?: Generator;
}

/** A base layer LoRA can wrap. */
export type LoraBase = Linear | Conv1D | Embedding;

/** Thrown by safe merges; the layer is left as it was. */
export class UnsafeMergeError extends Error {}

/** Shared adapter bookkeeping of the LoRA layers. */
abstract class LoraLayerBase<B extends LoraBase> extends Module {
  declare base_layer: B;
  readonly specs = new Map<string, AdapterSpec>();
  /** Adapters whose output is added in forward (PEFT: active_adapters). */
  activeAdapters: string[] = [];
  /** Adapters currently folded into the base weight, in merge order. */
  readonly merged: string[] = [];
  /** disable_adapter(): forward runs the base layer only (unmerging first if needed). */
  disabled = false;

  constructor(base: B) {
    super();
    this.registerModule("base_layer", base);
  }

  /** The base layer's weight (as PEFT's tuner layers expose it), e.g. for an output head tied to it. */
  get weight(): Tensor {
    return this.base_layer.weight;
  }

  get adapterNames(): string[] {
    return [...this.specs.keys()];
  }

  /**
   * Hands the base layer back as it was made (mergeAndUnload): a base weight this layer moved into
   * a buffer of its own gets contiguous storage again. Nothing to do unless a subclass moves it.
   */
  releaseBaseLayer(): void {}

  /** target += sign·ΔW of the adapter, in the base weight's layout (target contiguous, no grad). */
  protected abstract accumulateDelta(target: Tensor, name: string, sign: number): void;

  /** The adapter's weight update ΔW in the base weight's layout (a new tensor). */
  deltaWeight(name: string): Tensor {
    const w = this.base_layer.weight;
    return noGrad(() => {
      const delta = zeros(w.shape, { device: w.device });
      this.accumulateDelta(delta, name, 1);
      return delta;
    });
  }
  abstract addAdapter(name: string, spec: AdapterSpec): void;
  protected abstract adapterParameters(name: string): Tensor[];
  protected abstract removeAdapterParameters(name: string): void;

  /** The adapter's trainable tensors. */
  parametersOf(name: string): Tensor[] {
    return this.specs.has(name) ? this.adapterParameters(name) : [];
  }

  /**
   * Folds adapters into the base weight. With `safe`, a NaN/Inf result is refused and nothing
   * changes; the error names the cause (the adapter, the base weight, or an overflow) and `where`
   * (the layer's path, for the message).
   */
  merge(names: readonly string[] = this.activeAdapters, opts: { safe?: boolean; where?: string } = {}): void {
    this.withMergeableWeight(names, (w) => {
      for (const name of names) {
        if (!this.specs.has(name) || this.merged.includes(name)) continue;
        const bias = this.biasAfterMerge(name, 1, opts.where); // before anything changes: it throws when the merge cannot be done
        try {
          if (opts.safe) {
            // Merge into a copy first and commit only a finite result (PEFT's safe_merge).
            const trial = w.contiguous();
            this.mergeInto(trial, name);
            const finite = trial.dataSync().every(Number.isFinite) && (!bias || bias.value.dataSync().every(Number.isFinite));
            if (finite) copyInto(w, trial);
            trial.dispose();
            if (!finite) throw new UnsafeMergeError(this.unsafeMergeCause(name, opts.where));
          } else {
            this.mergeInto(w, name);
          }
          if (bias) copyInto(bias.target, bias.value);
        } finally {
          bias?.value.dispose();
        }
        this.merged.push(name);
      }
    });
  }

  /**
   * The base layer's bias with adapter `name`'s own bias (PEFT's lora_bias) added, sign·s·b, as a
   * new tensor beside the bias it replaces; null when the adapter has no bias.
   */
  protected biasAfterMerge(_name: string, _sign: number, _where?: string): { target: Tensor; value: Tensor } | null {
    return null;
  }

  /** Why merging adapter `name` gave NaN/Inf: PEFT's sentence when the adapter holds them, else the real cause. */
  private unsafeMergeCause(name: string, where = "this layer"): string {
    const nonFinite = (t: Tensor) => !t.dataSync().every(Number.isFinite);
    const head = `NaNs detected in the merged weights of ${where}.`;
    if (nonFinite(this.base_layer.weight)) {
      return `${head} The base model is broken, not the adapter ${name}: the base weight of ${where} holds NaN/Inf before merging`;
    }
    // this layer's adapter tensors are named <lora_A|lora_B|...>.<adapter>[.weight]
    const broken = this.namedParameters()
      .filter(([n, t]) => n.split(".")[0] !== "base_layer" && n.split(".")[1] === name && nonFinite(t))
      .map(([n]) => n.split(".")[0]);
    if (broken.length > 0) return `${head} The adapter ${name} seems to be broken: its ${broken.join(" and ")} hold NaN/Inf`;
    return `${head} The base weight and the adapter ${name} are finite, but W + s·B·A overflows float32`;
  }

  /** Subtracts the merged adapters from the base weight, most recent first. */
  unmerge(): void {
    this.withMergeableWeight(this.merged, (w) => {
      while (this.merged.length > 0) {
        const name = this.merged.pop()!;
        this.unmergeFrom(w, name);
        const bias = this.biasAfterMerge(name, -1);
        if (bias) {
          copyInto(bias.target, bias.value);
          bias.value.dispose();
        }
      }
    });
  }

  /**
   * Runs `change`, merging or unmerging `names`, on the base weight without recording. A bfloat16
   * weight (a model loaded with dtype "bfloat16") is changed in place by the merge kernel (each
   * element widened, changed and rounded back, as PEFT merges into a bf16 weight; so unmerging gives
   * the original back only to bf16 rounding, there as here), except for adapters whose merge needs
   * the whole weight in float32 (DoRA's norms): then it is widened, changed and rounded back once.
   */
  private withMergeableWeight(names: readonly string[], change: (w: Tensor) => void): void {
    noGrad(() => {
      const w = this.base_layer.weight;
      if (w.dtype === "float32" || !names.some((n) => this.mergesInFloat32(n))) return change(w);
      const wide = w.to(w.deviceInfo, "float32");
      try {
        change(wide);
        const back = wide.to(w.deviceInfo, w.dtype);
        copyInto(w, back);
        back.dispose();
      } finally {
        wide.dispose();
      }
    });
  }

  /** Whether merging adapter `name` needs the base weight in float32 (DoRA's norms do). */
  protected mergesInFloat32(_name: string): boolean {
    return false;
  }

  /** Folds one adapter into `target` (the base weight or a trial copy of it). */
  protected mergeInto(target: Tensor, name: string): void {
    this.accumulateDelta(target, name, 1);
  }

  /** Takes one merged adapter back out of `target`. */
  protected unmergeFrom(target: Tensor, name: string): void {
    this.accumulateDelta(target, name, -1);
  }

  deleteAdapter(name: string): void {
    if (this.merged.includes(name)) throw new Error(`Cannot delete adapter(s) ['${name}'] while they are merged. Please unmerge them first.`);
    this.removeAdapterParameters(name);
    this.specs.delete(name);
    this.activeAdapters = this.activeAdapters.filter((a) => a !== name);
  }

  /** The adapters whose output forward adds on top of the (possibly merged) base output. */
  protected unmergedActive(): string[] {
    if (this.disabled) {
      if (this.merged.length > 0) this.unmerge();
      return [];
    }
    return this.activeAdapters.filter((a) => this.specs.has(a) && !this.merged.includes(a));
  }
}

/** A container module whose children (or parameters) are keyed by adapter name (PEFT's ModuleDict). */
export class AdapterDict extends Module {}

/** LoRA around nn.Linear (weight [out, in]) or GPT-2's Conv1D (weight [in, out], fan_in_fan_out). */
export class LoraLinear extends LoraLayerBase<Linear | Conv1D> {
  declare lora_A: AdapterDict;
  declare lora_B: AdapterDict;
  /** DoRA magnitudes by adapter; registered with the first DoRA adapter. */
  declare lora_magnitude_vector: AdapterDict | undefined;
  readonly inFeatures: number;
  readonly outFeatures: number;
  /** The base weight is stored [in, out] (GPT-2's Conv1D). */
  readonly fanInFanOut: boolean;
  /** Merged DoRA adapters: the factor m/‖W₀ + ΔW‖ of the merge, which unmerging divides out. */
  private readonly doraFactors = new Map<string, Float32Array>();
  /**
   * When the one-GEMM LoRA (loraLinear) serves a layer: "auto" for frozen bfloat16 weights on CUDA,
   * "always" for frozen bfloat16 weights on any device (the CPU runs it too, as its twin),
   * "never" (the base layer's GEMM, then loraDelta). Other cases always take the second way: float32
   * weights, DoRA, a lora_B bias (loraBias), several active adapters, a trainable bias or weight.
   * "auto" is the default since its first H100 run (bench/RESULTS.md, Dec 7 15:42): the CUDA twins
   * pass and GPT-2's bf16 LoRA step is 9% faster than with "never" (203.8K vs 186.7K tokens/s).
   */
  static oneGemm: "auto" | "always" | "never" = "auto";
  /** The base weight's padded buffer while the one-GEMM path serves this layer. */
  private augmented: AugmentedWeight | null = null;

  constructor(base: Linear | Conv1D) {
    super(base);
    this.fanInFanOut = base instanceof Conv1D;
    [this.inFeatures, this.outFeatures] = base instanceof Conv1D ? [base.nx, base.nf] : [base.inFeatures, base.outFeatures];
    this.registerModule("lora_A", new AdapterDict());
    this.registerModule("lora_B", new AdapterDict());
  }

  addAdapter(name: string, spec: AdapterSpec): void {
    if (this.specs.has(name)) throw new Error(`LoRA adapter "${name}" already exists on this layer`);
    if (this.base_layer.weight.dtype === "bfloat16" && (spec.useDora || isBaseMutatingInit(spec.init))) {
      throw new Error(
        `adapter "${name}": ${spec.useDora ? "DoRA (useDora)" : `init "${String(spec.init)}"`} works on the base weight itself, which is ` +
          `bfloat16 here (a model loaded with dtype "bfloat16"); load the base model with dtype "float32" for it`,
      );
    }
    const { r, generator } = spec;
    const device = this.base_layer.weight.device;
    // lora_A and lora_B are nn.Linear(in, r) and nn.Linear(r, out) in PEFT, lora_B with a bias when loraBias.
    const A = new Linear(this.inFeatures, r, { bias: false, device, generator });
    const B = new Linear(r, this.outFeatures, { bias: spec.loraBias === true, device, generator });
    noGrad(() => {
      if (spec.init === true || spec.init === "gaussian") {
        // true: kaiming_uniform(a=√5) on A (nn.Linear's own init, kept); zeros on B and its bias: the adapter starts as a no-op.
        if (spec.init === "gaussian") A.weight = replace(A.weight, randn([r, this.inFeatures], { std: 1 / r, device, generator }));
        B.weight = zeroLike(B.weight);
        if (B.bias) B.bias = zeroLike(B.bias);
      }
      // init false: all keep nn.Linear's random init (PEFT: "not a no-op", for debugging).
    });
    if (isBaseMutatingInit(spec.init)) {
      const where = `a ${this.fanInFanOut ? "Conv1D" : "Linear"} layer (${this.inFeatures} -> ${this.outFeatures}, adapter "${name}")`;
      applyBaseMutatingInit(spec.init, { weight: this.base_layer.weight, fanInFanOut: this.fanInFanOut, A: A.weight, B: B.weight, scaling: spec.scaling, where });
    }
    this.lora_A.registerModule(name, A);
    this.lora_B.registerModule(name, B);
    this.specs.set(name, spec);
    if (spec.useDora) {
      // PEFT creates the magnitude after the factors' init: m = ‖W + s·B·A‖ (‖W‖ while B = 0).
      if (!this.lora_magnitude_vector) this.registerModule("lora_magnitude_vector", new AdapterDict());
      this.lora_magnitude_vector!.registerModule(name, new DoraMagnitude(doraWeightNorm(this.doraOperands(name))));
    }
  }

  protected adapterParameters(name: string): Tensor[] {
    const m = this.magnitude(name), b = this.loraBias(name);
    return [this.loraA(name), this.loraB(name), ...(b ? [b] : []), ...(m ? [m] : [])];
  }

  protected removeAdapterParameters(name: string): void {
    const dicts = this.magnitude(name) ? [this.lora_A, this.lora_B, this.lora_magnitude_vector!] : [this.lora_A, this.lora_B];
    for (const dict of dicts) {
      const m = dict.getSubmodule(name);
      dict.registerModule(name, null);
      m.dispose();
    }
    this.doraFactors.delete(name);
  }

  /** The adapter's A [r, in] and B [out, r]. */
  loraA(name: string): Tensor {
    return (this.lora_A.getSubmodule(name) as Linear).weight;
  }
  loraB(name: string): Tensor {
    return (this.lora_B.getSubmodule(name) as Linear).weight;
  }
  /** lora_B's bias b [out] of an adapter made with loraBias; null otherwise. */
  loraBias(name: string): Tensor | null {
    return (this.lora_B.getSubmodule(name) as Linear).bias;
  }
  /** The DoRA magnitude m [out] of a DoRA adapter; undefined for plain LoRA. */
  magnitude(name: string): Tensor | undefined {
    if (!this.specs.get(name)?.useDora) return undefined;
    return (this.lora_magnitude_vector!.getSubmodule(name) as DoraMagnitude).weight;
  }

  protected accumulateDelta(target: Tensor, name: string, sign: number): void {
    loraMerge(target, this.loraA(name), this.loraB(name), sign * this.specs.get(name)!.scaling, this.fanInFanOut);
  }

  protected override biasAfterMerge(name: string, sign: number, where = "this layer"): { target: Tensor; value: Tensor } | null {
    const b = this.loraBias(name);
    if (!b) return null;
    const target = this.base_layer.bias;
    if (!target) {
      throw new Error(
        `Impossible to merge LoRA with lora_bias=True because the base layer has no bias (adapter "${name}" on ${where}); ` +
          "nothing was changed. Keep the adapter unmerged, or train it with loraBias false.",
      );
    }
    return { target, value: noGrad(() => add(target, scale(b, sign * this.specs.get(name)!.scaling))) };
  }

  private doraOperands(name: string): DoraOperands {
    const { weight, bias } = this.base_layer;
    return { weight, bias, fanInFanOut: this.fanInFanOut, addDelta: (t, sign) => this.accumulateDelta(t, name, sign) };
  }

  protected override mergesInFloat32(name: string): boolean {
    return this.magnitude(name) !== undefined;
  }

  protected override mergeInto(target: Tensor, name: string): void {
    const m = this.magnitude(name);
    if (!m) return super.mergeInto(target, name);
    // DoRA's norm is of the weight without the adapters merged before (PEFT's _unmerged_base_weight).
    const unmerged = this.merged.length > 0 ? this.unmergedWeight() : this.base_layer.weight;
    const factor = doraMerge(this.doraOperands(name), target, unmerged, m);
    if (unmerged !== this.base_layer.weight) unmerged.dispose();
    this.doraFactors.set(name, factor);
  }

  protected override unmergeFrom(target: Tensor, name: string): void {
    this.undoMerge(target, name);
    this.doraFactors.delete(name);
  }

  private undoMerge(target: Tensor, name: string): void {
    const factor = this.doraFactors.get(name);
    if (factor) doraUnmerge(this.doraOperands(name), target, factor);
    else this.accumulateDelta(target, name, -1);
  }

  /** A copy of the base weight with every merged adapter taken out again, most recent first. */
  private unmergedWeight(): Tensor {
    const w = this.base_layer.weight.contiguous();
    for (const name of [...this.merged].reverse()) this.undoMerge(w, name);
    return w;
  }

  /**
   * The augmented weight for the one-GEMM path of adapter `name`, created (the base weight moved
   * into it) when first needed, or null when the path does not apply (see oneGemm).
   */
  private oneGemmWeight(name: string): AugmentedWeight | null {
    const w = this.base_layer.weight, bias = this.base_layer.bias, spec = this.specs.get(name)!;
    if (this.augmented && !this.augmented.holds(w)) {  // the weight was replaced (Module.to, assignment)
      this.augmented.dispose();
      this.augmented = null;
    }
    const policy = LoraLinear.oneGemm;
    if (policy === "never" || (policy === "auto" && w.deviceInfo.type !== "cuda")) return null;
    if (w.dtype !== "bfloat16" || w.requiresGrad || bias?.requiresGrad || spec.useDora || spec.loraBias) return null;
    const pad = AugmentedWeight.padFor(spec.r);
    if (this.augmented && this.augmented.pad >= pad) return this.augmented;
    // Move the weight only where this layer holds its one view (a view elsewhere would not follow).
    if (!this.augmented && !isSoleView(w)) return null;
    const old = this.augmented;
    this.augmented = new AugmentedWeight(w, pad, this.fanInFanOut);
    old?.dispose();
    return this.augmented;
  }

  protected override disposeOwned(): void {
    this.augmented?.dispose();
    this.augmented = null;
  }

  override releaseBaseLayer(): void {
    const w = this.base_layer.weight;
    if (this.augmented?.holds(w)) {
      const own = w.contiguous();
      w.adoptView(own);
      own.dispose();
    }
    this.disposeOwned();
  }

  /** The LoRA op's options for adapter `name`: its scaling and dropout, this layer's mode. */
  private adapterOptions(name: string): LoraDeltaOptions {
    const spec = this.specs.get(name)!;
    return { scaling: spec.scaling, dropout: spec.dropout, training: this.training, generator: spec.generator };
  }

  /** x [.., in] -> [.., out]. */
  forward(x: Tensor): Tensor {
    const adapters = this.unmergedActive();
    const only = adapters.length === 1 ? adapters[0]! : null;
    const aug = only !== null ? this.oneGemmWeight(only) : null;
    if (aug) return loraLinear(x, aug, this.loraA(only!), this.loraB(only!), this.base_layer.bias, this.adapterOptions(only!));
    let y = this.base_layer.forward(x);
    for (const name of adapters) {
      // consumeY: y is this layer's own intermediate (the base output or the previous adapter's), never read again.
      const opts = { ...this.adapterOptions(name), consumeY: true };
      const m = this.magnitude(name);
      y = m ? doraForward(this.doraOperands(name), y, x, this.loraA(name), this.loraB(name), m, opts) : loraDelta(y, x, this.loraA(name), this.loraB(name), opts);
      const b = this.loraBias(name);
      if (b) y = add(y, scale(b, opts.scaling)); // lora_B's bias, scaled with its product: s·(B·A·x + b)
    }
    return y;
  }
}

/** LoRA around nn.Embedding: A [r, num] (zeros at init) and B [dim, r] (N(0, 1)), no dropout. */
export class LoraEmbedding extends LoraLayerBase<Embedding> {
  declare lora_embedding_A: AdapterDict;
  declare lora_embedding_B: AdapterDict;

  constructor(base: Embedding) {
    super(base);
    this.registerModule("lora_embedding_A", new AdapterDict());
    this.registerModule("lora_embedding_B", new AdapterDict());
  }

  addAdapter(name: string, spec: AdapterSpec): void {
    if (this.specs.has(name)) throw new Error(`LoRA adapter "${name}" already exists on this layer`);
    if (spec.useDora) {
      throw new Error(`DoRA (useDora) is implemented for Linear and Conv1D layers, not embeddings (adapter "${name}"); leave embeddings out of targetModules or set useDora: false`);
    }
    const { r, generator } = spec;
    const { numEmbeddings: num, embeddingDim: dim } = this.base_layer;
    const device = this.base_layer.weight.device;
    let A: Tensor, B: Tensor;
    // PEFT's embedding layers have no PiSSA/OLoRA: those inits fall through to the default one.
    if (spec.init === true || isBaseMutatingInit(spec.init)) {
      A = zeros([r, num], { device });
      B = randn([dim, r], { device, generator });
    } else if (spec.init === "gaussian") {
      A = randn([r, num], { std: 1 / r, device, generator });
      B = zeros([dim, r], { device });
    } else {
      // PEFT's init false leaves the parameters as created (normal): both random.
      A = randn([r, num], { device, generator });
      B = randn([dim, r], { device, generator });
    }
    this.lora_embedding_A.registerParameter(name, A);
    this.lora_embedding_B.registerParameter(name, B);
    this.specs.set(name, spec);
  }

  protected adapterParameters(name: string): Tensor[] {
    return [this.loraA(name), this.loraB(name)];
  }

  protected removeAdapterParameters(name: string): void {
    for (const dict of [this.lora_embedding_A, this.lora_embedding_B]) {
      const t = (dict as unknown as Record<string, Tensor>)[name]!;
      dict.registerParameter(name, null);
      t.dispose();
    }
  }

  loraA(name: string): Tensor {
    return (this.lora_embedding_A as unknown as Record<string, Tensor>)[name]!;
  }
  loraB(name: string): Tensor {
    return (this.lora_embedding_B as unknown as Record<string, Tensor>)[name]!;
  }

  // W [num, dim] += s·(B·A)ᵀ = s·Aᵀ·Bᵀ.
  protected accumulateDelta(target: Tensor, name: string, sign: number): void {
    loraMerge(target, this.loraA(name), this.loraB(name), sign * this.specs.get(name)!.scaling, true); // W [num, dim] += s·(B·A)ᵀ
  }

  /** ids int32 [...] -> [..., dim]. */
  forward(ids: Tensor): Tensor {
    const adapters = this.unmergedActive();
    let y = this.base_layer.forward(ids);
    for (const name of adapters) {
      const spec = this.specs.get(name)!;
      const rows = embedding(ids, this.loraA(name).transpose(0, 1)); // [..., r]
      y = add(y, scale(linear(rows, this.loraB(name)), spec.scaling));
    }
    return y;
  }
}

export type LoraLayer = LoraLinear | LoraEmbedding;

/** Wraps a supported base layer, or returns null for anything else. */
export function wrapWithLora(base: Module): LoraLayer | null {
  if (base instanceof Linear || base instanceof Conv1D) return new LoraLinear(base);
  if (base instanceof Embedding) return new LoraEmbedding(base);
  return null;
}

/** A same-shaped zero tensor on t's device, replacing t (which is disposed). */
function zeroLike(t: Tensor): Tensor {
  return replace(t, zeros(t.shape, { device: t.device }));
}

function replace(old: Tensor, fresh: Tensor): Tensor {
  old.dispose();
  return keep(fresh);
}
