// Chat templates: the Jinja template a model's tokenizer config ships, which turns a list of
// messages into the exact text the model was trained on. Rendered with @huggingface/jinja, which
// compiles templates as transformers does (trim_blocks and lstrip_blocks on, raise_exception and
// strftime_now defined), and given the same variables as transformers' apply_chat_template.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Template } from "@huggingface/jinja";
import { isJsonObject } from "../io/json-object.js";
import { PY_STRIP_FUNCTIONS, withPythonStrip, type TemplateNode } from "./jinja-strip.js";

/** One turn of a conversation: {"role": "user" | "assistant" | "system" | ..., "content": "..."}. */
export interface ChatMessage {
  role: string;
  content: string;
  /** Other fields a template may read (reasoning_content, tool_calls, ...). */
  [field: string]: unknown;
}

export interface RenderChatOptions {
  /** End with the prompt that makes the model answer as the assistant. Default false. */
  addGenerationPrompt?: boolean;
  /** Tool schemas, for templates that describe tools (`tools` in the template). */
  tools?: readonly unknown[];
  /** Documents for retrieval templates (`documents`). */
  documents?: readonly unknown[];
  /** More template variables (enable_thinking, ...); they win over the special tokens, as in transformers. */
  variables?: Record<string, unknown>;
}

/** A chat template as tokenizer_config.json holds it: one string, or named ones (transformers' list form). */
export type ChatTemplateSpec = string | ReadonlyMap<string, string>;

// Compiling a long template (Qwen3's is ~4 KB) costs more than rendering it; data loading renders
// the same template once per conversation prefix.
const compiled = new Map<string, Template>();

function compile(template: string, source: string): Template {
  let t = compiled.get(template);
  if (!t) {
    try {
      t = new Template(template);
      t.parsed = withPythonStrip(t.parsed as unknown as TemplateNode) as unknown as Template["parsed"];
    } catch (err) {
      throw new Error(`chat template (${source}) does not parse: ${(err as Error).message}`);
    }
    if (compiled.size >= 16) compiled.delete(compiled.keys().next().value!);
    compiled.set(template, t);
  }
  return t;
}

/**
 * The template to use, as transformers' get_chat_template picks it: a single template as is; of
 * named ones, "tool_use" when tools are given and it exists, else "default".
 */
export function selectChatTemplate(spec: ChatTemplateSpec, source: string, hasTools = false): string {
  if (typeof spec === "string") return spec;
  const name = hasTools && spec.has("tool_use") ? "tool_use" : "default";
  const t = spec.get(name);
  if (t === undefined) throw new Error(`${source}: no chat template named "${name}" among ${[...spec.keys()].map((k) => JSON.stringify(k)).join(", ")}`);
  return t;
}

/**
 * Renders `messages` with `template`. `specialTokens` are the tokenizer's named special tokens
 * ({bos_token, eos_token, unk_token, pad_token}, those it has): transformers passes them to every
 * template, and Llama 3's, for one, starts with bos_token.
 */
export function renderChatTemplate(
  template: string,
  messages: readonly ChatMessage[],
  specialTokens: Readonly<Record<string, string>>,
  opts: RenderChatOptions = {},
  source = "chat template",
): string {
  if (messages.length === 0) throw new Error("applyChatTemplate: the conversation is empty; give at least one message");
  const vars: Record<string, unknown> = {
    ...specialTokens,
    ...opts.variables,
    ...PY_STRIP_FUNCTIONS,
    messages,
    add_generation_prompt: opts.addGenerationPrompt ?? false,
  };
  if (opts.tools !== undefined) vars.tools = opts.tools;
  if (opts.documents !== undefined) vars.documents = opts.documents;
  try {
    return compile(template, source).render(vars);
  } catch (err) {
    throw new Error(`chat template (${source}) failed on this conversation: ${(err as Error).message}`);
  }
}

export interface ApplyChatTemplateOptions extends RenderChatOptions {
  /** Return token ids (encoded without adding special tokens: the template holds them) instead of text. Default false. */
  tokenize?: boolean;
  /** A template to use instead of the tokenizer's own (its text, not a file name). */
  chatTemplate?: string;
}

/**
 * What a tokenizer's applyChatTemplate renders (its `tokenize` is the tokenizer's part): the given
 * template, else the tokenizer's own (`own`, read from the folder `dir`), else an error that says
 * what to do.
 */
export function renderTokenizerChat(
  own: ChatTemplateSpec | undefined,
  dir: string,
  specialTokens: Readonly<Record<string, string>>,
  messages: readonly ChatMessage[],
  opts: ApplyChatTemplateOptions,
): string {
  if (opts.chatTemplate !== undefined) return renderChatTemplate(opts.chatTemplate, messages, specialTokens, opts, "given template");
  if (own === undefined) {
    throw new Error(
      `applyChatTemplate: the tokenizer in ${dir} has no chat template (no chat_template in tokenizer_config.json, no chat_template.jinja); ` +
        `pass one (chatTemplate) or use a model folder that ships one (an instruct/chat model)`,
    );
  }
  const source = join(dir, "tokenizer_config.json");
  return renderChatTemplate(selectChatTemplate(own, source, opts.tools !== undefined), messages, specialTokens, opts, source);
}

/** tokenizer_config.json's chat_template field as a spec, or why it is not one. */
export function chatTemplateFromConfig(value: unknown, source: string): ChatTemplateSpec | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value === "string") return value;
  if (Array.isArray(value)) {
    const named = new Map<string, string>();
    for (const entry of value) {
      if (!isJsonObject(entry) || typeof entry.name !== "string" || typeof entry.template !== "string") {
        throw new Error(`${source}: chat_template entries must be {"name": string, "template": string}, got ${JSON.stringify(entry).slice(0, 120)}`);
      }
      named.set(entry.name, entry.template);
    }
    return named;
  }
  throw new Error(`${source}: chat_template must be a string or a list of {"name", "template"}, got ${typeof value}`);
}

/**
 * The chat template a tokenizer folder ships and the file it is in, by transformers' precedence:
 * chat_template.jinja (where transformers 4.43+ saves it), else tokenizer_config.json's
 * chat_template (`config`, already read), else chat_template.json's.
 */
export function findChatTemplate(dir: string, config: Record<string, unknown>): { spec: ChatTemplateSpec; path: string } | undefined {
  const jinja = join(dir, "chat_template.jinja");
  if (existsSync(jinja)) return { spec: readFileSync(jinja, "utf8"), path: jinja };
  const configPath = join(dir, "tokenizer_config.json");
  const fromConfig = chatTemplateFromConfig(config.chat_template, configPath);
  if (fromConfig !== undefined) return { spec: fromConfig, path: configPath };
  const json = join(dir, "chat_template.json");
  if (!existsSync(json)) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(json, "utf8"));
  } catch (err) {
    throw new Error(`${json} is not valid JSON: ${(err as Error).message}`);
  }
  const spec = chatTemplateFromConfig(isJsonObject(parsed) ? parsed.chat_template : undefined, json);
  return spec === undefined ? undefined : { spec, path: json };
}

/** The chat template a tokenizer folder ships (findChatTemplate), without where it came from. */
export function readChatTemplate(dir: string, config: Record<string, unknown>): ChatTemplateSpec | undefined {
  return findChatTemplate(dir, config)?.spec;
}

/**
 * A chat template given as a file: a Jinja file (chat_template.jinja, any name), or a JSON file
 * with a "chat_template" field (tokenizer_config.json or chat_template.json of another model).
 */
export function readChatTemplateFile(path: string): string {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new Error(`chat template file ${path} cannot be read: ${(err as Error).message}`);
  }
  if (!path.endsWith(".json")) return text;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new Error(`${path} is not valid JSON: ${(err as Error).message}`);
  }
  const spec = chatTemplateFromConfig(isJsonObject(parsed) ? parsed.chat_template : undefined, path);
  if (spec === undefined) throw new Error(`${path} has no "chat_template" field; give a .jinja file or a JSON file with one`);
  return selectChatTemplate(spec, path);
}
