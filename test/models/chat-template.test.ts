// Chat templates rendered with @huggingface/jinja against transformers' apply_chat_template on the
// published Qwen3 and Llama 3.1 templates (test/fixtures/make_tokenizer_json_fixtures.py): text and
// ids, with and without the generation prompt, multi-turn, tools and Qwen3's enable_thinking.
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { PreTrainedTokenizer, readChatTemplateFile, renderChatTemplate, type ChatMessage } from "../../lib/index.js";
import { expected, loadTokenizer, tokenizerDir } from "./tokenizer-fixtures.js";

interface ChatCase {
  messages: ChatMessage[];
  addGenerationPrompt: boolean;
  tools?: unknown[];
  enable_thinking?: boolean;
  text: string;
  ids: number[];
}

describe.each(["qwen3", "llama3"] as const)("%s chat template", (name) => {
  const cases = expected<{ chat: ChatCase[] }>(name).chat;

  it("renders every conversation as transformers' apply_chat_template, text and ids", () => {
    const tok = loadTokenizer(name);
    expect(cases.length).toBeGreaterThanOrEqual(10);
    for (const c of cases) {
      const opts = {
        addGenerationPrompt: c.addGenerationPrompt,
        ...(c.tools ? { tools: c.tools } : {}),
        ...(c.enable_thinking !== undefined ? { variables: { enable_thinking: c.enable_thinking } } : {}),
      };
      const label = JSON.stringify({ messages: c.messages.length, ...opts });
      expect(tok.applyChatTemplate(c.messages, opts), label).toBe(c.text);
      expect(tok.applyChatTemplate(c.messages, { ...opts, tokenize: true }), label).toEqual(c.ids);
    }
  });
});

describe("chat template sources and errors", () => {
  const tmp = mkdtempSync(join(tmpdir(), "lowrank-chat-"));
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));
  const conv: ChatMessage[] = [{ role: "user", content: "Hi" }, { role: "assistant", content: "Hello" }];

  it("takes a template given as text or as a file (.jinja, or JSON with chat_template) over the tokenizer's own", () => {
    const llama2 = loadTokenizer("llama2"), llama = loadTokenizer("llama3");
    const llamaTemplate = llama.chatTemplate as string;
    const jinja = join(tmp, "t.jinja"), json = join(tmp, "tokenizer_config.json");
    writeFileSync(jinja, llamaTemplate);
    writeFileSync(json, JSON.stringify({ chat_template: [{ name: "default", template: llamaTemplate }, { name: "other", template: "x" }] }));
    // Llama 3's template rendered by Llama 2's tokenizer (which has none): the special tokens are Llama 2's
    const want = llama.applyChatTemplate(conv).replace("<|begin_of_text|>", "<s>");
    expect(llama2.applyChatTemplate(conv, { chatTemplate: llamaTemplate })).toBe(want);
    expect(llama2.applyChatTemplate(conv, { chatTemplate: readChatTemplateFile(jinja) })).toBe(want);
    expect(llama2.applyChatTemplate(conv, { chatTemplate: readChatTemplateFile(json) })).toBe(want);
  });

  it("reads chat_template.jinja over tokenizer_config.json's, and picks tool_use among named templates when tools are given", () => {
    const dir = join(tmp, "folder");
    mkdirSync(dir);
    for (const f of ["tokenizer.json", "tokenizer_config.json"]) copyFileSync(join(tokenizerDir("llama2"), f), join(dir, f));
    writeFileSync(join(dir, "chat_template.jinja"), "{% for m in messages %}[{{ m.role }}] {{ m.content }}{% endfor %}");
    expect(PreTrainedTokenizer.fromPretrained(dir).applyChatTemplate(conv)).toBe("[user] Hi[assistant] Hello");
    const config = JSON.parse(readFileSync(join(dir, "tokenizer_config.json"), "utf8")) as Record<string, unknown>;
    config.chat_template = [{ name: "default", template: "plain" }, { name: "tool_use", template: "{{ tools | length }} tools" }];
    writeFileSync(join(dir, "tokenizer_config.json"), JSON.stringify(config));
    rmSync(join(dir, "chat_template.jinja"));
    const tok = PreTrainedTokenizer.fromPretrained(dir);
    expect([tok.applyChatTemplate(conv), tok.applyChatTemplate(conv, { tools: [{}, {}] })]).toEqual(["plain", "2 tools"]);
  });

  it("strips as Python does (strip/lstrip/rstrip with chars, trim, Python's whitespace), which @huggingface/jinja alone does not", () => {
    // the template and the expected text are Python's: jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    const template = "{{ s.lstrip('\\n') }}|{{ s.rstrip('\\n ') }}|{{ s.strip() }}|{{ s | trim }}|{{ s | trim('\\n') }}|{{ b.strip() }}|{{ 'xxaxx'.strip('x') }}";
    const out = renderChatTemplate(template, conv, {}, { variables: { s: "\n  hi \n", b: "\ufeff\x85 a \x1c" } });
    expect(out).toBe("  hi \n|\n  hi|hi|hi|  hi |\ufeff\x85 a|a");
  });

  it("says what is wrong: no template, an empty conversation, a template error, a bad file", () => {
    const llama2 = loadTokenizer("llama2");
    expect(() => llama2.applyChatTemplate(conv)).toThrow(/has no chat template \(no chat_template in tokenizer_config.json, no chat_template.jinja\); pass one/);
    expect(() => loadTokenizer("qwen3").applyChatTemplate([])).toThrow("the conversation is empty");
    expect(() => llama2.applyChatTemplate(conv, { chatTemplate: "{{ raise_exception('roles must alternate') }}" })).toThrow(/failed on this conversation: .*roles must alternate/);
    expect(() => llama2.applyChatTemplate(conv, { chatTemplate: "{% for %}" })).toThrow(/chat template \(given template\) does not parse/);
    const noField = join(tmp, "none.json");
    writeFileSync(noField, "{}");
    expect(() => readChatTemplateFile(noField)).toThrow(`${noField} has no "chat_template" field`);
    expect(() => readChatTemplateFile(join(tmp, "missing.jinja"))).toThrow(/missing.jinja cannot be read/);
  });
});
