// PEFT's modules_to_save (ModulesToSaveWrapper in peft/utils/other.py, peft 0.21): modules that
// are trained in full next to the adapter, e.g. a classification head or a final layer norm. The
// wrapper takes the module's place in the model and holds
//   original_module                  the module as it was, frozen
//   modules_to_save.<adapter>        a full copy per adapter, trainable while its adapter is active
// and forward runs the active adapter's copy, or the original when adapters are disabled or the
// active adapter has no copy here. Other attributes (a LayerNorm's weight, an embedding's table)
// are read from the module forward would run, as PEFT's __getattr__ does, so code that reaches
// into the module (a model's generationSpec reads its embeddings' weight) sees the tensors forward
// uses. A tied head keeps the original's tensor: it is its own module (lm_head), not a read of it.
// Saved keys drop the wrapper: `base_model.model.<path>.<param>` (reference §2).
import { Module, ModuleList } from "../nn/module.js";
import { noGrad, type Tensor } from "../tensor/tensor.js";
import { AdapterDict, LoraEmbedding, LoraLinear } from "./layer.js";

/** Module's registration maps, which a deep copy has to rebuild (TypeScript-protected, plain fields at run time). */
interface ModuleSlots {
  _parameters: Map<string, Tensor | null>;
  _buffers: Map<string, Tensor | null>;
  _nonPersistent: Set<string>;
  _modules: Map<string, Module | null>;
}
const slots = (m: Module): ModuleSlots => m as unknown as ModuleSlots;
const SLOT_FIELDS: ReadonlySet<PropertyKey> = new Set(["_parameters", "_buffers", "_nonPersistent", "_modules"]);

/**
 * A deep copy of a module (PyTorch's copy.deepcopy for a module tree): the same class, its
 * parameters and buffers copied, submodules copied recursively, every other field (sizes, eps, a
 * config object, a random generator) shared with the original.
 */
export function cloneModule<M extends Module>(src: M): M {
  return noGrad(() => {
    const copy = Object.create(Object.getPrototypeOf(src)) as M;
    const from = slots(src), to = slots(copy);
    for (const key of Reflect.ownKeys(src)) {
      const desc = Object.getOwnPropertyDescriptor(src, key)!;
      // registered slots are accessors that the registrations below define again
      if (SLOT_FIELDS.has(key) || desc.get !== undefined) continue;
      Object.defineProperty(copy, key, desc);
    }
    Object.assign(to, { _parameters: new Map(), _buffers: new Map(), _nonPersistent: new Set(), _modules: new Map() });
    for (const [name, t] of from._parameters) {
      const p = copy.registerParameter(name, t ? t.contiguous() : null);
      if (p) p.requiresGrad = t!.requiresGrad;
    }
    for (const [name, t] of from._buffers) copy.registerBuffer(name, t ? t.contiguous() : null, { persistent: !from._nonPersistent.has(name) });
    for (const [name, m] of from._modules) copy.registerModule(name, m ? cloneModule(m) : null);
    return copy;
  });
}

/** Parameters and persistent buffers with dotted names: what state_dict() holds, as the tensors themselves. */
function persistentState(m: Module): [string, Tensor][] {
  const out: [string, Tensor][] = [];
  for (const [path, mod] of m.namedModules()) {
    const s = slots(mod);
    const own = [...s._parameters, ...[...s._buffers].filter(([name]) => !s._nonPersistent.has(name))];
    for (const [name, t] of own) if (t) out.push([path ? `${path}.${name}` : name, t]);
  }
  return out;
}

type Forward = { forward(...args: unknown[]): unknown };

export class ModulesToSaveWrapper extends Module {
  declare original_module: Module;
  declare modules_to_save: AdapterDict;
  /** The adapter whose copy forward runs (PEFT allows one here), or null: the original runs. */
  activeAdapter: string | null = null;
  /** disableAdapter(): the original runs. */
  disabled = false;

  constructor(original: Module) {
    super();
    if (original instanceof ModuleList || original instanceof AdapterDict) {
      throw new Error(`modulesToSave cannot be applied to a ${original.constructor.name}; name the module inside it that should be trained`);
    }
    if (original instanceof LoraLinear || original instanceof LoraEmbedding || original instanceof ModulesToSaveWrapper) {
      throw new Error(`modulesToSave cannot be applied to a ${original.constructor.name} (a module that already carries adapters)`);
    }
    this.registerModule("original_module", original);
    this.registerModule("modules_to_save", new AdapterDict());
    original.requiresGrad_(false);
    // Attributes the wrapper lacks are read from the module forward runs (PEFT's __getattr__).
    for (const key of Object.keys(original)) {
      if (key in this) continue;
      Object.defineProperty(this, key, { get: () => (this.current as unknown as Record<string, unknown>)[key], configurable: true });
    }
  }

  get adapterNames(): string[] {
    return this.modules_to_save.namedChildren().map(([name]) => name);
  }

  /** The module forward runs now. */
  get current(): Module {
    if (this.disabled || this.activeAdapter === null) return this.original_module;
    return this.modules_to_save.getSubmodule(this.activeAdapter);
  }

  /** Gives `name` its own copy of the original module (frozen until setAdapter makes it active). */
  addAdapter(name: string): void {
    if (this.adapterNames.includes(name)) return;
    const copy = cloneModule(this.original_module);
    // a bfloat16 original (a model loaded with dtype "bfloat16") is copied to float32: lowrank trains
    // no bf16 weight, so the copy is a float32 master, as LoRA's factors are (saved in float32 too)
    const first = copy.parameters()[0];
    if (copy.parameters().some((p) => p.dtype === "bfloat16")) copy.to(first!.device, "float32");
    copy.requiresGrad_(false);
    this.modules_to_save.registerModule(name, copy);
  }

  /** Makes `name`'s copy the one forward runs (null: none, the original runs) and the only trainable one here. */
  setAdapter(name: string | null, trainable: boolean): void {
    if (name !== null && !this.adapterNames.includes(name)) {
      throw new Error(`modulesToSave: no copy for adapter "${name}" here (copies: ${this.adapterNames.join(", ") || "none"})`);
    }
    for (const [n, copy] of this.modules_to_save.namedChildren()) copy.requiresGrad_(n === name && trainable);
    this.activeAdapter = name;
  }

  deleteAdapter(name: string): void {
    if (!this.adapterNames.includes(name)) return;
    const copy = this.modules_to_save.getSubmodule(name);
    this.modules_to_save.registerModule(name, null);
    copy.dispose();
    if (this.activeAdapter === name) this.activeAdapter = null;
  }

  /** The copy of `name` as PEFT saves it: [parameter or buffer name inside the module, tensor]. */
  adapterState(name: string): [string, Tensor][] {
    return this.adapterNames.includes(name) ? persistentState(this.modules_to_save.getSubmodule(name)) : [];
  }

  forward(...args: unknown[]): unknown {
    return (this.current as unknown as Forward).forward(...args);
  }
}

/**
 * The modules that PEFT's _set_trainable wraps for `entries`: every module whose full name ends
 * with an entry (a plain string suffix, not a regex). Matches inside an already matched module are
 * left out (the outer copy contains them).
 */
export function findModulesToSave(modulePaths: readonly string[], entries: readonly string[]): string[] {
  const found: string[] = [];
  for (const path of modulePaths) {
    if (path === "" || !entries.some((e) => path.endsWith(e))) continue;
    if (found.some((outer) => path.startsWith(outer + "."))) continue;
    found.push(path);
  }
  return found;
}
