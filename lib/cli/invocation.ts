// How to run this command line again from where it was run, for the commands it prints (the
// resume hint): `lowrank ...` is only on PATH after a global install.
import { existsSync, realpathSync } from "node:fs";
import { delimiter, isAbsolute, join, relative, resolve } from "node:path";
import { shellQuote } from "./common.js";

function sameFile(a: string, b: string): boolean {
  try {
    return realpathSync(a) === realpathSync(b);
  } catch {
    return false;
  }
}

/**
 * The words that start this CLI: `npx lowrank` when it runs through npm or npx (npm's environment
 * variables, or the script reached through node_modules/.bin), `lowrank` when the `lowrank` found
 * on PATH is this very script (a global install), otherwise `node <script>` (relative to the
 * working directory when below it).
 */
export function cliInvocation(env: NodeJS.ProcessEnv = process.env, script: string = process.argv[1] ?? "", cwd: string = process.cwd()): string[] {
  const viaBin = script.split(/[\\/]/).join("/").includes("/node_modules/.bin/");
  if (env.npm_execpath || env.npm_lifecycle_event || viaBin) return ["npx", "lowrank"];
  const onPath = (env.PATH ?? "").split(delimiter).filter(Boolean).map((dir) => join(dir, "lowrank"));
  if (onPath.some((bin) => existsSync(bin) && sameFile(bin, script))) return ["lowrank"];
  const rel = relative(cwd, resolve(cwd, script));
  return ["node", rel !== "" && !rel.startsWith("..") && !isAbsolute(rel) ? rel : resolve(cwd, script)];
}

/** A command line that runs this CLI with `args`, quoted for a POSIX shell. */
export function commandLine(args: readonly string[]): string {
  return [...cliInvocation(), ...args].map(shellQuote).join(" ");
}
