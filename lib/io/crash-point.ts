// Crash points, for testing crash safety: with LOWRANK_CRASH_AT=<point>[@<n>] in the environment,
// the process kills itself with SIGKILL (no cleanup, as a power cut or kill -9) the n-th time
// (default: the first) it reaches crashPoint(<point>). The tests use it to crash inside each step
// of a checkpoint write (test/cli/train-resume.test.ts); unset, a call is one comparison.

function parse(spec: string | undefined): { point: string; n: number } | null {
  if (!spec) return null;
  const m = /^(.+?)(?:@(\d+))?$/.exec(spec.trim());
  return m ? { point: m[1]!, n: m[2] === undefined ? 1 : Number(m[2]) } : null;
}

const target = parse(process.env.LOWRANK_CRASH_AT);
let hits = 0;

/**
 * Marks a moment where a crash must leave recoverable state (between writing a temporary and
 * renaming it into place, say). Points in use: `atomic-rename:<file name>` (writeFileAtomic,
 * before the rename), `checkpoint-rename` (a complete checkpoint folder, before it is renamed to
 * step-N), `checkpoint-replace` (the old step-N renamed aside, the new one not yet in place),
 * `prune-delete` (an old checkpoint renamed aside, not yet deleted).
 */
export function crashPoint(point: string): void {
  if (target === null || point !== target.point) return;
  if (++hits === target.n) process.kill(process.pid, "SIGKILL");
}
