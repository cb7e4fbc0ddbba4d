// One training run per output folder: a run holds <out>/.lowrank.lock, a file that names its
// process id, for as long as it writes there. A second run on the same folder (say, `--resume`
// started while the first still trains) is refused with the holder's pid instead of interleaving
// metrics.jsonl and checkpoints. A lock whose process is gone (kill -9, power loss) is stale and
// is taken over.
import { existsSync, linkSync, mkdirSync, readdirSync, readFileSync, renameSync, rmdirSync, rmSync, writeFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import { join } from "node:path";

export const LOCK_FILE = ".lowrank.lock";

/** A held lock; release() removes it (and the folder, when taking the lock created it and it is still empty). */
export interface RunLock {
  readonly path: string;
  release(): void;
}

/** Thrown when another live process holds the folder's lock. */
export class RunLockedError extends Error {
  constructor(
    readonly dir: string,
    readonly pid: number,
    readonly lockPath: string,
  ) {
    super(
      `${dir} is in use by another training run (pid ${pid}, lock ${lockPath}); wait for it to finish or stop it, ` +
        `or choose another output folder (if no such process trains there, delete the lock file)`,
    );
    this.name = "RunLockedError";
  }
}

/** Whether a process with this pid exists (EPERM: it exists but belongs to another user). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** The pid a lock file names, or null when it is gone or unreadable. */
function holderOf(path: string): number | null {
  try {
    const pid = Number(/^pid (\d+)$/m.exec(readFileSync(path, "utf8"))?.[1]);
    return Number.isSafeInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

/**
 * Creates the lock file with our pid in one step: the content goes to a private file first, which
 * is then hard-linked to the lock's name (link fails if the name exists), so no reader ever sees
 * an empty lock. Returns false when the lock exists.
 */
function tryCreate(path: string, content: string): boolean {
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString("hex")}`;
  writeFileSync(tmp, content);
  try {
    linkSync(tmp, path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST") return false;
    throw err;
  } finally {
    rmSync(tmp, { force: true });
  }
}

/**
 * Takes the lock of `dir` (created if missing) or throws RunLockedError naming the live holder.
 * A stale lock (its process is gone) is moved aside and replaced.
 */
export function acquireRunLock(dir: string): RunLock {
  const created = !existsSync(dir);
  mkdirSync(dir, { recursive: true });
  const path = join(dir, LOCK_FILE);
  const content = `pid ${process.pid}\nhost ${hostname()}\nstarted ${new Date().toISOString()}\n`;
  for (let attempt = 0; attempt < 5; attempt++) {
    if (tryCreate(path, content)) {
      let released = false;
      const release = () => {
        if (released) return;
        released = true;
        process.off("exit", release);
        if (holderOf(path) === process.pid) rmSync(path, { force: true });
        if (created && readdirSync(dir).length === 0) rmdirSync(dir);
      };
      // A process.exit() (a second Ctrl-C) skips finally blocks; the lock still goes.
      process.on("exit", release);
      return { path, release };
    }
    const holder = holderOf(path);
    if (holder === process.pid) throw new Error(`${dir}: this process already holds the lock ${path} (one run per output folder)`);
    if (holder !== null && processAlive(holder)) throw new RunLockedError(dir, holder, path);
    // Stale (or unreadable). Move it aside atomically; if what we moved turns out to belong to a
    // live process (another run took the stale lock over in between), put it back and give way.
    const aside = `${path}.stale.${process.pid}.${randomBytes(4).toString("hex")}`;
    try {
      renameSync(path, aside);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") continue;
      throw err;
    }
    const moved = holderOf(aside);
    if (moved !== null && moved !== holder && processAlive(moved)) {
      try {
        linkSync(aside, path);
      } catch {
        // someone else holds it now; they will be refused or refuse us on the next attempt
      }
      rmSync(aside, { force: true });
      throw new RunLockedError(dir, moved, path);
    }
    rmSync(aside, { force: true });
  }
  throw new Error(`${dir}: could not take the lock ${path} (other runs keep taking it)`);
}
