// An opt-in profile of the native calls, for finding where a training step's time goes.
// LOWRANK_PROFILE=1 (read once, when the addon loads) makes native/index.ts hand out the addon through
// profileAddon(): every kernel call and every Storage allocation is timed and summed under
// "<phase> | <kernel>", gemm calls also by shape (with their FLOPs, so the report shows GFLOP/s).
// The phase is "forward" unless a caller names it: the autograd engine runs each backward rule
// under "backward <op>", and anyone may wrap code in profilePhase(name, fn). Time spent in
// JavaScript between native calls is the step time minus the report's total.
//
// LOWRANK_PROFILE=cuda (or cuda:N for device N) also measures each call's GPU time: a CUDA event is
// recorded on the device's stream before and after the call, and a call's GPU time is the time
// between the two, which counts the kernels it queued and any wait of the device for the host to
// queue them (so the column sums to the device's wall time). Wall-clock time alone says little on a
// GPU: calls return once their kernels are queued, unless CUDA_LAUNCH_BLOCKING=1, which serializes
// every launch and inflates calls that launch several kernels. Events are read back (a
// synchronization) when the report or the entries are asked for, and every 4096 calls.
// Without LOWRANK_PROFILE nothing is wrapped and profilePhase() is a plain call.

import type { MatmulKernels, RuntimeKernels } from "./native/addon.js";

const MODE = process.env.LOWRANK_PROFILE ?? "";

/** True when LOWRANK_PROFILE is set (to anything but "" or "0"). */
export const PROFILING = MODE !== "" && MODE !== "0";

/** The CUDA device a LOWRANK_PROFILE value names ("cuda" is 0, "cuda:N" is N), else null. */
export function profileGpuOf(value: string): number | null {
  const m = /^cuda(?::(\d+))?$/.exec(value);
  return m ? Number(m[1] ?? 0) : null;
}

/** The CUDA device whose stream the events go on with LOWRANK_PROFILE=cuda[:N], else null. */
export const PROFILE_GPU = profileGpuOf(MODE);

export interface ProfileEntry {
  /** "<phase> | <kernel>", e.g. "backward linear | gemm 256x768x50257 tB". */
  key: string;
  calls: number;
  /** Wall-clock time of the calls. */
  ms: number;
  /** GPU time of the calls (LOWRANK_PROFILE=cuda), else 0. */
  gpuMs: number;
  /** Floating-point operations of the gemm calls under this key (2·m·n·k·batch), else 0. */
  flops: number;
}

const entries = new Map<string, ProfileEntry>();
let phase = "forward";

/** Runs fn with its native calls counted under `name` (restores the previous phase after). */
export function profilePhase<T>(name: string, fn: () => T): T {
  if (!PROFILING) return fn();
  const prev = phase;
  phase = name;
  try {
    return fn();
  } finally {
    phase = prev;
  }
}

const emptyEntry = (key: string): ProfileEntry => ({ key, calls: 0, ms: 0, gpuMs: 0, flops: 0 });

function entry(key: string): ProfileEntry {
  let e = entries.get(key);
  if (!e) entries.set(key, (e = emptyEntry(key)));
  return e;
}

function add(kernel: string, ms: number, flops = 0): ProfileEntry {
  const e = entry(`${phase} | ${kernel}`);
  e.calls++;
  e.ms += ms;
  e.flops += flops;
  return e;
}

// LOWRANK_PROFILE=cuda: the entries whose calls' events are not read yet, and the events' numbers
// (a pair per call). Read back by flushMarks() into the entries' gpuMs.
let runtime: RuntimeKernels | null = null;
const pendingEntries: ProfileEntry[] = [];
const pendingMarks: number[] = [];
const FLUSH_CALLS = 4096;

function flushMarks(): void {
  if (!runtime || pendingEntries.length === 0) return;
  const elapsed = runtime.profileElapsed(Int32Array.from(pendingMarks)); // waits for each pair's second mark
  pendingEntries.forEach((e, i) => (e.gpuMs += elapsed[i]!));
  dropMarks();
}

function dropMarks(): void {
  pendingEntries.length = 0;
  pendingMarks.length = 0;
  runtime?.profileResetMarks();
}

/**
 * The arguments of gemm or gemmEpilogue (see NativeAddon) as "gemm MxNxK[ tA][ tB][ bBATCH][ +bias][ +gelu]"
 * and its FLOPs: a linear layer's GEMM with its epilogue counts as a GEMM of its shape.
 */
function gemmKey(args: unknown[]): [string, number] {
  type Gemm = MatmulKernels["gemm"] extends (a: infer A) => void ? A : never;
  type Epilogue = MatmulKernels["gemmEpilogue"] extends (a: infer A) => void ? A : never;
  const a = args[0] as Partial<Gemm & Epilogue> & Pick<Gemm, "transA" | "transB" | "m" | "n" | "k">;
  const batch = a.batch ?? 1;
  const epilogue = `${a.bias ? " +bias" : ""}${a.pre ? " +gelu" : ""}`;
  const key = `gemm ${a.m}x${a.n}x${a.k}${a.transA ? " tA" : ""}${a.transB ? " tB" : ""}${batch > 1 ? ` b${batch}` : ""}${epilogue}`;
  return [key, 2 * a.m * a.n * a.k * batch];
}

// The profiler's own calls, never timed.
const UNTIMED = new Set(["profileMark", "profileElapsed", "profileResetMarks"]);

/** The addon with every function timed (called by native/index.ts when PROFILING). */
export function profileAddon<A extends object>(addon: A): A {
  if (PROFILE_GPU !== null) {
    const marks = addon as unknown as RuntimeKernels;
    try {
      marks.profileMark(PROFILE_GPU); // a CPU-only addon, or a host without that GPU, fails here
    } catch (err) {
      throw new Error(`LOWRANK_PROFILE=${MODE}: cannot record CUDA events on cuda:${PROFILE_GPU}: ${(err as Error).message}`);
    }
    marks.profileResetMarks();
    runtime = marks;
  }
  const wrapped = new Map<PropertyKey, unknown>();
  return new Proxy(addon, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver);
      if (typeof value !== "function" || UNTIMED.has(String(prop))) return value;
      let w = wrapped.get(prop);
      if (!w) {
        const name = String(prop);
        const fn = value as (...a: unknown[]) => unknown;
        w = new Proxy(fn, {
          apply(f, self, args) {
            const mark0 = runtime ? runtime.profileMark(PROFILE_GPU!) : -1;
            const t0 = performance.now();
            try {
              return Reflect.apply(f, target, args);
            } finally {
              const ms = performance.now() - t0;
              const [kernel, flops] = name === "gemm" || name === "gemmEpilogue" ? gemmKey(args) : [name, 0];
              const e = add(kernel, ms, flops);
              if (runtime) {
                pendingEntries.push(e);
                pendingMarks.push(mark0, runtime.profileMark(PROFILE_GPU!));
                if (pendingEntries.length >= FLUSH_CALLS) flushMarks();
              }
            }
          },
          construct(f, args, newTarget) {
            const t0 = performance.now();
            try {
              return Reflect.construct(f, args, newTarget === w ? f : newTarget) as object;
            } finally {
              add(`new ${name} (alloc)`, performance.now() - t0);
            }
          },
        });
        wrapped.set(prop, w);
      }
      return w;
    },
  });
}

/** Clears the counts (e.g. after warm-up steps). */
export function profileReset(): void {
  dropMarks(); // their calls were made before the reset: their times go with the entries
  entries.clear();
}

/** The entries so far, most time first (GPU time with LOWRANK_PROFILE=cuda, else wall-clock time). */
export function profileEntries(): ProfileEntry[] {
  flushMarks();
  return [...entries.values()].sort((a, b) => timeOf(b) - timeOf(a));
}

/** What the report ranks and sums: GPU time with LOWRANK_PROFILE=cuda, else wall-clock time. */
const timeOf = (e: ProfileEntry): number => (PROFILE_GPU !== null ? e.gpuMs : e.ms);

/**
 * A table of the entries, per step (times divided by `steps`; `per` names the unit): ms, share of the total, calls and
 * GFLOP/s for gemm; then the totals per phase and per kernel family. Rows under `minShare` of the
 * total are folded into one line. With LOWRANK_PROFILE=cuda the ms, shares and GFLOP/s are GPU time, and a
 * column beside them gives the calls' wall-clock (host) time.
 */
export function profileReport(steps = 1, minShare = 0.002, per = "step"): string {
  const gpu = PROFILE_GPU !== null;
  const all = profileEntries();
  const total = all.reduce((s, e) => s + timeOf(e), 0);
  const hostTotal = all.reduce((s, e) => s + e.ms, 0);
  const lines: string[] = [];
  const perStep = (ms: number) => (ms / steps).toFixed(2).padStart(10);
  const row = (e: ProfileEntry, label: string) => {
    const t = timeOf(e);
    const gf = e.flops > 0 && t > 0 ? (e.flops / (t / 1e3) / 1e9).toFixed(1).padStart(7) : "".padStart(7);
    const host = gpu ? ` ${perStep(e.ms)}` : "";
    lines.push(`${perStep(t)} ${((100 * t) / total).toFixed(1).padStart(6)}%${host} ${String(Math.round(e.calls / steps)).padStart(6)} ${gf}  ${label}`);
  };
  const head = gpu ? `${`GPU ms/${per}`.padStart(10)} ${"share".padStart(7)} ${`host ms`.padStart(10)}` : `${`ms/${per}`.padStart(10)} ${"share".padStart(7)}`;
  lines.push(`${head} ${"calls".padStart(6)} ${"GFLOP/s".padStart(7)}  phase | native call`);
  const rest = emptyEntry("");
  const addInto = (g: ProfileEntry, e: ProfileEntry) => {
    g.calls += e.calls;
    g.ms += e.ms;
    g.gpuMs += e.gpuMs;
    g.flops += e.flops;
  };
  for (const e of all) {
    if (timeOf(e) < minShare * total) addInto(rest, { ...e, flops: 0 });
    else row(e, e.key);
  }
  if (rest.calls > 0) row(rest, "(smaller entries)");
  const groups = (label: string, keyOf: (e: ProfileEntry) => string) => {
    const m = new Map<string, ProfileEntry>();
    for (const e of all) {
      const k = keyOf(e);
      if (!m.has(k)) m.set(k, emptyEntry(k));
      addInto(m.get(k)!, e);
    }
    lines.push("", `by ${label}:`);
    for (const g of [...m.values()].sort((a, b) => timeOf(b) - timeOf(a))) row(g, g.key);
  };
  groups("phase", (e) => e.key.split(" | ")[0]!);
  groups("native call", (e) => e.key.split(" | ")[1]!.split(" ")[0]!);
  lines.push(
    "",
    gpu
      ? `${perStep(total)} GPU ms/${per} in native calls (${perStep(hostTotal).trim()} ms on the host)`
      : `${perStep(total)} ms/${per} in native calls`,
  );
  return lines.join("\n");
}
