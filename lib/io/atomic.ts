// Atomic file writes: the data goes to a temporary file in the same folder, is flushed to disk
// (fsync), and is renamed over the target. rename() within one file system is atomic, so a reader
// sees either the old file or the complete new one, never a half-written checkpoint, even if the
// process dies mid-write. The temporary file is removed when anything fails.
import { closeSync, fsyncSync, openSync, renameSync, rmSync, writeSync } from "node:fs";
import { open, rename } from "node:fs/promises";
import { randomBytes } from "node:crypto";
import { basename, dirname, join } from "node:path";
import { crashPoint } from "./crash-point.js";
import { fsReason, isFsError } from "./fs-errors.js";

/** What can be written: a string (UTF-8), bytes, or a list of byte chunks written in order. */
export type FileData = string | Uint8Array | readonly Uint8Array[];

function chunksOf(data: FileData): readonly Uint8Array[] {
  if (typeof data === "string") return [Buffer.from(data, "utf8")];
  return data instanceof Uint8Array ? [data] : data;
}

/** A hidden sibling of `path` with a random suffix, so concurrent writers never collide. */
function tempPathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(6).toString("hex")}.tmp`);
}

/**
 * The writer's pid when `name` is a temporary file of writeFileAtomic (`.<name>.<pid>.<hex>.tmp`),
 * else null: a process killed mid-write leaves one behind, and cleanup code removes those whose
 * writer is gone.
 */
export function atomicTempWriterPid(name: string): number | null {
  const m = /^\..+\.(\d+)\.[0-9a-f]{12}\.tmp$/.exec(name);
  return m ? Number(m[1]) : null;
}

/** Removes a temporary file after a failure; where it could not even be created (ENOTDIR), rm's own error must not hide the first one. */
function removeTemp(tmp: string): void {
  try {
    rmSync(tmp, { force: true });
  } catch {
    // nothing was written there
  }
}

/** The error of a failed write, about `path` (not the temporary file), keeping the errno code and path for callers. */
function failure(path: string, err: unknown): Error {
  if (isFsError(err)) {
    // Said of the target: ENOENT or ENOTDIR on the temporary file mean the target's folder is missing or a file.
    const reason = fsReason(err.code, path);
    return Object.assign(new Error(`cannot write ${path}: ${reason} (${err.code})`, { cause: err }), { code: err.code, syscall: "write", path });
  }
  return new Error(`cannot write ${path}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
}

// After the rename, the new directory entry is durable only once the directory itself is synced.
// Windows cannot open a directory for fsync, and NTFS journals renames, so it is skipped there.
function syncDirectory(dir: string): void {
  if (process.platform === "win32") return;
  const fd = openSync(dir, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

async function syncDirectoryAsync(dir: string): Promise<void> {
  if (process.platform === "win32") return;
  const handle = await open(dir, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Writes `data` to `path` atomically (temp file in the same folder, fsync, rename). */
export function writeFileAtomic(path: string, data: FileData): void {
  const tmp = tempPathFor(path);
  let fd: number | undefined;
  try {
    fd = openSync(tmp, "wx");
    for (const chunk of chunksOf(data)) {
      // writeSync may write less than asked (large chunks, signals): loop until all is out.
      for (let done = 0; done < chunk.byteLength; ) done += writeSync(fd, chunk, done, chunk.byteLength - done);
    }
    fsyncSync(fd);
    closeSync(fd);
    fd = undefined;
    crashPoint(`atomic-rename:${basename(path)}`);
    renameSync(tmp, path);
    syncDirectory(dirname(path));
  } catch (err) {
    if (fd !== undefined) closeSync(fd);
    removeTemp(tmp);
    throw failure(path, err);
  }
}

/** The Promise form of writeFileAtomic: the event loop keeps running during the disk I/O. */
export async function writeFileAtomicAsync(path: string, data: FileData): Promise<void> {
  const tmp = tempPathFor(path);
  let handle: Awaited<ReturnType<typeof open>> | undefined;
  try {
    handle = await open(tmp, "wx");
    for (const chunk of chunksOf(data)) {
      for (let done = 0; done < chunk.byteLength; ) {
        done += (await handle.write(chunk, done, chunk.byteLength - done)).bytesWritten;
      }
    }
    await handle.sync();
    await handle.close();
    handle = undefined;
    crashPoint(`atomic-rename:${basename(path)}`);
    await rename(tmp, path);
    await syncDirectoryAsync(dirname(path));
  } catch (err) {
    await handle?.close();
    removeTemp(tmp);
    throw failure(path, err);
  }
}

function jsonText(path: string, value: unknown): string {
  const text = JSON.stringify(value, null, 2);
  if (text === undefined) throw new Error(`writeJsonAtomic: cannot write "${path}": the value is not JSON-serializable (${typeof value})`);
  return text + "\n";
}

/** Writes `value` as JSON (2-space indent, trailing newline) to `path` atomically. */
export function writeJsonAtomic(path: string, value: unknown): void {
  writeFileAtomic(path, jsonText(path, value));
}

/** The Promise form of writeJsonAtomic. */
export async function writeJsonAtomicAsync(path: string, value: unknown): Promise<void> {
  await writeFileAtomicAsync(path, jsonText(path, value));
}
