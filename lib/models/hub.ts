// Resolving a Hugging Face model name ("Qwen/Qwen2.5-0.5B") to its folder in the local Hugging
// Face cache, laid out as huggingface_hub writes it:
//   <cache>/models--Qwen--Qwen2.5-0.5B/refs/main          the commit hash the ref points at
//   <cache>/models--Qwen--Qwen2.5-0.5B/snapshots/<hash>/  config.json, model.safetensors, ...
// lowrank never downloads: a name missing from the cache is an error that says how to fetch it.
import { existsSync, readFileSync, statSync } from "node:fs";
import { homedir } from "node:os";
import { join, resolve } from "node:path";

/**
 * The hub cache folder, by huggingface_hub's precedence: HF_HUB_CACHE, else $HF_HOME/hub, else
 * $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub.
 */
export function hfHubCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.HF_HUB_CACHE) return env.HF_HUB_CACHE;
  if (env.HF_HOME) return join(env.HF_HOME, "hub");
  return join(env.XDG_CACHE_HOME || join(homedir(), ".cache"), "huggingface", "hub");
}

// A repo id as the Hub spells it: "name" or "owner/name" (letters, digits, "-", "_", ".").
const REPO_ID = /^[A-Za-z0-9][\w.-]*(\/[A-Za-z0-9][\w.-]*)?$/;
const COMMIT_HASH = /^[0-9a-f]{40}$/;

/** Whether `text` is spelled like a Hub repo id ("name" or "owner/name"), so it may name a cached model. */
export function isRepoId(text: string): boolean {
  return REPO_ID.test(text);
}

/**
 * The folder to load `nameOrPath` from: the path itself when it exists (as a folder), else the
 * snapshot of the Hugging Face model name in the local cache at `revision` (a branch or tag under
 * refs/, or a commit hash; "main" by default). `what` prefixes the errors ("LlamaForCausalLM.fromPretrained").
 */
export function resolveModelDir(nameOrPath: string, what: string, revision = "main"): string {
  if (existsSync(nameOrPath)) return nameOrPath;
  if (!isRepoId(nameOrPath)) throw new Error(`${what}: model directory ${nameOrPath} does not exist`);
  const cache = hfHubCacheDir();
  const repo = join(cache, `models--${nameOrPath.replace("/", "--")}`);
  const howToGet =
    `lowrank does not download models: fetch it with \`huggingface-cli download ${nameOrPath}\` (or \`hf download ${nameOrPath}\`), ` +
    `which fills this cache (set HF_HUB_CACHE or HF_HOME to use another)`;
  if (!existsSync(repo)) {
    throw new Error(
      `${what}: ${nameOrPath} is neither a folder (no ${resolve(nameOrPath)}) nor in the Hugging Face cache ` +
        `(looked for ${repo} in the cache ${cache}); ${howToGet}`,
    );
  }
  const ref = join(repo, "refs", revision);
  let hash: string;
  if (existsSync(ref) && statSync(ref).isFile()) {
    hash = readFileSync(ref, "utf8").trim();
  } else if (COMMIT_HASH.test(revision)) {
    hash = revision;
  } else {
    throw new Error(
      `${what}: ${nameOrPath} is in the Hugging Face cache (${repo}) but has no ref "${revision}": ${ref} is missing ` +
        `(pass a revision that refs/ names, or a commit hash under ${join(repo, "snapshots")}); ${howToGet}`,
    );
  }
  const snapshot = join(repo, "snapshots", hash);
  if (!existsSync(snapshot)) {
    throw new Error(
      `${what}: ${nameOrPath} at revision "${revision}" (commit ${hash || "(empty ref)"}) has no snapshot: ${snapshot} is missing; ${howToGet}`,
    );
  }
  return snapshot;
}
