// Chat data ({"messages": [{"role", "content"}, ...]}) and prompt/completion data: which tokens
// carry the loss. Read and dispatched by data.ts; this file holds the parts that need a chat
// template or the token-prefix rule.
import type { ChatMessage } from "../models/chat-template.js";

interface RenderOptions {
  addGenerationPrompt?: boolean;
  /** A template's text, instead of the tokenizer's own. */
  chatTemplate?: string;
}

/**
 * What chat records need from a tokenizer: its chat template, as text and as ids (the tokenizer
 * knows how to encode rendered text, special tokens included). PreTrainedTokenizer and
 * GPT2Tokenizer have it.
 */
export interface ChatTokenizer {
  applyChatTemplate(messages: readonly ChatMessage[], opts: RenderOptions & { tokenize: true }): number[];
  applyChatTemplate(messages: readonly ChatMessage[], opts?: RenderOptions): string;
}

function describe(value: unknown): string {
  if (value === null) return "null";
  return Array.isArray(value) ? "an array" : `a ${typeof value}`;
}

/** A record's "messages" as chat messages, or why they are not. */
export function parseMessages(value: unknown): ChatMessage[] | string {
  if (!Array.isArray(value)) return `"messages" must be an array of {"role", "content"}, got ${describe(value)}`;
  if (value.length === 0) return `"messages" is empty`;
  for (const [i, m] of value.entries()) {
    if (m === null || typeof m !== "object" || Array.isArray(m)) return `"messages"[${i}] must be an object with "role" and "content", got ${describe(m)}`;
    const { role, content } = m as Record<string, unknown>;
    if (role === undefined || content === undefined) return `"messages"[${i}].${role === undefined ? "role" : "content"} is missing`;
    if (typeof role !== "string" || role === "") return `"messages"[${i}].role must be a non-empty string, got ${role === "" ? "an empty string" : describe(role)}`;
    if (typeof content !== "string") return `"messages"[${i}].content must be a string, got ${describe(content)}`;
  }
  const messages = value as ChatMessage[];
  if (!messages.some((m) => m.role === "assistant")) return `"messages" has no "assistant" message, so nothing to train on`;
  if (messages[0]!.role === "assistant") return `"messages" starts with an assistant message; its prompt cannot be rendered (start with a system or user message)`;
  return messages;
}

/**
 * How many leading tokens of `ids` the text `prefix` accounts for: the ids that encoding the prefix
 * alone shares with the whole text's. TRL splits prompt from completion the same way (it
 * encodes the prompt and the whole text and masks the prompt's length). A token that straddles
 * the boundary (it holds characters of both sides) ends the shared part, so it counts as after it.
 */
export function prefixTokenCount(prefixIds: readonly number[], ids: readonly number[]): number {
  let n = 0;
  while (n < prefixIds.length && n < ids.length && prefixIds[n] === ids[n]) n++;
  return n;
}

export interface ChatTokens {
  /** The conversation rendered by the chat template and encoded as applyChatTemplate(..., {tokenize: true}) does. */
  ids: number[];
  /** [start, end) token ranges of the assistant turns, in order. */
  assistant: [number, number][];
}

/**
 * The token ids of a conversation and where its assistant turns are, or why they cannot be found.
 *
 * The spans come from rendering prefixes of the conversation with the same template, as TRL does
 * for conversational prompt/completion data: assistant turn i starts where the messages before it,
 * rendered with the generation prompt, end, and ends where the messages through it, rendered
 * without, end. So the loss covers exactly what the model must produce after the generation
 * prompt: the answer and the template's end-of-turn tokens (Qwen's "<|im_end|>\n", Llama 3's
 * "<|eot_id|>"). Character positions become token positions by encoding each prefix
 * (prefixTokenCount). A template that renders earlier turns differently once later messages
 * follow (Qwen3's drops the <think> block of turns before the last user message) has no such
 * prefixes: that conversation is refused with the reason, not trained with guessed spans.
 */
export function chatTokens(messages: readonly ChatMessage[], tokenizer: ChatTokenizer, chatTemplate?: string): ChatTokens | string {
  const opts = (addGenerationPrompt: boolean) => ({ addGenerationPrompt, ...(chatTemplate === undefined ? {} : { chatTemplate }) });
  const full = tokenizer.applyChatTemplate(messages, opts(false));
  const ids = tokenizer.applyChatTemplate(messages, { ...opts(false), tokenize: true });
  /** The tokens of the whole conversation that its first `upTo` messages account for. */
  const boundary = (upTo: number, addGenerationPrompt: boolean): number | string => {
    const prefix = messages.slice(0, upTo);
    if (!full.startsWith(tokenizer.applyChatTemplate(prefix, opts(addGenerationPrompt)))) {
      return `the chat template renders messages 1-${upTo}${addGenerationPrompt ? " with the generation prompt" : ""} differently when later messages follow ` +
        "(that rendering is not the start of the whole conversation's), so the assistant tokens cannot be told apart; " +
        "give each assistant turn as its own conversation, or use a template that leaves earlier turns unchanged";
    }
    return prefixTokenCount(tokenizer.applyChatTemplate(prefix, { ...opts(addGenerationPrompt), tokenize: true }), ids);
  };
  const assistant: [number, number][] = [];
  for (const [i, m] of messages.entries()) {
    if (m.role !== "assistant") continue;
    const start = boundary(i, true);
    if (typeof start === "string") return start;
    const end = boundary(i + 1, false);
    if (typeof end === "string") return end;
    if (end > start) assistant.push([start, end]);
  }
  if (assistant.length === 0) return "the chat template renders no tokens for the assistant messages, so there is nothing to train on";
  return { ids, assistant };
}
