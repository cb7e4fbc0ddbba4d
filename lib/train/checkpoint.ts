// Training checkpoints: everything a run needs to continue exactly where it stopped, in
// <out>/checkpoints/step-<n>/:
//
//   trainable.safetensors            the trainable parameters under their module paths (restored by name)
//   adapter_config.json, adapter_model.safetensors
//                                    the adapter in PEFT's format (PeftModel), usable as is by
//                                    `lowrank merge/generate --adapter` and by Python PEFT
//   optimizer.safetensors            the optimizer's state tensors (Optimizer.stateTensors)
//   optimizer.json                   its metadata: param groups, step counts
//   trainer_state.json               step, scheduler, RNG states, data position, settings, metrics
//
// A checkpoint is written into a hidden temporary folder and renamed into place, so a step-<n>
// folder either does not exist or is complete: a crash (kill -9, power loss) at any moment never
// leaves a half-written checkpoint behind. Old checkpoints are renamed away before they are
// deleted, for the same reason. `latest` names the newest checkpoint and is replaced atomically.
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { basename, join } from "node:path";
import { atomicTempWriterPid, writeFileAtomic, writeJsonAtomic } from "../io/atomic.js";
import { crashPoint } from "../io/crash-point.js";
import { isJsonObject } from "../io/json-object.js";
import { readSafetensors, writeSafetensors, type SafetensorsFile } from "../io/safetensors.js";
import type { FlatOptimizerState } from "../optim/optimizer.js";
import type { LRSchedulerState } from "../optim/schedule.js";
import type { GeneratorState } from "../tensor/random.js";
import type { Tensor } from "../tensor/tensor.js";
import type { LoaderState } from "./collate.js";
import { processAlive } from "./lock.js";
import type { StepRecord } from "./metrics.js";

export const CHECKPOINT_FORMAT = "lowrank-trainer-checkpoint";
export const CHECKPOINT_VERSION = 1;
/** The file in the checkpoints folder that names the newest checkpoint. */
export const LATEST_FILE = "latest";
export const CHECKPOINT_FILES = {
  state: "trainer_state.json",
  trainable: "trainable.safetensors",
  optimizer: "optimizer.safetensors",
  optimizerMeta: "optimizer.json",
} as const;

const STEP_DIR = /^step-(\d+)$/;
/** Temporary folders: `.tmp-<pid>-<random>-<what>`; the pid tells whether their writer still runs. */
const TEMP_DIR = /^\.tmp-(\d+)-[0-9a-f]+-/;

/** trainer_state.json. */
export interface TrainerState {
  format: typeof CHECKPOINT_FORMAT;
  version: number;
  /** Optimizer steps done. */
  step: number;
  /** The step the run ends at. */
  totalSteps: number;
  /** Input tokens seen so far. */
  tokens: number;
  /** Seconds of training so far. */
  elapsed: number;
  scheduler: LRSchedulerState;
  /** Every random stream the run draws from (dropout, adapter init), by name. */
  generators: Record<string, GeneratorState>;
  /** Where the training data loader stands. */
  trainLoader: LoaderState;
  /** The settings that shape the run's trajectory; a resumed run must use the same. */
  config: Record<string, unknown>;
  /** metrics.jsonl up to this step. */
  history: StepRecord[];
}

export interface CheckpointContents<O = unknown> {
  state: TrainerState;
  /** The trainable parameters by name. */
  trainable: Record<string, Tensor>;
  optimizer: FlatOptimizerState<O>;
  /** Writes further files into the (temporary) checkpoint folder, e.g. the adapter in PEFT's format. */
  writeExtra?: (dir: string) => void;
}

export interface LoadedCheckpoint<O = unknown> {
  dir: string;
  state: TrainerState;
  trainable: SafetensorsFile;
  optimizerTensors: SafetensorsFile;
  optimizerMeta: FlatOptimizerState<O>["metadata"];
}

function tempName(what: string): string {
  return `.tmp-${process.pid}-${randomBytes(4).toString("hex")}-${what}`;
}

/** The folder of step `step`'s checkpoint in checkpointsDir. */
export function checkpointPath(checkpointsDir: string, step: number): string {
  return join(checkpointsDir, `step-${step}`);
}

/**
 * Writes a complete checkpoint as <checkpointsDir>/step-<state.step> (replacing one of that step)
 * and points `latest` at it. Returns its path.
 */
export function writeCheckpoint<O>(checkpointsDir: string, contents: CheckpointContents<O>): string {
  const name = basename(checkpointPath(checkpointsDir, contents.state.step));
  const final = join(checkpointsDir, name);
  mkdirSync(checkpointsDir, { recursive: true });
  const tmp = join(checkpointsDir, tempName(name));
  try {
    mkdirSync(tmp);
    // Every file is itself written atomically and fsynced; trainer_state.json goes last.
    writeSafetensors(join(tmp, CHECKPOINT_FILES.trainable), contents.trainable);
    writeSafetensors(join(tmp, CHECKPOINT_FILES.optimizer), contents.optimizer.tensors);
    writeJsonAtomic(join(tmp, CHECKPOINT_FILES.optimizerMeta), contents.optimizer.metadata);
    contents.writeExtra?.(tmp);
    writeJsonAtomic(join(tmp, CHECKPOINT_FILES.state), contents.state);
    crashPoint("checkpoint-rename");
    if (existsSync(final)) {
      // Same step written again (a resumed run passing a checkpoint of an abandoned one).
      const old = join(checkpointsDir, tempName(`old-${name}`));
      renameSync(final, old);
      crashPoint("checkpoint-replace");
      renameSync(tmp, final);
      rmSync(old, { recursive: true, force: true });
    } else {
      renameSync(tmp, final);
    }
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    throw new Error(`cannot write checkpoint ${final}: ${(err as Error).message}`, { cause: err });
  }
  // writeFileAtomic fsyncs the checkpoints folder after its rename, which also makes the
  // folder rename above durable.
  writeFileAtomic(join(checkpointsDir, LATEST_FILE), name + "\n");
  return final;
}

function readJson(path: string, what: string): unknown {
  if (!existsSync(path)) throw new Error(`${path} is missing (${what})`);
  try {
    return JSON.parse(readFileSync(path, "utf8"));
  } catch (err) {
    throw new Error(`${path} is not valid JSON (${(err as Error).message})`);
  }
}

/** What is wrong with a parsed trainer_state.json's fields (types and ranges), or null. */
function stateProblem(state: TrainerState): string | null {
  const count = (v: unknown) => Number.isSafeInteger(v) && (v as number) >= 0;
  for (const key of ["step", "totalSteps"] as const) if (!count(state[key])) return `"${key}" must be an integer >= 0, got ${JSON.stringify(state[key])}`;
  for (const key of ["tokens", "elapsed"] as const) {
    if (typeof state[key] !== "number" || !(state[key] >= 0) || state[key] === Infinity) return `"${key}" must be a finite number >= 0, got ${JSON.stringify(state[key])}`;
  }
  const s = state.scheduler as unknown as Record<string, unknown>;
  if (!isJsonObject(s) || !Array.isArray(s.baseLrs) || !s.baseLrs.every((x) => typeof x === "number" && Number.isFinite(x))) {
    return `"scheduler" must hold "baseLrs", a list of finite numbers`;
  }
  if (!isJsonObject(state.generators)) return `"generators" must be an object`;
  for (const [name, g] of Object.entries(state.generators)) {
    const ok = isJsonObject(g) && [g.seed, g.offset].every((x) => typeof x === "string" && /^\d+$/.test(x));
    if (!ok) return `generator "${name}" must be {"seed", "offset"} as decimal strings, got ${JSON.stringify(g)?.slice(0, 80)}`;
  }
  if (!isJsonObject(state.trainLoader)) return `"trainLoader" must be an object`;
  if (!isJsonObject(state.config)) return `"config" must be an object`;
  if (!Array.isArray(state.history)) return `"history" must be a list`;
  return null;
}

/** Reads and checks a checkpoint folder; throws one line naming the folder and what is wrong. */
export function readCheckpoint<O = unknown>(dir: string): LoadedCheckpoint<O> {
  const fail = (why: string) => new Error(`checkpoint ${dir}: ${why}`);
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw fail("no such folder");
  try {
    const state = readJson(join(dir, CHECKPOINT_FILES.state), "not a lowrank training checkpoint?") as TrainerState;
    if (state?.format !== CHECKPOINT_FORMAT) throw new Error(`${CHECKPOINT_FILES.state} is not a lowrank trainer state (format ${JSON.stringify(state?.format)})`);
    if (state.version !== CHECKPOINT_VERSION) {
      throw new Error(`${CHECKPOINT_FILES.state} has version ${state.version}; this lowrank reads version ${CHECKPOINT_VERSION}`);
    }
    const problem = stateProblem(state);
    if (problem) throw new Error(`${CHECKPOINT_FILES.state}: ${problem}`);
    const optimizerMeta = readJson(join(dir, CHECKPOINT_FILES.optimizerMeta), "optimizer metadata") as FlatOptimizerState<O>["metadata"];
    return {
      dir,
      state,
      trainable: readSafetensors(join(dir, CHECKPOINT_FILES.trainable)),
      optimizerTensors: readSafetensors(join(dir, CHECKPOINT_FILES.optimizer)),
      optimizerMeta,
    };
  } catch (err) {
    throw fail((err as Error).message);
  }
}

/** The complete checkpoints in a folder, oldest step first. */
export function listCheckpoints(checkpointsDir: string): { step: number; dir: string }[] {
  if (!existsSync(checkpointsDir)) return [];
  return readdirSync(checkpointsDir, { withFileTypes: true })
    .flatMap((e) => {
      const m = STEP_DIR.exec(e.name);
      return m && e.isDirectory() ? [{ step: Number(m[1]), dir: join(checkpointsDir, e.name) }] : [];
    })
    .sort((a, b) => a.step - b.step);
}

/** The checkpoint `latest` names, or the highest step when `latest` is missing or stale; null when none. */
export function latestCheckpoint(checkpointsDir: string): string | null {
  const pointer = join(checkpointsDir, LATEST_FILE);
  if (existsSync(pointer)) {
    const name = readFileSync(pointer, "utf8").trim();
    if (STEP_DIR.test(name) && existsSync(join(checkpointsDir, name))) return join(checkpointsDir, name);
  }
  return listCheckpoints(checkpointsDir).at(-1)?.dir ?? null;
}

/**
 * Deletes all but the newest `keep` checkpoints, never `protect` (the one just written). Each goes
 * through a rename first, so a crash mid-delete leaves no partial step-<n> folder.
 */
export function pruneCheckpoints(checkpointsDir: string, keep: number, protect: string): void {
  const all = listCheckpoints(checkpointsDir);
  for (const { dir } of all.slice(0, Math.max(0, all.length - keep))) {
    if (dir === protect) continue;
    const doomed = join(checkpointsDir, tempName("deleted"));
    renameSync(dir, doomed);
    crashPoint("prune-delete");
    rmSync(doomed, { recursive: true, force: true });
  }
}

/**
 * Removes temporaries left by writers that died (kill -9 during a save or a prune): checkpoint
 * folders being written, and files of an interrupted atomic write (the `latest` pointer).
 */
export function removeStaleTemporaries(checkpointsDir: string): void {
  if (!existsSync(checkpointsDir)) return;
  for (const name of readdirSync(checkpointsDir)) {
    const m = TEMP_DIR.exec(name);
    const pid = m ? Number(m[1]) : atomicTempWriterPid(name);
    if (pid !== null && pid !== process.pid && !processAlive(pid)) rmSync(join(checkpointsDir, name), { recursive: true, force: true });
  }
}

/**
 * The checkpoint a `--resume` argument means: `true` is the latest one in <outDir>/checkpoints; a
 * path is a checkpoint folder itself or a run folder (its latest checkpoint).
 */
export function resolveResume(spec: true | string, outDir: string): string {
  if (spec === true) {
    const found = latestCheckpoint(join(outDir, "checkpoints"));
    if (!found) throw new Error(`--resume: no checkpoint in ${join(outDir, "checkpoints")}; start without --resume, or pass --resume <checkpoint folder>`);
    return found;
  }
  if (existsSync(join(spec, CHECKPOINT_FILES.state))) return spec;
  const found = latestCheckpoint(join(spec, "checkpoints"));
  if (found) return found;
  throw new Error(`--resume ${spec}: not a checkpoint folder (no ${CHECKPOINT_FILES.state}) nor a run folder with checkpoints/`);
}
