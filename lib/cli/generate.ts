// `lowrank generate`: continues a prompt with a causal LM (GPT-2 or the Llama family), optionally
// with a LoRA adapter, printing the text to stdout as the tokens are produced. A chat model's
// prompt is a user message rendered with its chat template.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { Command } from "commander";
import type { CausalLM } from "../models/auto.js";
import type { AnyTokenizer } from "../models/auto-tokenizer.js";
import { findChatTemplate } from "../models/chat-template.js";
import { generateText, streamText } from "../models/generate.js";
import { PeftModel } from "../peft/model.js";
import { Generator } from "../tensor/random.js";
import { formatPrompt, MODEL_TEMPLATE_FILE, resolveTemplate } from "../train/template.js";
import {
  DEVICE_HELP, deviceName, intAtLeast, loadChatTemplate, loadModel, loadTemplate, loadTokenizer, newCommand, numberIn, oneOf, resolveDevice, resolveModelFlag, runAction, UsageError,
} from "./common.js";
import { withConfigFile } from "./config.js";

interface GenerateFlags {
  model: string;
  adapter?: string;
  prompt: string;
  input?: string;
  template?: string;
  /** A template file, or false for --no-chat-template. */
  chatTemplate?: string | false;
  maxNewTokens: number;
  temperature: number;
  topK: number;
  topP: number;
  seed: number;
  device?: string;
  dtype?: "float32" | "bfloat16";
  json?: boolean;
}

export function generateCommand(): Command {
  return withConfigFile(newCommand("generate")
    .description("continue a prompt with a causal LM (GPT-2, Llama, Mistral, Qwen2, Qwen3) and a LoRA adapter, streaming the text to stdout"))
    .requiredOption("--model <dir|name>", "base model folder in Hugging Face layout (with its tokenizer files), or a name in the local Hugging Face cache")
    .option("--adapter <dir>", "a LoRA adapter in PEFT's format to apply (e.g. the --out of lowrank train)")
    .requiredOption("--prompt <text>", "the prompt; with --template, the instruction")
    .option("--input <text>", "with --template: the instruction's input")
    .option("--template <name|file>", 'wrap the prompt: "none", "alpaca", or a template file as in lowrank train (default: the template.txt the model folder ships, else the chat template, else "none")')
    .option("--chat-template <file>", "render the prompt as a user message with this chat template (.jinja, or JSON with \"chat_template\") instead of the model's")
    .option("--no-chat-template", "the prompt as plain text, even when the model ships a chat template")
    .option("--max-new-tokens <n>", "stop after this many tokens (or at an end-of-sequence token)", intAtLeast(1), 128)
    .option("--temperature <x>", "0 picks the most likely token (greedy); higher samples more freely", numberIn(0, Infinity), 0)
    .option("--top-k <n>", "sample among the k most likely tokens only (0: no limit)", intAtLeast(0), 0)
    .option("--top-p <x>", "sample among the most likely tokens that cover probability p (1: no limit)", numberIn(0, 1, { loOpen: true }), 1)
    .option("--seed <n>", "seed for sampling", intAtLeast(0), 0)
    .option("--device <name>", DEVICE_HELP, deviceName)
    .option("--dtype <type>", "float32, or bfloat16: the base model's weight matrices kept in bf16 (half the memory)", oneOf(["float32", "bfloat16"] as const), "float32")
    .option("--json", "print one JSON object at the end (the prompt, the text, the token ids and why generation stopped) instead of streaming the text")
    .addHelpText(
      "after",
      `
Only the generated text is printed (stdout), so it can be piped; special tokens are left out.
Use the template the adapter was trained with: lowrank train, like generate, uses the model
folder's template.txt unless told otherwise (and "alpaca" for a model folder without one).
A model that ships a chat template (an instruct/chat model) gets the prompt as one user message
rendered with it, ending with the assistant's turn, as transformers' apply_chat_template with
add_generation_prompt; generation stops at any of the model's end-of-sequence ids
(generation_config.json's eos_token_id, e.g. Llama 3's <|eot_id|> and <|end_of_text|>).

Examples (the model bundled with lowrank and an adapter from lowrank train --out runs/demo; then
a chat model from the Hugging Face cache and a chat adapter):
  lowrank generate --model data/demo/model --adapter runs/demo \\
    --prompt "Move the first word to the end." --input "net,button,moon"
  lowrank generate --model HuggingFaceTB/SmolLM2-135M-Instruct --adapter runs/chat --prompt "Name three colours."`,
    )
    .action(runAction("generate", (flags: GenerateFlags) => run(flags)));
}

/** --template, or the model folder's template.txt (announced on stderr: stdout is the generated text), or undefined. */
function templateFlag(flags: GenerateFlags, dir: string): string | undefined {
  if (flags.template !== undefined) return flags.template;
  const shipped = join(dir, MODEL_TEMPLATE_FILE);
  if (!existsSync(shipped)) return undefined;
  console.error(`prompt template: ${shipped} (shipped with the model; --template none for the bare prompt)`);
  return shipped;
}

/** The file the model folder's chat template is in, for the announcement. */
function shippedChatTemplate(dir: string): string | undefined {
  const configPath = join(dir, "tokenizer_config.json");
  return findChatTemplate(dir, existsSync(configPath) ? (JSON.parse(readFileSync(configPath, "utf8")) as Record<string, unknown>) : {})?.path;
}

/** The prompt as the model sees it: its text and token ids, and the chat template used (a path) or null. */
interface Prompt {
  text: string;
  ids: number[];
  chatTemplate: string | null;
}

/**
 * The prompt: wrapped by --template (or the folder's template.txt) and encoded; else, when a chat
 * template is at hand (--chat-template, or the model's unless --no-chat-template), one user
 * message rendered with it up to the assistant's turn; else the bare text.
 */
function buildPrompt(flags: GenerateFlags, dir: string, tokenizer: AnyTokenizer): Prompt {
  const template = templateFlag(flags, dir);
  if (template !== undefined && template !== "none") {
    const text = formatPrompt(resolveTemplate(loadTemplate(template)), flags.prompt, flags.input ?? "");
    return { text, ids: tokenizer.encode(text), chatTemplate: null };
  }
  if (flags.input !== undefined) throw new UsageError("--input needs a --template (e.g. --template alpaca) to place it in the prompt");
  const given = typeof flags.chatTemplate === "string" ? flags.chatTemplate : undefined;
  const shipped = template === undefined && flags.chatTemplate !== false && given === undefined && tokenizer.chatTemplate !== undefined ? shippedChatTemplate(dir) : undefined;
  if (given === undefined && shipped === undefined) return { text: flags.prompt, ids: tokenizer.encode(flags.prompt), chatTemplate: null };
  const opts = { addGenerationPrompt: true, ...(given === undefined ? {} : { chatTemplate: loadChatTemplate(given) }) };
  const messages = [{ role: "user", content: flags.prompt }];
  const text = tokenizer.applyChatTemplate(messages, opts);
  const ids = tokenizer.applyChatTemplate(messages, { ...opts, tokenize: true });
  console.error(`chat template: ${given ?? shipped} (${given === undefined ? "shipped with the model; --no-chat-template for the bare prompt" : "--chat-template"})`);
  return { text, ids, chatTemplate: (given ?? shipped)! };
}

async function run(flags: GenerateFlags): Promise<void> {
  if (flags.prompt === "") throw new UsageError("--prompt is empty");
  if (flags.template !== undefined && flags.template !== "none" && typeof flags.chatTemplate === "string") {
    throw new UsageError("give --template or --chat-template, not both");
  }
  const device = resolveDevice(flags.device);
  const dir = resolveModelFlag(flags.model);
  const base = await loadModel(dir, { device, dtype: flags.dtype });
  let tokenizer: AnyTokenizer, prompt: Prompt;
  try {
    tokenizer = loadTokenizer(dir, base);
    prompt = buildPrompt(flags, dir, tokenizer);
  } catch (err) {
    base.dispose();
    throw err;
  }
  let peft: PeftModel<CausalLM> | null = null;
  if (flags.adapter !== undefined) {
    try {
      peft = await PeftModel.fromPretrained(base, flags.adapter);
    } catch (err) {
      base.dispose();
      throw new Error(`--adapter ${flags.adapter}: ${(err as Error).message}`, { cause: err });
    }
  }
  const model = peft ?? base;
  const { ids, text } = prompt;
  const maxPositions = base.generationSpec().maxPositions;
  if (ids.length >= maxPositions) {
    model.dispose();
    throw new UsageError(
      `the prompt is ${ids.length} tokens; the model sees at most ${maxPositions}, leaving no room to generate; ` +
        `use a shorter prompt or a shorter --template (the one the adapter was trained with)`,
    );
  }

  const options = {
    maxNewTokens: flags.maxNewTokens, temperature: flags.temperature, topK: flags.topK, topP: flags.topP,
    eosTokenId: tokenizer.eosTokenIds, generator: new Generator(flags.seed),
  };
  try {
    if (!flags.json) {
      for await (const chunk of streamText(model, tokenizer, ids, options)) process.stdout.write(chunk);
      process.stdout.write("\n");
      return;
    }
    // --json: no streaming; the whole result once generation ends
    const { text: generated, tokenIds, stopReason } = await generateText(model, tokenizer, ids, options);
    const output = {
      prompt: flags.prompt, input: flags.input ?? null, chatTemplate: prompt.chatTemplate, promptText: text, promptTokenIds: ids,
      text: generated, tokenIds, stopReason,
    };
    console.log(JSON.stringify(output, null, 2));
  } finally {
    model.dispose();
  }
}
