// The module tree, after torch.nn.Module. A module owns parameters (trainable leaf tensors),
// buffers (other state, e.g. running statistics) and submodules, each registered under a name in
// insertion order. Registration also defines a property of that name, so `this.weight` reads the
// registered tensor and assigning `this.weight = t` (or setSubmodule("a.b", m)) re-registers:
// the tree and the fields can never disagree. Subclasses declare the fields for typing:
//
//   class Block extends Module {
//     declare fc: Linear;
//     constructor() { super(); this.registerModule("fc", new Linear(4, 4)); }
//     forward(x: Tensor) { return this.fc.forward(x); }
//   }
//
// Parameters and buffers are taken out of tidy() scopes (keep()) and live until dispose().
import { parseDevice, type DeviceLike } from "../tensor/device.js";
import type { DType } from "../tensor/dtype.js";
import { keep, tidy } from "../tensor/scope.js";
import { copyInto, formatShape, noGrad, type Tensor } from "../tensor/tensor.js";

/** Parameter and persistent-buffer names (dotted paths) to tensors. */
export type StateDict = Record<string, Tensor>;

export interface LoadStateDictResult {
  missingKeys: string[];
  unexpectedKeys: string[];
}

type Slot = "parameter" | "buffer" | "module";

/**
 * Tensors that have been registered as parameters. Registering a tensor the first time turns its
 * gradient on (like wrapping it in nn.Parameter); registering it again (tied weights, re-assigning
 * the same field) leaves a frozen parameter frozen.
 */
const knownParameters = new WeakSet<Tensor>();

export class Module {
  /** Training mode (dropout active). Set recursively with train() / eval(). */
  training = true;
  protected readonly _parameters = new Map<string, Tensor | null>();
  protected readonly _buffers = new Map<string, Tensor | null>();
  /** Buffers left out of stateDict() (derived state such as masks). */
  protected readonly _nonPersistent = new Set<string>();
  protected readonly _modules = new Map<string, Module | null>();

  /** Runs forward(): `layer.call(x)` is `layer.forward(x)`, typed by the subclass's forward. */
  call<A extends unknown[], R>(this: { forward(...args: A): R }, ...args: A): R {
    return this.forward(...args);
  }

  // ---- registration ---------------------------------------------------------------------------

  /**
   * Registers `t` as a parameter: a leaf kept out of tidy() scopes, requiring grad unless it was
   * registered (and frozen) before. null reserves the name (an absent optional bias). Returns t.
   */
  registerParameter<T extends Tensor | null>(name: string, t: T): T {
    if (t) {
      if (t.dtype === "int32") throw new Error(`registerParameter: "${name}" is int32; parameters are floating tensors (register it as a buffer)`);
      if (!t.isLeaf) throw new Error(`registerParameter: "${name}" is the result of an op; register a leaf (t.detach(), or create it directly)`);
      keep(t);
      if (!knownParameters.has(t)) {
        knownParameters.add(t);
        t.requiresGrad = true;
      }
      t.name ??= name;
    }
    this.define(name, "parameter");
    this._parameters.set(name, t);
    return t;
  }

  /** Registers non-trainable state; `persistent: false` leaves it out of stateDict(). Returns t. */
  registerBuffer<T extends Tensor | null>(name: string, t: T, opts: { persistent?: boolean } = {}): T {
    if (t) keep(t);
    this.define(name, "buffer");
    this._buffers.set(name, t);
    if (opts.persistent === false) this._nonPersistent.add(name);
    else this._nonPersistent.delete(name);
    return t;
  }

  /** Registers a submodule (null reserves the name). Returns m. */
  registerModule<M extends Module | null>(name: string, m: M): M {
    if (m === (this as Module)) throw new Error(`registerModule: a module cannot contain itself (as "${name}")`);
    this.define(name, "module");
    this._modules.set(name, m);
    return m;
  }

  /** Defines the property `name` that reads and re-registers the slot; refuses names taken otherwise. */
  private define(name: string, slot: Slot): void {
    if (!name || name.includes(".")) throw new Error(`register ${slot}: invalid name "${name}"; names are non-empty and contain no "."`);
    const taken = this.slotOf(name);
    if (taken && taken !== slot) throw new Error(`register ${slot}: "${name}" is already registered as a ${taken} of ${this.constructor.name}`);
    // A declared-but-unset class field (`weight!: Tensor;`) is undefined and may be taken over.
    if (!taken && name in this && (this as Record<string, unknown>)[name] !== undefined) throw new Error(`register ${slot}: "${name}" would shadow a property of ${this.constructor.name}; choose another name`);
    if (taken) return;
    Object.defineProperty(this, name, {
      enumerable: true,
      configurable: true,
      get: () => (slot === "parameter" ? this._parameters : slot === "buffer" ? this._buffers : this._modules).get(name),
      set: (v: never) => {
        if (slot === "parameter") this.registerParameter(name, v);
        else if (slot === "buffer") this.registerBuffer(name, v, { persistent: !this._nonPersistent.has(name) });
        else this.registerModule(name, v);
      },
    });
  }

  private slotOf(name: string): Slot | null {
    return this._parameters.has(name) ? "parameter" : this._buffers.has(name) ? "buffer" : this._modules.has(name) ? "module" : null;
  }

  // ---- traversal ------------------------------------------------------------------------------

  /** Direct submodules with their names, in registration order. */
  namedChildren(): [string, Module][] {
    return [...this._modules].filter((e): e is [string, Module] => e[1] !== null);
  }

  children(): Module[] {
    return this.namedChildren().map(([, m]) => m);
  }

  /** This module ("") and every submodule, depth first in registration order, each once. */
  namedModules(): [string, Module][] {
    const out: [string, Module][] = [];
    const seen = new Set<Module>();
    const visit = (m: Module, path: string): void => {
      if (seen.has(m)) return;
      seen.add(m);
      out.push([path, m]);
      for (const [name, child] of m.namedChildren()) visit(child, path ? `${path}.${name}` : name);
    };
    visit(this, "");
    return out;
  }

  modules(): Module[] {
    return this.namedModules().map(([, m]) => m);
  }

  /**
   * Parameters with dotted names ("h.0.attn.c_attn.weight"): each module's own before its
   * submodules', in registration order. A tensor shared by several modules (tied weights) is
   * listed once, under its first name, unless `removeDuplicate` is false (torch's named_parameters).
   */
  namedParameters(opts: { removeDuplicate?: boolean } = {}): [string, Tensor][] {
    return this.namedTensors("parameter", opts.removeDuplicate ?? true);
  }

  parameters(): Tensor[] {
    return this.namedParameters().map(([, t]) => t);
  }

  namedBuffers(): [string, Tensor][] {
    return this.namedTensors("buffer", true);
  }

  private namedTensors(slot: "parameter" | "buffer", dedupe: boolean, persistentOnly = false): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    const seen = new Set<Tensor>();
    for (const [path, m] of this.namedModules()) {
      for (const [name, t] of slot === "parameter" ? m._parameters : m._buffers) {
        if (!t || (dedupe && seen.has(t)) || (persistentOnly && m._nonPersistent.has(name))) continue;
        seen.add(t);
        out.push([path ? `${path}.${name}` : name, t]);
      }
    }
    return out;
  }

  /** The submodule at a dotted path ("" is this module). */
  getSubmodule(path: string): Module {
    let m: Module = this;
    let at = "";
    for (const part of path === "" ? [] : path.split(".")) {
      const child = m._modules.get(part);
      if (!child) {
        const names = [...m._modules.keys()];
        throw new Error(
          `getSubmodule("${path}"): ${m.constructor.name}${at ? ` at "${at}"` : ""} has no submodule "${part}"` +
            (names.length ? ` (it has: ${names.join(", ")})` : " (it has no submodules)"),
        );
      }
      m = child;
      at = at ? `${at}.${part}` : part;
    }
    return m;
  }

  /**
   * Replaces the submodule at a dotted path (how LoRA layers are injected) and returns the one it
   * replaced. The slot must exist unless `strict` is false, which adds it.
   */
  setSubmodule(path: string, m: Module, opts: { strict?: boolean } = {}): Module | null {
    const cut = path.lastIndexOf(".");
    const parent = this.getSubmodule(cut < 0 ? "" : path.slice(0, cut));
    const name = path.slice(cut + 1);
    if (!parent._modules.has(name) && opts.strict !== false) {
      throw new Error(
        `setSubmodule("${path}"): ${parent.constructor.name} has no submodule "${name}" to replace ` +
          `(it has: ${[...parent._modules.keys()].join(", ") || "none"}); pass { strict: false } to add one`,
      );
    }
    const old = parent._modules.get(name) ?? null;
    parent.registerModule(name, m);
    return old;
  }

  // ---- modes and gradients --------------------------------------------------------------------

  /** Sets training mode on this module and every submodule. */
  train(mode = true): this {
    for (const m of this.modules()) m.training = mode;
    return this;
  }

  /** Evaluation mode: train(false). */
  eval(): this {
    return this.train(false);
  }

  /** Turns gradients of every parameter on or off (off also frees their .grad). */
  requiresGrad_(value = true): this {
    for (const p of this.parameters()) p.requiresGrad = value;
    return this;
  }

  /** Freezes every parameter: requiresGrad_(false). */
  freeze(): this {
    return this.requiresGrad_(false);
  }

  /** Frees the gradients of every parameter (grad = null). */
  zeroGrad(): void {
    for (const p of this.parameters()) {
      p.grad?.dispose();
      p.grad = null;
    }
  }

  // ---- state ----------------------------------------------------------------------------------

  /**
   * Every parameter and persistent buffer by dotted name, as views sharing their memory (dispose
   * them, or call this inside tidy()). Tied tensors appear under each of their names, like PyTorch.
   */
  stateDict(): StateDict {
    const out: StateDict = {};
    for (const [name, t] of this.stateEntries()) out[name] = t.detach();
    return out;
  }

  /** Parameters and persistent buffers of each module (own first, then submodules), not deduplicated. */
  private stateEntries(): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    for (const [path, m] of this.namedModules()) {
      const own = [...m._parameters, ...[...m._buffers].filter(([name]) => !m._nonPersistent.has(name))];
      for (const [name, t] of own) if (t) out.push([path ? `${path}.${name}` : name, t]);
    }
    return out;
  }

  /**
   * Copies a state dict into the existing parameters and buffers, in place, converting dtype and
   * device. Checks everything before copying anything: mis-shaped keys always throw; missing and
   * unexpected keys throw when `strict` (default), else are returned.
   */
  loadStateDict(dict: StateDict, opts: { strict?: boolean } = {}): LoadStateDictResult {
    const strict = opts.strict !== false;
    const own = this.stateEntries();
    const ownNames = new Set(own.map(([name]) => name));
    // a tied tensor is loaded once it is given under one of its names
    const given = new Set(own.filter(([name]) => Object.hasOwn(dict, name)).map(([, t]) => t));
    const missingKeys = own.filter(([name, t]) => !Object.hasOwn(dict, name) && !given.has(t)).map(([name]) => name);
    const unexpectedKeys = Object.keys(dict).filter((name) => !ownNames.has(name));
    const mismatched = own
      .filter(([name, t]) => Object.hasOwn(dict, name) && (dict[name]!.ndim !== t.ndim || dict[name]!.shape.some((s, i) => s !== t.shape[i])))
      .map(([name, t]) => {
        const src = dict[name]!.shape;
        const transposed = src.length === 2 && src[0] === t.shape[1] && src[1] === t.shape[0];
        return `"${name}": checkpoint ${formatShape(src)}, model ${formatShape(t.shape)}${transposed ? " (transposed? Conv1D stores [in, out], Linear [out, in])" : ""}`;
      });
    if (mismatched.length > 0 || (strict && (missingKeys.length > 0 || unexpectedKeys.length > 0))) {
      const lines = [`loadStateDict: cannot load the state dict into ${this.constructor.name}:`];
      if (missingKeys.length) lines.push(`  missing keys (${missingKeys.length}): ${missingKeys.join(", ")}`);
      if (unexpectedKeys.length) lines.push(`  unexpected keys (${unexpectedKeys.length}): ${unexpectedKeys.join(", ")}`);
      if (mismatched.length) lines.push(`  shape mismatches (${mismatched.length}): ${mismatched.join("; ")}`);
      if (!mismatched.length) lines.push("  pass { strict: false } to load the keys that match and get the others back");
      throw new Error(lines.join("\n"));
    }
    noGrad(() => {
      for (const [name, dst] of own) {
        if (!Object.hasOwn(dict, name)) continue;
        const src = dict[name]!;
        if (src.dtype === dst.dtype && src.device === dst.device) {
          copyInto(dst, src);
        } else {
          const converted = src.to(dst.device, dst.dtype);
          copyInto(dst, converted);
          converted.dispose();
        }
      }
    });
    return { missingKeys, unexpectedKeys };
  }

  /**
   * Moves every parameter and buffer to `device` (and floating ones to `dtype` when given), in
   * place of the old tensors, which are freed. Tied tensors stay tied. Gradients are dropped.
   * `select(module, name)` limits the dtype change to the tensors it accepts (all by default).
   */
  to(device: DeviceLike, dtype?: DType, select: (module: Module, name: string) => boolean = () => true): this {
    const dev = parseDevice(device, "Module.to").name;
    const moved = new Map<Tensor, Tensor>();
    const convert = (t: Tensor, retype: boolean): Tensor => {
      const target = retype && dtype && t.dtype !== "int32" ? dtype : t.dtype;
      if (t.device === dev && t.dtype === target) return t;
      let out = moved.get(t);
      if (!out) {
        out = keep(noGrad(() => t.to(dev, target)));
        if (knownParameters.has(t)) knownParameters.add(out);
        if (t.requiresGrad) out.requiresGrad = true;
        if (t.name !== undefined) out.name = t.name;
        moved.set(t, out);
      }
      return out;
    };
    for (const m of this.modules()) {
      for (const map of [m._parameters, m._buffers]) for (const [name, t] of map) if (t) map.set(name, convert(t, select(m, name)));
    }
    for (const old of moved.keys()) old.dispose();
    return this;
  }

  /**
   * Frees every parameter and buffer (and their gradients), except those in `keep` (tensors other
   * modules still hold: a tied weight). The module is unusable afterwards.
   */
  dispose(keep: ReadonlySet<Tensor> = new Set()): void {
    for (const m of this.modules()) m.disposeOwned();
    for (const t of [...this.parameters(), ...this.namedBuffers().map(([, b]) => b)]) if (!keep.has(t)) t.dispose();
  }

  /** Frees what this module holds besides its parameters and buffers (a cache); dispose() calls it on every submodule. */
  protected disposeOwned(): void {}

  [Symbol.dispose](): void {
    this.dispose();
  }
}

/** A list of submodules registered as "0", "1", ... (GPT-2's `h`). */
export class ModuleList<M extends Module = Module> extends Module implements Iterable<M> {
  constructor(modules: Iterable<M> = []) {
    super();
    for (const m of modules) this.append(m);
  }

  get length(): number {
    return this._modules.size;
  }

  append(m: M): this {
    this.registerModule(String(this.length), m);
    return this;
  }

  /** The i-th module (negative counts from the end). */
  at(i: number): M {
    const j = i < 0 ? i + this.length : i;
    const m = this._modules.get(String(j));
    if (!Number.isInteger(j) || !m) throw new Error(`ModuleList.at(${i}): index out of range for a list of ${this.length} modules`);
    return m as M;
  }

  *[Symbol.iterator](): Iterator<M> {
    for (let i = 0; i < this.length; i++) yield this.at(i);
  }

  /**
   * Runs x through the modules in order (a stack of transformer blocks), each call inside its own
   * tidy() scope, and disposes each module's input once its output exists. What a block computes
   * and its backward did not save is so freed as the forward goes, as Python frees a tensor when
   * its last reference drops, instead of at the end of the caller's scope: a training step's peak
   * holds the saved activations plus one block's intermediates, not every block's. x is the
   * caller's to give up: it is disposed (its storage lives on where a backward saved it).
   */
  chain(x: Tensor, forward: (module: M, x: Tensor) => Tensor): Tensor {
    for (const m of this) {
      const out = tidy(() => forward(m, x));
      if (out !== x) x.dispose();
      x = out;
    }
    return x;
  }
}
