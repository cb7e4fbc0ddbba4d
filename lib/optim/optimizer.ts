// The optimizer base: parameter groups with their own options (PyTorch's param_groups), per-param
// state owned by the optimizer, zeroGrad, and state dicts for checkpoints.
//
// Memory: state tensors live outside every tidy() scope (keep()) until dispose(). stateDict()
// returns copies that the caller owns, and loadStateDict() copies what it is given, so a saved
// dict never changes when training goes on (PyTorch hands out references; copying here keeps
// ownership simple and makes "save, train on, restore" exact).
import { isJsonObject } from "../io/json-object.js";
import { keep } from "../tensor/scope.js";
import { formatShape, noGrad, Tensor } from "../tensor/tensor.js";

/** Per-param state: tensors shaped like the param (moments, buffers) and numbers (step counts). */
export type ParamState = Record<string, Tensor | number>;

/** A parameter group: its tensors and the options they are optimized with (`lr` is what schedulers set). */
export type ParamGroup<O> = O & { params: Tensor[] };

/** A group as passed to a constructor: options left out take the optimizer's defaults. */
export type ParamGroupInput<O> = Partial<O> & { params: Iterable<Tensor> };

/** What optimizers accept: a flat list of tensors (one group) or a list of groups. */
export type Params<O> = Iterable<Tensor> | Iterable<ParamGroupInput<O>>;

/** Options every optimizer has, so schedulers can drive any of them. */
export interface BaseOptions {
  lr: number;
}

/**
 * PyTorch's optimizer.state_dict() layout: params are numbered in group order from 0; `state`
 * holds entries only for params that have state; each group lists its options and param ids.
 */
export interface OptimizerStateDict<O> {
  state: Record<number, ParamState>;
  paramGroups: (O & { params: number[] })[];
}

/**
 * The same state as a flat name -> tensor map (for a safetensors file) and JSON-able metadata.
 * Tensor names are `state.<param id>.<key>`; numbers sit in metadata.scalars[<param id>][<key>].
 */
export interface FlatOptimizerState<O> {
  tensors: Record<string, Tensor>;
  metadata: {
    optimizer: string;
    paramGroups: (O & { params: number[] })[];
    scalars: Record<string, Record<string, number>>;
  };
}

/** Which state entries a param of a group with these options has once it was stepped. */
export interface StateSpec {
  tensors: readonly string[];
  numbers: readonly string[];
}

export abstract class Optimizer<O extends BaseOptions, S extends ParamState> {
  readonly paramGroups: ParamGroup<O>[];
  /** State per param, created on the first step the param has a gradient. */
  protected readonly state = new Map<Tensor, S>();
  private disposed = false;

  constructor(
    /** Used in messages and in the flat state's metadata. */
    readonly name: string,
    params: Params<O>,
    readonly defaults: O,
  ) {
    this.validateOptions(defaults, "the defaults");
    this.paramGroups = parseGroups(name, params, defaults);
    this.paramGroups.forEach((g, i) => this.validateOptions(g, `param group ${i}`));
    const seen = new Set<Tensor>();
    this.params().forEach((p, i) => {
      if (!(p instanceof Tensor)) throw new Error(`${name}: param ${i} is not a Tensor`);
      const what = describeParam(p, i);
      if (seen.has(p)) throw new Error(`${name}: ${what} appears more than once; list each parameter in one group only`);
      seen.add(p);
      if (p.dtype !== "float32") throw new Error(`${name}: ${what} is ${p.dtype}; optimizers update float32 master copies (convert with .to(device, "float32"))`);
      if (!p.isLeaf) throw new Error(`${name}: ${what} is not a leaf tensor; optimize the tensors you created, not results of ops (use detach())`);
      if (!p.isContiguous()) throw new Error(`${name}: ${what} is a non-contiguous view; optimize a contiguous tensor (use .contiguous() once when building the model)`);
    });
  }

  /** Applies one update to every param that has a gradient; params without one are skipped. */
  abstract step(): void;

  /** Throws with a message that names the group unless the options are valid. */
  protected abstract validateOptions(options: O, where: string): void;

  /** The state entries a param of a group with these options has. */
  protected abstract stateSpec(options: O): StateSpec;

  /** Every param, in group order (the numbering state dicts use). */
  params(): Tensor[] {
    return this.paramGroups.flatMap((g) => g.params);
  }

  /** Frees every param's gradient (sets .grad to null), like PyTorch's zero_grad(set_to_none=True). */
  zeroGrad(): void {
    for (const p of this.params()) {
      p.grad?.dispose();
      p.grad = null;
    }
  }

  /** A copy of the optimizer state (the caller owns the tensors: dispose them or use tidy). */
  stateDict(): OptimizerStateDict<O> {
    this.checkLive("stateDict");
    const state: Record<number, ParamState> = {};
    noGrad(() =>
      this.params().forEach((p, id) => {
        const s = this.state.get(p);
        if (s) state[id] = Object.fromEntries(Object.entries(s).map(([k, v]) => [k, v instanceof Tensor ? v.clone() : v]));
      }),
    );
    let next = 0;
    const paramGroups = this.paramGroups.map(({ params, ...options }) => ({
      ...(structuredClone(options) as unknown as O),
      params: params.map(() => next++),
    }));
    return { state, paramGroups };
  }

  /**
   * Replaces the state and group options with copies of `dict`'s (the caller keeps ownership of
   * its tensors). The dict must come from an optimizer of the same kind over parameters of the
   * same shapes in the same order; everything is checked before anything changes.
   */
  loadStateDict(dict: OptimizerStateDict<O>): void {
    this.checkLive("loadStateDict");
    const op = `${this.name}.loadStateDict`;
    if (dict.paramGroups.length !== this.paramGroups.length) {
      throw new Error(`${op}: the state dict has ${dict.paramGroups.length} parameter group(s) but this optimizer has ${this.paramGroups.length}; build the optimizer with the same groups as the one that was saved`);
    }
    const byId = new Map<number, { param: Tensor; index: number; options: O }>();
    let index = 0;
    dict.paramGroups.forEach((saved, g) => {
      const current = this.paramGroups[g]!;
      if (saved.params.length !== current.params.length) {
        throw new Error(`${op}: parameter group ${g} has ${saved.params.length} param(s) in the state dict but ${current.params.length} here; build the optimizer with the same groups as the one that was saved`);
      }
      const { params: _ids, ...options } = saved;
      this.validateOptions({ ...current, ...options } as unknown as O, `parameter group ${g} of the state dict`);
      saved.params.forEach((id, j) => byId.set(id, { param: current.params[j]!, index: index++, options: options as unknown as O }));
    });
    for (const [key, entry] of Object.entries(dict.state)) {
      const target = byId.get(Number(key));
      if (!target) throw new Error(`${op}: the state dict has state for param id ${key}, which no parameter group lists`);
      this.checkEntry(op, entry, target.param, target.index, this.stateSpec(target.options));
    }

    this.disposeState();
    noGrad(() => {
      for (const [key, entry] of Object.entries(dict.state)) {
        const { param } = byId.get(Number(key))!;
        const copy = Object.fromEntries(
          Object.entries(entry).map(([k, v]) => [k, v instanceof Tensor ? keep(v.to(param.device, "float32")) : v]),
        );
        this.state.set(param, copy as S);
      }
    });
    dict.paramGroups.forEach(({ params: _ids, ...options }, g) => Object.assign(this.paramGroups[g]!, structuredClone(options)));
  }

  /** The state as flat tensors + JSON metadata (copies, owned by the caller), for checkpoint files. */
  stateTensors(): FlatOptimizerState<O> {
    const { state, paramGroups } = this.stateDict();
    const tensors: Record<string, Tensor> = {};
    const scalars: Record<string, Record<string, number>> = {};
    for (const [id, entry] of Object.entries(state)) {
      for (const [key, value] of Object.entries(entry)) {
        if (value instanceof Tensor) tensors[`state.${id}.${key}`] = value;
        else (scalars[id] ??= {})[key] = value;
      }
    }
    return { tensors, metadata: { optimizer: this.name, paramGroups, scalars } };
  }

  /** Loads what stateTensors() gave (possibly read back from a file); copies the tensors. */
  loadStateTensors(flat: FlatOptimizerState<O>): void {
    if (flat.metadata.optimizer !== this.name) {
      throw new Error(`${this.name}.loadStateTensors: the state was saved by ${flat.metadata.optimizer}, not ${this.name}; load it into a ${flat.metadata.optimizer}`);
    }
    this.loadStateDict(fromStateTensors(flat));
  }

  /** Frees the state tensors; the optimizer cannot step afterwards. */
  dispose(): void {
    this.disposeState();
    this.disposed = true;
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  // ---- for subclasses -------------------------------------------------------------------------

  protected checkLive(op: string): void {
    if (this.disposed) throw new Error(`${this.name}.${op}: the optimizer was disposed; create a new one (and loadStateDict to resume)`);
  }

  /**
   * The params that have a gradient, each with its group and its number, after checking that
   * the gradient can be used in place of the param (float32, same shape and device, contiguous).
   */
  protected paramsWithGrad(): { param: Tensor; grad: Tensor; group: ParamGroup<O>; index: number }[] {
    this.checkLive("step");
    const out: { param: Tensor; grad: Tensor; group: ParamGroup<O>; index: number }[] = [];
    let index = 0;
    for (const group of this.paramGroups) {
      for (const param of group.params) {
        const grad = param.grad;
        if (grad) {
          const what = describeParam(param, index);
          if (param.isDisposed) throw new Error(`${this.name}.step: ${what} was disposed; remove it from the optimizer`);
          if (grad.dtype !== "float32" || grad.device !== param.device || grad.shape.length !== param.shape.length || grad.shape.some((d, i) => d !== param.shape[i])) {
            throw new Error(`${this.name}.step: the gradient of ${what} is ${grad.dtype} ${formatShape(grad.shape)} on ${grad.device}, but it must be float32 ${formatShape(param.shape)} on ${param.device} like the param`);
          }
          if (!grad.isContiguous()) throw new Error(`${this.name}.step: the gradient of ${what} is a non-contiguous view; assign a contiguous tensor to .grad (use .contiguous())`);
          out.push({ param, grad, group, index });
        }
        index++;
      }
    }
    return out;
  }

  private checkEntry(op: string, entry: ParamState, param: Tensor, index: number, spec: StateSpec): void {
    const what = describeParam(param, index);
    const expected = [...spec.tensors, ...spec.numbers];
    const keys = Object.keys(entry);
    const unknown = keys.filter((k) => !expected.includes(k));
    const missing = expected.filter((k) => !keys.includes(k));
    if (unknown.length > 0 || missing.length > 0) {
      throw new Error(`${op}: the state of ${what} has entries [${keys.join(", ")}] but ${this.name} expects [${expected.join(", ")}]; the state dict comes from another kind of optimizer or other options`);
    }
    for (const key of spec.tensors) {
      const t = entry[key];
      if (!(t instanceof Tensor) || t.isDisposed) throw new Error(`${op}: state "${key}" of ${what} must be a live Tensor`);
      if (t.shape.length !== param.shape.length || t.shape.some((d, i) => d !== param.shape[i])) {
        throw new Error(`${op}: state "${key}" of ${what} has shape ${formatShape(t.shape)} but the param has shape ${formatShape(param.shape)}; the state dict was saved for other parameters (or in another order)`);
      }
    }
    for (const key of spec.numbers) {
      if (typeof entry[key] !== "number") throw new Error(`${op}: state "${key}" of ${what} must be a number`);
    }
  }

  private disposeState(): void {
    for (const s of this.state.values()) {
      for (const v of Object.values(s)) if (v instanceof Tensor) v.dispose();
    }
    this.state.clear();
  }
}

/** The inverse of stateTensors(): a state dict that refers to (does not copy) the flat tensors. */
export function fromStateTensors<O>(flat: FlatOptimizerState<O>): OptimizerStateDict<O> {
  // the metadata comes from a file (a checkpoint's optimizer.json): check its shape before use
  const { paramGroups, scalars } = (isJsonObject(flat.metadata) ? flat.metadata : {}) as Record<string, unknown>;
  if (!Array.isArray(paramGroups) || !paramGroups.every((g) => isJsonObject(g) && Array.isArray(g.params) && g.params.every((id) => Number.isSafeInteger(id)))) {
    throw new Error(`fromStateTensors: the metadata's "paramGroups" must be a list of groups, each with "params", a list of integer ids`);
  }
  if (!isJsonObject(scalars) || !Object.values(scalars).every(isJsonObject)) {
    throw new Error(`fromStateTensors: the metadata's "scalars" must map param ids to objects`);
  }
  const state: Record<number, ParamState> = {};
  for (const [name, t] of Object.entries(flat.tensors)) {
    const m = /^state\.(\d+)\.(\w+)$/.exec(name);
    if (!m) throw new Error(`fromStateTensors: tensor name "${name}" is not of the form state.<param id>.<key>`);
    (state[Number(m[1])] ??= {})[m[2]!] = t;
  }
  for (const [id, entry] of Object.entries(flat.metadata.scalars)) Object.assign((state[Number(id)] ??= {}), entry);
  return { state, paramGroups: flat.metadata.paramGroups };
}

/** Options with undefined entries removed, so they do not override defaults. */
export function definedOnly<T extends object>(options: T): Partial<T> {
  return Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** `param 3 ("name") [4, 8]`, for messages. */
export function describeParam(p: Tensor, index: number): string {
  return `param ${index}${p.name ? ` ("${p.name}")` : ""} ${formatShape(p.shape)}`;
}

function parseGroups<O extends BaseOptions>(name: string, params: Params<O>, defaults: O): ParamGroup<O>[] {
  const items = [...(params as Iterable<Tensor | ParamGroupInput<O>>)];
  if (items.length === 0) throw new Error(`${name}: got an empty parameter list; pass the trainable tensors (e.g. model.trainableParameters())`);
  const tensors = items.filter((x) => x instanceof Tensor).length;
  if (tensors > 0 && tensors < items.length) throw new Error(`${name}: pass either tensors or parameter groups ({ params, ...options }), not a mix`);
  const inputs: ParamGroupInput<O>[] = tensors > 0 ? [{ params: items as Tensor[] } as unknown as ParamGroupInput<O>] : (items as ParamGroupInput<O>[]);
  return inputs.map(({ params, ...options }, i) => {
    const list = [...params];
    if (list.length === 0) throw new Error(`${name}: parameter group ${i} has no params`);
    return { ...structuredClone(defaults), ...definedOnly(options), params: list } as ParamGroup<O>;
  });
}
