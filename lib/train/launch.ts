// The launcher of a data-parallel run (lowrank train --gpus N): the parent process is not a rank;
// it forks N copies of a script (the CLI itself, by default) with LOWRANK_RANK and
// LOWRANK_WORLD_SIZE set (plus what the caller adds: the NCCL id), one process per GPU, as torchrun
// does. Rank 0's output is the run's output; the other ranks' stderr is shown too (their errors).
// When a rank fails (a non-zero exit other than a clean stop, or a signal), the launcher gives the
// others a moment to finish on their own (ranks often fail together, each with its own message:
// weights that differ, a bad batch), then stops them (SIGTERM, then SIGKILL after a grace period: a
// rank blocked in a collective whose peer died only notices when NCCL reports the error or its
// timeout fires) and reports the rank that failed.
import { fork, type ChildProcess } from "node:child_process";
import { RANK_ENV, WORLD_SIZE_ENV } from "./distributed.js";

/** The exit code of a rank that stopped cleanly on request (Ctrl-C, SIGTERM): not a failure. */
const STOPPED = 130;

export interface LaunchOptions {
  worldSize: number;
  /** The script every rank runs, and its arguments. */
  entry: string;
  args: readonly string[];
  /** Added to every rank's environment (this process's environment is passed on). */
  env?: NodeJS.ProcessEnv;
  /** After one rank fails, how long the others may run on before SIGTERM (default 2 s). */
  termAfterMs?: number;
  /** After SIGTERM, how long a rank has to exit before SIGKILL (default 30 s). */
  killAfterMs?: number;
  /** The launcher's own messages (default: stderr). */
  log?: (line: string) => void;
}

export interface LaunchResult {
  /** 0 when every rank succeeded; the failed rank's exit code (1 for a signal); 130 when the ranks stopped on request. */
  code: number;
  /** The first rank that failed, or null. */
  failedRank: number | null;
  /** What happened, naming the rank, or null when nothing failed. */
  message: string | null;
}

/** Forks the ranks and resolves when all have exited. */
export function launchRanks(opts: LaunchOptions): Promise<LaunchResult> {
  const { worldSize, entry, args } = opts;
  if (!(Number.isInteger(worldSize) && worldSize >= 1)) throw new Error(`launchRanks: worldSize must be an integer >= 1, got ${worldSize}`);
  const log = opts.log ?? ((line: string) => console.error(line));
  const termAfterMs = opts.termAfterMs ?? 2_000, killAfterMs = opts.killAfterMs ?? 30_000;
  return new Promise((resolve) => {
    const children: (ChildProcess | null)[] = [];
    const codes: (number | null)[] = new Array(worldSize).fill(null);
    let failed: { rank: number; code: number; message: string } | null = null;
    let termTimer: NodeJS.Timeout | null = null, killTimer: NodeJS.Timeout | null = null;
    const live = () => children.filter((c): c is ChildProcess => c !== null && c.exitCode === null && c.signalCode === null);

    const stopOthers = () => {
      termTimer ??= setTimeout(() => {
        for (const c of live()) c.kill("SIGTERM");
        killTimer ??= setTimeout(() => {
          for (const c of live()) c.kill("SIGKILL");
        }, killAfterMs);
        killTimer.unref();
      }, termAfterMs);
      termTimer.unref();
    };
    // Ctrl-C reaches the ranks directly (one process group): they agree on a step to stop after.
    // A SIGTERM sent to the launcher alone is passed on.
    const onInterrupt = () => {};
    const onTerminate = () => {
      for (const c of live()) c.kill("SIGTERM");
    };
    process.on("SIGINT", onInterrupt);
    process.on("SIGTERM", onTerminate);

    let exited = 0;
    for (let rank = 0; rank < worldSize; rank++) {
      const child = fork(entry, [...args], {
        env: { ...process.env, ...opts.env, [RANK_ENV]: String(rank), [WORLD_SIZE_ENV]: String(worldSize) },
        stdio: ["inherit", rank === 0 ? "inherit" : "ignore", "inherit", "ipc"],
      });
      children.push(child);
      child.on("exit", (code, signal) => {
        codes[rank] = code;
        const failure = signal !== null || (code !== 0 && code !== STOPPED);
        if (failure && failed === null) {
          const how = signal !== null ? `was killed by ${signal}` : `exited with code ${code}`;
          failed = {
            rank, code: code ?? 1,
            message: `rank ${rank} of ${worldSize} (pid ${child.pid}) ${how}; stopping the other ranks. Its error, if it printed one, is above; ` +
              `continue from the last checkpoint with the same command and --resume (any number of GPUs that divides --batch-size).`,
          };
          log(`lowrank: ${failed.message}`);
          stopOthers();
        }
        if (++exited < worldSize) return;
        if (termTimer) clearTimeout(termTimer);
        if (killTimer) clearTimeout(killTimer);
        process.off("SIGINT", onInterrupt);
        process.off("SIGTERM", onTerminate);
        if (failed) resolve({ code: failed.code, failedRank: failed.rank, message: failed.message });
        else resolve({ code: codes.some((c) => c === STOPPED) ? STOPPED : 0, failedRank: null, message: null });
      });
    }
  });
}
