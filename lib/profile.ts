// An opt-in wall-clock profile of the native calls, for finding where a training step's time goes.
// LOWRANK_PROFILE=1 (read once, when the addon loads) makes native/index.ts hand out the addon through
// profileAddon(): every kernel call and every Storage allocation is timed and summed under
// "<phase> | <kernel>", gemm calls also by shape (with their FLOPs, so the report shows GFLOP/s).
// The phase is "forward" unless a caller names it: the autograd engine runs each backward rule
// under "backward <op>", and anyone may wrap code in profilePhase(name, fn). Time spent in
// JavaScript between native calls is the step time minus the report's total.
// Without LOWRANK_PROFILE nothing is wrapped and profilePhase() is a plain call.

import type { MatmulKernels } from "./native/addon.js";

/** True when LOWRANK_PROFILE is set (to anything but "" or "0"). */
export const PROFILING = (process.env.LOWRANK_PROFILE ?? "") !== "" && process.env.LOWRANK_PROFILE !== "0";

export interface ProfileEntry {
  /** "<phase> | <kernel>", e.g. "backward linear | gemm 256x768x50257 tB". */
  key: string;
  calls: number;
  ms: number;
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

function add(kernel: string, ms: number, flops = 0): void {
  const key = `${phase} | ${kernel}`;
  const e = entries.get(key);
  if (e) {
    e.calls++;
    e.ms += ms;
    e.flops += flops;
  } else {
    entries.set(key, { key, calls: 1, ms, flops });
  }
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

/** The addon with every function timed (called by native/index.ts when PROFILING). */
export function profileAddon<A extends object>(addon: A): A {
  const wrapped = new Map<PropertyKey, unknown>();
  return new Proxy(addon, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver);
      if (typeof value !== "function") return value;
      let w = wrapped.get(prop);
      if (!w) {
        const name = String(prop);
        const fn = value as (...a: unknown[]) => unknown;
        w = new Proxy(fn, {
          apply(f, self, args) {
            const t0 = performance.now();
            try {
              return Reflect.apply(f, target, args);
            } finally {
              const ms = performance.now() - t0;
              if (name === "gemm" || name === "gemmEpilogue") {
                const [key, flops] = gemmKey(args);
                add(key, ms, flops);
              } else {
                add(name, ms);
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
  entries.clear();
}

/** The entries so far, most time first. */
export function profileEntries(): ProfileEntry[] {
  return [...entries.values()].sort((a, b) => b.ms - a.ms);
}

/**
 * A table of the entries, per step (times divided by `steps`; `per` names the unit): ms, share of the total, calls and
 * GFLOP/s for gemm; then the totals per phase and per kernel family. Rows under `minShare` of the
 * total are folded into one line.
 */
export function profileReport(steps = 1, minShare = 0.002, per = "step"): string {
  const all = profileEntries();
  const total = all.reduce((s, e) => s + e.ms, 0);
  const lines: string[] = [];
  const row = (ms: number, calls: number, flops: number, label: string) => {
    const gf = flops > 0 && ms > 0 ? (flops / (ms / 1e3) / 1e9).toFixed(1).padStart(7) : "".padStart(7);
    lines.push(`${(ms / steps).toFixed(2).padStart(10)} ${((100 * ms) / total).toFixed(1).padStart(6)}% ${String(Math.round(calls / steps)).padStart(6)} ${gf}  ${label}`);
  };
  lines.push(`${`ms/${per}`.padStart(10)} ${"share".padStart(7)} ${"calls".padStart(6)} ${"GFLOP/s".padStart(7)}  phase | native call`);
  let restMs = 0, restCalls = 0;
  for (const e of all) {
    if (e.ms < minShare * total) {
      restMs += e.ms;
      restCalls += e.calls;
    } else {
      row(e.ms, e.calls, e.flops, e.key);
    }
  }
  if (restCalls > 0) row(restMs, restCalls, 0, "(smaller entries)");
  const groups = (label: string, keyOf: (e: ProfileEntry) => string) => {
    const m = new Map<string, ProfileEntry>();
    for (const e of all) {
      const k = keyOf(e);
      const g = m.get(k) ?? { key: k, calls: 0, ms: 0, flops: 0 };
      g.calls += e.calls;
      g.ms += e.ms;
      g.flops += e.flops;
      m.set(k, g);
    }
    lines.push("", `by ${label}:`);
    for (const g of [...m.values()].sort((a, b) => b.ms - a.ms)) row(g.ms, g.calls, g.flops, g.key);
  };
  groups("phase", (e) => e.key.split(" | ")[0]!);
  groups("native call", (e) => e.key.split(" | ")[1]!.split(" ")[0]!);
  lines.push("", `${(total / steps).toFixed(2).padStart(10)} ms/${per} in native calls`);
  return lines.join("\n");
}
