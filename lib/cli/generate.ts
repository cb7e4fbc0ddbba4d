// `lowrank generate`: continues a prompt with a GPT-2 checkpoint, optionally with a LoRA adapter,
// printing the text to stdout as the tokens are produced.
import { existsSync } from "node:fs";
import { join } from "node:path";
import type { Command } from "commander";
import { generate } from "../models/generate.js";
import type { GPT2LMHeadModel } from "../models/gpt2/model.js";
import type { GPT2Tokenizer } from "../models/tokenizer.js";
import { PeftModel } from "../peft/model.js";
import { Generator } from "../tensor/random.js";
import { formatPrompt, MODEL_TEMPLATE_FILE, resolveTemplate } from "../train/template.js";
import { intAtLeast, loadModel, loadTemplate, loadTokenizer, newCommand, numberIn, oneOf, resolveDevice, runAction, UsageError } from "./common.js";
import { withConfigFile } from "./config.js";

interface GenerateFlags {
  model: string;
  adapter?: string;
  prompt: string;
  input?: string;
  template?: string;
  maxNewTokens: number;
  temperature: number;
  topK: number;
  topP: number;
  seed: number;
  device?: string;
  json?: boolean;
}

export function generateCommand(): Command {
  return withConfigFile(newCommand("generate")
    .description("continue a prompt with a GPT-2 checkpoint (and a LoRA adapter), streaming the text to stdout"))
    .requiredOption("--model <dir>", "base model folder in Hugging Face layout (with its tokenizer files)")
    .option("--adapter <dir>", "a LoRA adapter in PEFT's format to apply (e.g. the --out of lowrank train)")
    .requiredOption("--prompt <text>", "the prompt; with --template, the instruction")
    .option("--input <text>", "with --template: the instruction's input")
    .option("--template <name|file>", 'wrap the prompt: "none", "alpaca", or a template file as in lowrank train (default: the template.txt the model folder ships, else "none")')
    .option("--max-new-tokens <n>", "stop after this many tokens (or at the end-of-text token)", intAtLeast(1), 128)
    .option("--temperature <x>", "0 picks the most likely token (greedy); higher samples more freely", numberIn(0, Infinity), 0)
    .option("--top-k <n>", "sample among the k most likely tokens only (0: no limit)", intAtLeast(0), 0)
    .option("--top-p <x>", "sample among the most likely tokens that cover probability p (1: no limit)", numberIn(0, 1, { loOpen: true }), 1)
    .option("--seed <n>", "seed for sampling", intAtLeast(0), 0)
    .option("--device <name>", "cpu or cuda (default: cuda when a GPU is usable)", oneOf(["cpu", "cuda"] as const))
    .option("--json", "print one JSON object at the end (the prompt, the text, the token ids and why generation stopped) instead of streaming the text")
    .addHelpText(
      "after",
      `
Only the generated text is printed (stdout), so it can be piped. Use the template the adapter was
trained with: lowrank train, like generate, uses the model folder's template.txt unless told
otherwise (and "alpaca" for a model folder without one).

Example (the model bundled with lowrank, and an adapter from lowrank train --out runs/demo):
  lowrank generate --model data/demo/model --adapter runs/demo \\
    --prompt "Move the first word to the end." --input "net,button,moon"`,
    )
    .action(runAction("generate", (flags: GenerateFlags) => run(flags)));
}

/**
 * Writes the text of token ids as they arrive. A token can end inside a multi-byte character
 * (byte-level BPE), which decodes to U+FFFD until the next token completes it, so a trailing
 * U+FFFD is held back until then (or until end()).
 */
export class TextStreamer {
  private readonly ids: number[] = [];
  private written = "";

  constructor(
    private readonly tokenizer: Pick<GPT2Tokenizer, "decode">,
    private readonly write: (text: string) => void,
  ) {}

  push(id: number): void {
    this.ids.push(id);
    this.flush(false);
  }

  end(): void {
    this.flush(true);
  }

  private flush(final: boolean): void {
    const decoded = this.tokenizer.decode(this.ids, { skipSpecialTokens: true });
    const ready = final ? decoded : decoded.replace(/\uFFFD+$/, "");
    if (ready.length > this.written.length) this.write(ready.slice(this.written.length));
    this.written = ready;
  }
}

/** --template, or the model folder's template.txt (announced on stderr: stdout is the generated text), or none. */
function templateFlag(flags: GenerateFlags): string {
  if (flags.template !== undefined) return flags.template;
  const shipped = join(flags.model, MODEL_TEMPLATE_FILE);
  if (!existsSync(shipped)) return "none";
  console.error(`prompt template: ${shipped} (shipped with the model; --template none for the bare prompt)`);
  return shipped;
}

function promptText(flags: GenerateFlags): string {
  const template = templateFlag(flags);
  if (template === "none") {
    if (flags.input !== undefined) throw new UsageError("--input needs a --template (e.g. --template alpaca) to place it in the prompt");
    return flags.prompt;
  }
  return formatPrompt(resolveTemplate(loadTemplate(template)), flags.prompt, flags.input ?? "");
}

async function run(flags: GenerateFlags): Promise<void> {
  if (flags.prompt === "") throw new UsageError("--prompt is empty");
  const text = promptText(flags);
  const device = resolveDevice(flags.device);
  const base = loadModel(flags.model, { device });
  const tokenizer = loadTokenizer(flags.model, base);
  let peft: PeftModel<GPT2LMHeadModel> | null = null;
  if (flags.adapter !== undefined) {
    try {
      peft = PeftModel.fromPretrained(base, flags.adapter);
    } catch (err) {
      base.dispose();
      throw new Error(`--adapter ${flags.adapter}: ${(err as Error).message}`, { cause: err });
    }
  }
  const model = peft ?? base;
  const ids = tokenizer.encode(text);
  if (ids.length >= base.config.nPositions) {
    model.dispose();
    throw new UsageError(
      `the prompt is ${ids.length} tokens; the model sees at most ${base.config.nPositions}, leaving no room to generate; ` +
        `use a shorter prompt or a shorter --template (the one the adapter was trained with)`,
    );
  }

  // --json: no streaming; the whole result once generation ends
  const stream = flags.json ? null : new TextStreamer(tokenizer, (text) => process.stdout.write(text));
  try {
    const tokenIds = generate(model, ids, {
      maxNewTokens: flags.maxNewTokens, temperature: flags.temperature, topK: flags.topK, topP: flags.topP,
      eosTokenId: tokenizer.eosTokenId, generator: new Generator(flags.seed),
      onToken: stream ? (id) => stream.push(id) : undefined,
    });
    if (stream) {
      stream.end();
      process.stdout.write("\n");
      return;
    }
    // generate() stops at the end-of-text token, after --max-new-tokens, or when the model's n_positions are used up
    const stopReason = tokenIds.at(-1) === tokenizer.eosTokenId ? "eos" : tokenIds.length === flags.maxNewTokens ? "max-new-tokens" : "context-full";
    const output = {
      prompt: flags.prompt, input: flags.input ?? null, promptText: text, promptTokenIds: ids,
      text: tokenizer.decode(tokenIds, { skipSpecialTokens: true }), tokenIds, stopReason,
    };
    console.log(JSON.stringify(output, null, 2));
  } finally {
    model.dispose();
  }
}
