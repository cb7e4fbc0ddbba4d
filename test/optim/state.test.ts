// Optimizer state: save/restore is exact, state dicts are copies, flat checkpoints round-trip
// through JSON, memory is freed deterministically, and bad state is refused with the param named.
import { describe, expect, it } from "vitest";
import { memory, noGrad, tensor, tidy, type Tensor } from "../../lib/index.js";
import {
  AdamW, fromStateTensors, SGD, type BaseOptions, type FlatOptimizerState, type Optimizer, type OptimizerStateDict, type ParamState,
  type SGDOptions,
} from "../../lib/optim/index.js";
import { randomValues } from "../helpers.js";
import { expectBitEqual } from "./fixture.js";

const SHAPES = [[6, 5], [4097], [3]];

function makeParams(): Tensor[] {
  return SHAPES.map((s, k) => {
    const p = tensor(randomValues(s.reduce((a, b) => a * b), 30 + k), { shape: s }).requireGrad();
    p.name = `p${k}`;
    return p;
  });
}

/** Gradients for step `step` (the same on every run); param 2 gets none on odd steps. */
function setGrads(params: Tensor[], step: number): void {
  params.forEach((p, k) => {
    p.grad?.dispose();
    p.grad = k === 2 && step % 2 === 1 ? null : tensor(randomValues(p.size, 1000 * step + k), { shape: p.shape });
  });
}

/** Disposes the tensors of a state dict the test received. */
function disposeDict<O>(d: OptimizerStateDict<O>): void {
  for (const entry of Object.values(d.state)) for (const v of Object.values(entry)) if (typeof v !== "number") v.dispose();
}

const cpuBytes = () => memory().cpu?.bytes ?? 0;
const cpuTensors = () => memory().cpu?.tensors ?? 0;

/** 3 steps, save, 2 more steps; then a fresh optimizer restored from the save takes the same 2 steps. */
function checkResume<O extends BaseOptions, S extends ParamState>(make: (ps: Tensor[]) => Optimizer<O, S>): void {
  const params = makeParams();
  const opt = make(params);
  for (let s = 0; s < 3; s++) {
    setGrads(params, s);
    opt.step();
  }
  const savedParams = noGrad(() => params.map((p) => p.clone()));
  const saved = opt.stateDict();
  const lr = opt.paramGroups[0]!.lr;
  opt.paramGroups[0]!.lr = lr / 2; // as a scheduler would, after the save
  for (let s = 3; s < 5; s++) {
    setGrads(params, s);
    opt.step();
  }

  // The saved dict is a copy: stepping on did not change it.
  const firstTensor = (d: OptimizerStateDict<O>) => (Object.values(d.state[0]!).find((v) => typeof v !== "number") as Tensor).dataSync();
  tidy(() => expect(Array.from(firstTensor(saved))).not.toEqual(Array.from(firstTensor(opt.stateDict()))));

  const restored = savedParams.map((p, k) => {
    const r = p.clone().requireGrad();
    r.name = `p${k}`;
    return r;
  });
  const opt2 = make(restored);
  opt2.paramGroups[0]!.lr = 1;
  opt2.loadStateDict(saved);
  expect(opt2.paramGroups[0]!.lr).toBe(lr);
  opt2.paramGroups[0]!.lr = lr / 2;
  for (let s = 3; s < 5; s++) {
    setGrads(restored, s);
    opt2.step();
  }
  params.forEach((p, k) => expectBitEqual(restored[k]!.dataSync(), p.dataSync(), `param ${k}`));
  tidy(() => {
    const a = opt.stateDict(), b = opt2.stateDict();
    expect(Object.keys(b.state)).toEqual(Object.keys(a.state));
    for (const [id, entry] of Object.entries(a.state)) {
      for (const [key, v] of Object.entries(entry)) {
        const w = b.state[Number(id)]![key]!;
        if (typeof v === "number") expect(w).toBe(v);
        else expectBitEqual((w as Tensor).dataSync(), v.dataSync(), `state ${id}.${key}`);
      }
    }
  });
  disposeDict(saved);
  [opt, opt2].forEach((o) => o.dispose());
  [...params, ...savedParams, ...restored].forEach((p) => p.dispose());
}

describe("optimizer state", () => {
  it("AdamW with two groups: 3 steps, save, 2 more == restore into a fresh optimizer, 2 steps (bit-exact)", () => {
    checkResume((ps) => new AdamW([{ params: ps.slice(0, 2) }, { params: ps.slice(2), weightDecay: 0, lr: 3e-3 }], { lr: 1e-2 }));
  });

  it("SGD with Nesterov momentum: 3 steps, save, 2 more == restore into a fresh optimizer, 2 steps (bit-exact)", () => {
    checkResume((ps) => new SGD(ps, { lr: 1e-2, momentum: 0.9, nesterov: true, weightDecay: 1e-3 }));
  });

  it("stateTensors -> JSON metadata + raw float32 data -> loadStateTensors restores the state exactly", () => {
    const params = makeParams();
    const opt = new AdamW(params, { lr: 1e-2 });
    for (let s = 0; s < 2; s++) {
      setGrads(params, s);
      opt.step();
    }
    const flat = opt.stateTensors();
    expect(Object.keys(flat.tensors).sort()).toEqual(["state.0.expAvg", "state.0.expAvgSq", "state.1.expAvg", "state.1.expAvgSq", "state.2.expAvg", "state.2.expAvgSq"]);
    expect(flat.metadata.scalars).toEqual({ 0: { step: 2 }, 1: { step: 2 }, 2: { step: 1 } });
    // What a checkpoint writer and reader would do: metadata through JSON, tensors through bytes.
    const metadata = JSON.parse(JSON.stringify(flat.metadata)) as typeof flat.metadata;
    const tensors = Object.fromEntries(Object.entries(flat.tensors).map(([k, t]) => [k, tensor(t.dataSync(), { shape: t.shape })]));
    const opt2 = new AdamW(params, { lr: 1 });
    opt2.loadStateTensors({ tensors, metadata });
    expect(opt2.paramGroups[0]!.lr).toBe(1e-2);
    tidy(() => {
      const a = opt.stateDict(), b = opt2.stateDict();
      expect(b.paramGroups).toEqual(a.paramGroups);
      for (const id of [0, 1, 2]) {
        expect(b.state[id]!.step).toBe(a.state[id]!.step);
        expectBitEqual((b.state[id]!.expAvgSq as Tensor).dataSync(), (a.state[id]!.expAvgSq as Tensor).dataSync(), `expAvgSq ${id}`);
      }
    });
    const sgd = new SGD(params, { momentum: 0.9 });
    // as if read from a file written by AdamW (the types cannot know)
    const fromFile = { tensors, metadata } as unknown as FlatOptimizerState<SGDOptions>;
    expect(() => sgd.loadStateTensors(fromFile)).toThrow(/saved by AdamW, not SGD; load it into a AdamW/);
    expect(() => sgd.loadStateDict(fromStateTensors(fromFile))).toThrow(/state of param 0 \("p0"\) \[6, 5\] has entries \[expAvg, expAvgSq, step\] but SGD expects \[momentumBuffer\]/);
    [...Object.values(flat.tensors), ...Object.values(tensors)].forEach((t) => t.dispose());
    [opt, opt2, sgd].forEach((o) => o.dispose());
    params.forEach((p) => p.dispose());
  });

  it("refuses state of the wrong shape or layout, naming the param, and changes nothing", () => {
    const params = makeParams();
    const opt = new AdamW(params);
    setGrads(params, 0);
    opt.step();
    const dict = opt.stateDict();
    const before = tidy(() => Array.from((opt.stateDict().state[1]!.expAvg as Tensor).dataSync()));
    const wrong = tensor(new Float32Array(30), { shape: [5, 6] });
    const original = dict.state[0]!.expAvg as Tensor;
    dict.state[0]!.expAvg = wrong;
    expect(() => opt.loadStateDict(dict)).toThrow(/state "expAvg" of param 0 \("p0"\) \[6, 5\] has shape \[5, 6\] but the param has shape \[6, 5\]/);
    dict.state[0]!.expAvg = original;
    expect(() => opt.loadStateDict({ ...dict, paramGroups: [...dict.paramGroups, dict.paramGroups[0]!] })).toThrow(/has 2 parameter group\(s\) but this optimizer has 1/);
    expect(() => opt.loadStateDict({ ...dict, paramGroups: [{ ...dict.paramGroups[0]!, params: [0, 1] }] })).toThrow(/group 0 has 2 param\(s\) in the state dict but 3 here/);
    expect(() => opt.loadStateDict({ ...dict, paramGroups: [{ ...dict.paramGroups[0]!, eps: -1 }] })).toThrow(/invalid eps -1 in parameter group 0 of the state dict/);
    tidy(() => expect(Array.from((opt.stateDict().state[1]!.expAvg as Tensor).dataSync())).toEqual(before));
    wrong.dispose();
    disposeDict(dict);
    opt.dispose();
    params.forEach((p) => p.dispose());
  });

  it("zeroGrad frees the gradients and dispose frees the state: memory returns to its baseline", () => {
    const params = makeParams();
    const baseBytes = cpuBytes(), baseTensors = cpuTensors();
    const opt = new AdamW(params);
    setGrads(params, 0);
    expect(cpuBytes()).toBeGreaterThan(baseBytes);
    opt.zeroGrad();
    expect(params.every((p) => p.grad === null)).toBe(true);
    expect([cpuBytes(), cpuTensors()]).toEqual([baseBytes, baseTensors]);
    setGrads(params, 0);
    tidy(() => opt.step()); // state made inside a tidy scope still belongs to the optimizer
    opt.zeroGrad();
    const stateBytes = 2 * 4 * SHAPES.reduce((s, sh) => s + sh.reduce((a, b) => a * b), 0);
    expect(cpuBytes() - baseBytes).toBe(stateBytes);
    opt.dispose();
    expect([cpuBytes(), cpuTensors()]).toEqual([baseBytes, baseTensors]);
    params.forEach((p) => p.dispose());
  });
});
