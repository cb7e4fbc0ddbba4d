// Prompt templates: how an instruction (and its optional input) becomes the prompt text that the
// response follows. The default is Stanford Alpaca's template, word for word, so adapters trained
// here see the same prompts as adapters trained with the Alpaca recipes.
import { existsSync, readFileSync, statSync } from "node:fs";
import { extname } from "node:path";

/** One text for examples with an input and one for examples without. */
export interface PromptTemplate {
  /** Used when the example's input is non-empty; holds {instruction} and {input}. */
  withInput: string;
  /** Used when the example has no input (absent or ""); holds {instruction}. */
  withoutInput: string;
}

/** Stanford Alpaca's prompt template (both variants, exact texts). */
export const ALPACA_TEMPLATE: Readonly<PromptTemplate> = Object.freeze({
  withInput:
    "Below is an instruction that describes a task, paired with an input that provides further context. " +
    "Write a response that appropriately completes the request.\n\n" +
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n",
  withoutInput:
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n" +
    "### Instruction:\n{instruction}\n\n### Response:\n",
});

/**
 * A template as users give it: a PromptTemplate, or one string used for every example (its
 * {input} placeholder, if any, becomes "" for examples without input). resolveTemplate() also
 * takes "alpaca" and the path of a template file (see readTemplateFile).
 */
export type TemplateSpec = PromptTemplate | string;

/** The file a model folder ships its prompt template in (the bundled demo model has one). */
export const MODEL_TEMPLATE_FILE = "template.txt";

/**
 * A template file: JSON {"withInput", "withoutInput"} when the name ends in .json, else text used
 * for every example. Throws one line saying what is wrong (the caller names the file); the
 * template itself is checked by resolveTemplate.
 */
export function readTemplateFile(path: string): TemplateSpec {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new Error(`cannot read it (${(err as Error).message})`);
  }
  if (extname(path).toLowerCase() !== ".json") return text;
  try {
    return JSON.parse(text) as PromptTemplate;
  } catch (err) {
    throw new Error(`not valid JSON (${(err as Error).message}); a JSON template is {"withInput": "...", "withoutInput": "..."}`);
  }
}

/** A string that is not template text (no {instruction}) but names a file is read as a template file. */
function isTemplateFile(spec: string): boolean {
  return !spec.includes("{instruction}") && existsSync(spec) && statSync(spec).isFile();
}

/** A template checked once, ready to format prompts. */
export interface ResolvedTemplate {
  withInput: string;
  withoutInput: string;
  /** False when the with-input text has no {input}: examples with an input cannot use it. */
  acceptsInput: boolean;
}

const PLACEHOLDER = /\{(instruction|input)\}/g;

/**
 * Checks a template (throws one line naming what is wrong) and normalizes it. A string is template
 * text, "alpaca" (ALPACA_TEMPLATE), or the path of a template file (readTemplateFile).
 */
export function resolveTemplate(spec: TemplateSpec = ALPACA_TEMPLATE): ResolvedTemplate {
  if (spec === "alpaca") return checkTemplate(ALPACA_TEMPLATE);
  if (typeof spec === "string" && isTemplateFile(spec)) {
    let content: TemplateSpec;
    try {
      content = readTemplateFile(spec);
    } catch (err) {
      throw new Error(`prompt template file ${spec}: ${(err as Error).message}`);
    }
    return checkTemplate(content, `prompt template file ${spec}`);
  }
  return checkTemplate(spec);
}

/** `what` starts each error message: the template, or the file it came from. */
function checkTemplate(spec: TemplateSpec, what = "prompt template"): ResolvedTemplate {
  const t: PromptTemplate = typeof spec === "string" ? { withInput: spec, withoutInput: spec } : spec;
  for (const [name, text] of Object.entries(t) as [keyof PromptTemplate, unknown][]) {
    if (typeof text !== "string") throw new Error(`${what}: ${name} must be a string, got ${typeof text}`);
    if (!text.includes("{instruction}")) throw new Error(`${what}: ${name} has no {instruction} placeholder: ${JSON.stringify(text)}`);
  }
  if (typeof spec !== "string" && !t.withInput.includes("{input}")) {
    throw new Error(`${what}: withInput has no {input} placeholder: ${JSON.stringify(t.withInput)}`);
  }
  return { withInput: t.withInput, withoutInput: t.withoutInput, acceptsInput: t.withInput.includes("{input}") };
}

/**
 * The prompt for one instruction. Placeholders are filled in one pass, so braces inside the
 * instruction or input text are never expanded again.
 */
export function formatPrompt(template: ResolvedTemplate, instruction: string, input = ""): string {
  if (input !== "" && !template.acceptsInput) {
    throw new Error("prompt template: the example has an input but the template has no {input} placeholder");
  }
  const text = input === "" ? template.withoutInput : template.withInput;
  return text.replace(PLACEHOLDER, (_, name: string) => (name === "instruction" ? instruction : input));
}
