// Prompt templates: how an instruction (and its optional input) becomes the prompt text that the
// response follows. The default is Stanford Alpaca's template, word for word, so adapters trained
// here see the same prompts as adapters trained with the Alpaca recipes.

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
 * {input} placeholder, if any, becomes "" for examples without input).
 */
export type TemplateSpec = PromptTemplate | string;

/** A template checked once, ready to format prompts. */
export interface ResolvedTemplate {
  withInput: string;
  withoutInput: string;
  /** False when the with-input text has no {input}: examples with an input cannot use it. */
  acceptsInput: boolean;
}

const PLACEHOLDER = /\{(instruction|input)\}/g;

/** Checks a template (throws one line naming what is wrong) and normalizes it. */
export function resolveTemplate(spec: TemplateSpec = ALPACA_TEMPLATE): ResolvedTemplate {
  const t: PromptTemplate = typeof spec === "string" ? { withInput: spec, withoutInput: spec } : spec;
  for (const [name, text] of Object.entries(t) as [keyof PromptTemplate, unknown][]) {
    if (typeof text !== "string") throw new Error(`prompt template: ${name} must be a string, got ${typeof text}`);
    if (!text.includes("{instruction}")) throw new Error(`prompt template: ${name} has no {instruction} placeholder: ${JSON.stringify(text)}`);
  }
  if (typeof spec !== "string" && !t.withInput.includes("{input}")) {
    throw new Error(`prompt template: withInput has no {input} placeholder: ${JSON.stringify(t.withInput)}`);
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
