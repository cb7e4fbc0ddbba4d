// File system errors in words: "afile is a file, not a folder" instead of
// "ENOTDIR: not a directory, mkdir 'afile/x'". Each message says what could not be done to which
// path and why; callers that know the flag add the fix (choose another --out).
import { existsSync, statSync } from "node:fs";
import { dirname, isAbsolute, relative, resolve } from "node:path";

/** An error from a node:fs call: it carries the errno code and usually the path. */
export type FsError = NodeJS.ErrnoException & { code: string };

export function isFsError(err: unknown): err is FsError {
  return err instanceof Error && typeof (err as NodeJS.ErrnoException).code === "string" && typeof (err as NodeJS.ErrnoException).syscall === "string";
}

const ACTIONS: Record<string, string> = {
  mkdir: "create the folder", open: "open", rename: "rename", unlink: "remove", rmdir: "remove", rm: "remove", scandir: "list",
  copyfile: "copy", write: "write", fsync: "write", read: "read", stat: "read", lstat: "read", access: "access",
};

/** The nearest ancestor of `path` that exists (relative to the working folder when it is inside it), or undefined. */
export function existingAncestor(path: string): string | undefined {
  for (let p = dirname(resolve(path)); ; p = dirname(p)) {
    // relative in, relative out; the working directory itself is "." (relative() gives "", which fs calls refuse)
    if (existsSync(p)) return isAbsolute(path) || relative(".", p).startsWith("..") ? p : relative(".", p) || ".";
    if (dirname(p) === p) return undefined;
  }
}

/** Why `code` happened at `path`, in words. */
export function fsReason(code: string, path: string): string {
  switch (code) {
    case "ENOTDIR": {
      const blocker = existingAncestor(path);
      return blocker && !statSync(blocker).isDirectory() ? `${blocker} is a file, not a folder` : "a part of the path is a file, not a folder";
    }
    case "EEXIST":
      return existsSync(path) && !statSync(path).isDirectory() ? `${path} exists and is a file, not a folder` : `${path} already exists`;
    case "EISDIR":
      return `${path} is a folder, not a file`;
    case "ENOENT":
      return existsSync(dirname(resolve(path))) ? `${path} does not exist` : `the folder ${dirname(path)} does not exist`;
    case "EACCES":
    case "EPERM":
      return `permission denied for ${path}`;
    case "EROFS":
      return "the file system is read-only";
    case "ENOSPC":
      return "no space left on the device";
    case "EDQUOT":
      return "the disk quota is used up";
    case "ENAMETOOLONG":
      return "the name is too long for the file system";
    case "EMFILE":
    case "ENFILE":
      return "too many open files";
    default:
      return code;
  }
}

/**
 * "cannot create the folder runs/x: runs is a file, not a folder (ENOTDIR)". `path` overrides the
 * error's own (a temporary file's, say) with the one the user knows.
 */
export function explainFsError(err: FsError, path: string = err.path ?? ""): string {
  const action = ACTIONS[err.syscall ?? ""] ?? "use";
  return `cannot ${action} ${path}: ${fsReason(err.code, path)} (${err.code})`;
}
