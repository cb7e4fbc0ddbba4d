// The CLI on a Llama-family chat model: train on chat JSONL (the loss on the assistant turns only),
// generate with the model's chat template (stopping at its end-of-turn token), merge, and the same
// model named through a Hugging Face cache. The model is test/fixtures/chat-tiny: a random Qwen3
// made by transformers with a 320-id byte-level BPE and a ChatML template (make_chat_fixture.py).
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PreTrainedTokenizer } from "../../lib/models/pretrained-tokenizer.js";
import { runCli, workspace } from "./helpers.js";

const FIXTURE = resolve(import.meta.dirname, "../fixtures/chat-tiny");
const reference = JSON.parse(readFileSync(join(FIXTURE, "reference.json"), "utf8")) as {
  prompt: { role: string; content: string }[]; prompt_ids: number[]; prompt_text: string; greedy_new_ids: number[]; eos_token_ids: number[];
};

const WORDS = ["rocket", "pan", "head", "silver", "circle", "flower", "water", "ship", "moon", "net", "button", "rat"];
/** Conversations whose every answer is "ok": a few dozen steps teach the tiny model to say it and end its turn. */
function chatLines(n: number): string {
  const lines: string[] = [];
  for (let i = 0; i < n; i++) {
    const list = [0, 1, 2].map((k) => WORDS[(i * 5 + k * 7) % WORDS.length]).join(",");
    const messages = [
      ...(i % 3 === 0 ? [{ role: "system", content: "Answer briefly." }] : []),
      { role: "user", content: `Check the list ${list}` },
      { role: "assistant", content: "ok" },
    ];
    lines.push(JSON.stringify({ messages }));
  }
  return lines.join("\n") + "\n";
}

interface GenerateJson {
  chatTemplate: string | null;
  promptText: string;
  promptTokenIds: number[];
  text: string;
  tokenIds: number[];
  stopReason: string;
}

let ws: Awaited<ReturnType<typeof workspace>>;
let model: string, chat: string, adapter: string;
let tok: PreTrainedTokenizer;

beforeAll(async () => {
  ws = await workspace("lowrank-cli-llama-");
  model = join(ws.dir, "chat-model");
  cpSync(FIXTURE, model, { recursive: true, filter: (src) => !src.endsWith("reference.json") });
  chat = join(ws.dir, "chat.jsonl");
  writeFileSync(chat, chatLines(24));
  tok = PreTrainedTokenizer.fromPretrained(model);
  // the adapter the generate and merge tests use: trained until it answers "ok" and ends its turn
  adapter = join(ws.dir, "adapter");
  const r = await runCli(ws.main, [
    "train", "--model", model, "--data", chat, "--out", adapter, "--target", "all-linear", "--r", "8", "--alpha", "16", "--dropout", "0",
    "--steps", "60", "--lr", "2e-2", "--batch-size", "8", "--eval-split", "0", "--checkpoint-every", "0", "--quiet",
  ]);
  expect(r.code, r.stderr).toBe(0);
}, 240_000);
afterAll(() => ws?.cleanup());

const generateJson = async (args: string[], env: NodeJS.ProcessEnv = {}): Promise<GenerateJson> => {
  const r = await runCli(ws.main, ["generate", ...args, "--json"], env);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as GenerateJson;
};

describe("lowrank train on a Llama-family chat model", () => {
  it("takes chat JSONL with the model's chat template, puts the loss on the assistant turns only, and adapts PEFT's default targets", async () => {
    const out = join(ws.dir, "run-chat");
    const r = await runCli(ws.main, ["train", "--model", model, "--data", chat, "--out", out, "--steps", "3", "--eval-split", "0", "--json"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain(`data: chat records ({"messages"}), the loss on the assistant turns`);
    expect(r.stderr).toContain(`chat template: ${join(model, "chat_template.jinja")} (shipped with the model; --chat-template to use another)`);
    expect(r.stderr).not.toContain("prompt template");
    const summary = JSON.parse(r.stdout) as { steps: number; data: { format: string; train: { examples: number; tokens: number; lossTokens: number } } };
    expect(summary.steps).toBe(3);
    // Each assistant turn is "ok<|im_end|>\n" in ChatML: its tokens, counted here from the answer
    // text alone, are the only labelled ones.
    const perTurn = tok.encode("ok", { addSpecialTokens: false }).length + tok.encode("<|im_end|>\n", { addSpecialTokens: false }).length;
    expect(summary.data).toMatchObject({ format: "chat", train: { examples: 24, lossTokens: 24 * perTurn } });
    const rendered = chatLines(24).trim().split("\n").reduce((n, line) => n + tok.applyChatTemplate(JSON.parse(line).messages, { tokenize: true }).length, 0);
    expect(summary.data.train.tokens).toBe(rendered);
    // PEFT's default for qwen3 (no --target), on nn.Linear (no fan_in_fan_out)
    const config = JSON.parse(readFileSync(join(out, "adapter_config.json"), "utf8")) as { target_modules: string[]; fan_in_fan_out: boolean; base_model_name_or_path: string };
    expect([...config.target_modules].sort()).toEqual(["q_proj", "v_proj"]);
    expect(config.fan_in_fan_out).toBe(false);
    expect(config.base_model_name_or_path).toBe(model);
  }, 120_000);

  it("takes --chat-template FILE instead of the model's, and says so", async () => {
    const file = join(ws.dir, "other.jinja");
    writeFileSync(file, "{% for m in messages %}[{{ m.role }}] {{ m.content }}{% if m.role == 'assistant' %}<|im_end|>{% endif %}\n{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}");
    const out = join(ws.dir, "run-other-template");
    const r = await runCli(ws.main, ["train", "--model", model, "--data", chat, "--out", out, "--steps", "1", "--eval-split", "0", "--chat-template", file, "--json"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain(`chat template: ${file} (--chat-template)`);
    // the answer is now "ok<|im_end|>" (no newline after it): one token fewer per turn than with ChatML
    const perTurn = tok.encode("ok", { addSpecialTokens: false }).length + 1;
    expect((JSON.parse(r.stdout) as { data: { train: { lossTokens: number } } }).data.train.lossTokens).toBe(24 * perTurn);

    // a model folder without a chat template (a base model) takes chat data only with --chat-template
    const bare = join(ws.dir, "no-template-model");
    cpSync(model, bare, { recursive: true, filter: (src) => !src.endsWith("chat_template.jinja") });
    const refused = await runCli(ws.main, ["train", "--model", bare, "--data", chat, "--out", join(ws.dir, "run-bare"), "--steps", "1"]);
    expect(refused.code).toBe(2);
    expect(refused.stderr.split("\n")[0]).toBe(
      `lowrank train: ${chat} holds chat records ({"messages"}) but the tokenizer in ${bare} has no chat template (no chat_template.jinja, ` +
        "no chat_template in tokenizer_config.json: a base model rather than an instruct/chat one); give a template with --chat-template, or use the instruct model",
    );
    const given = await runCli(ws.main, ["train", "--model", bare, "--data", chat, "--out", join(ws.dir, "run-bare-given"), "--steps", "1", "--eval-split", "0", "--chat-template", file]);
    expect(given.code, given.stderr).toBe(0);

    const missing = await runCli(ws.main, ["train", "--model", model, "--data", chat, "--out", join(ws.dir, "x"), "--chat-template", join(ws.dir, "none.jinja")]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain(`lowrank train: --chat-template ${join(ws.dir, "none.jinja")}: no such file`);
  }, 120_000);

  it("sweep trains one chat adapter per rank and counts the model's parameters from its config", async () => {
    const out = join(ws.dir, "sweep");
    const r = await runCli(ws.main, ["sweep", "--model", model, "--data", chat, "--out", out, "--ranks", "1,2", "--steps", "1", "--eval-split", "0", "--quiet"]);
    expect(r.code, r.stderr).toBe(0);
    const summary = JSON.parse(readFileSync(join(out, "summary.json"), "utf8")) as { results: { r: number; trainable: number }[] };
    // q_proj (32 -> 64) and v_proj (32 -> 32) in 2 layers: r·(96 + 64) per layer
    expect(summary.results.map((x) => [x.r, x.trainable])).toEqual([[1, 2 * 160], [2, 2 * 2 * 160]]);
    expect(r.stdout).toMatch(/^1 +32 +320 /m); // the table: r, alpha (the default 32), trainable
  }, 120_000);

  it("takes prompt/completion JSONL and says which form it read", async () => {
    const data = join(ws.dir, "pc.jsonl");
    writeFileSync(data, Array.from({ length: 8 }, (_, i) => JSON.stringify({ prompt: `Say ${WORDS[i]}: `, completion: WORDS[i] })).join("\n") + "\n");
    const r = await runCli(ws.main, ["train", "--model", model, "--data", data, "--out", join(ws.dir, "run-pc"), "--steps", "1", "--eval-split", "0", "--json"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain(`data: prompt/completion records ({"prompt", "completion"}), the loss on the completion and EOS`);
    expect((JSON.parse(r.stdout) as { data: { format: string } }).data.format).toBe("prompt-completion");
  }, 120_000);
});

describe("lowrank generate on a Llama-family chat model", () => {
  it("renders the prompt as a user message with the chat template and decodes greedily as transformers does", async () => {
    const out = await generateJson(["--model", model, "--prompt", reference.prompt[0]!.content, "--max-new-tokens", String(reference.greedy_new_ids.length)]);
    expect(out.chatTemplate).toBe(join(model, "chat_template.jinja"));
    expect(out.promptText).toBe(reference.prompt_text);
    expect(out.promptTokenIds).toEqual(reference.prompt_ids);
    expect(out.tokenIds).toEqual(reference.greedy_new_ids);
  }, 60_000);

  it("--no-chat-template gives the bare prompt", async () => {
    const out = await generateJson(["--model", model, "--prompt", "rocket,pan", "--max-new-tokens", "2", "--no-chat-template"]);
    expect(out.chatTemplate).toBeNull();
    expect(out.promptTokenIds).toEqual(tok.encode("rocket,pan"));
  }, 60_000);

  it("with the trained adapter, answers and stops at the end-of-turn token, which the text leaves out", async () => {
    const out = await generateJson(["--model", model, "--adapter", adapter, "--prompt", "Check the list moon,net,rat", "--max-new-tokens", "20"]);
    expect(out.stopReason).toBe("eos");
    expect(reference.eos_token_ids).toContain(out.tokenIds.at(-1));
    expect(out.text).toBe("ok");
    // streamed, the same text
    const streamed = await runCli(ws.main, ["generate", "--model", model, "--adapter", adapter, "--prompt", "Check the list moon,net,rat", "--max-new-tokens", "20"]);
    expect(streamed.code, streamed.stderr).toBe(0);
    expect(streamed.stdout).toBe("ok\n");
    expect(streamed.stderr).toContain(`chat template: ${join(model, "chat_template.jinja")}`);
  }, 60_000);
});

describe("lowrank merge on a Llama-family model", () => {
  it("writes a folder (weights, config, tokenizer and chat template) that generates what base + adapter generate", async () => {
    const merged = join(ws.dir, "merged");
    const r = await runCli(ws.main, ["merge", "--model", model, "--adapter", adapter, "--out", merged]);
    expect(r.code, r.stderr).toBe(0);
    for (const f of ["model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"]) {
      expect(existsSync(join(merged, f)), f).toBe(true);
    }
    expect((JSON.parse(readFileSync(join(merged, "config.json"), "utf8")) as { model_type: string }).model_type).toBe("qwen3");
    for (const prompt of ["Check the list moon,net,rat", "Write a poem about the sea"]) {
      const withAdapter = await generateJson(["--model", model, "--adapter", adapter, "--prompt", prompt, "--max-new-tokens", "12"]);
      const fromMerged = await generateJson(["--model", merged, "--prompt", prompt, "--max-new-tokens", "12"]);
      expect(fromMerged.promptTokenIds).toEqual(withAdapter.promptTokenIds);
      expect(fromMerged.tokenIds).toEqual(withAdapter.tokenIds);
    }
  }, 120_000);
});

describe("a model named as in the Hugging Face cache", () => {
  it("generate and train --model owner/name read the snapshot refs/main points at; a name not there says where it looked", async () => {
    const cache = join(ws.dir, "hf-cache");
    const hash = "0123456789abcdef0123456789abcdef01234567";
    const repo = join(cache, "models--lowrank--chat-tiny");
    mkdirSync(join(repo, "refs"), { recursive: true });
    writeFileSync(join(repo, "refs", "main"), hash);
    cpSync(model, join(repo, "snapshots", hash), { recursive: true });
    const out = await generateJson(["--model", "lowrank/chat-tiny", "--prompt", reference.prompt[0]!.content, "--max-new-tokens", "3"], { HF_HUB_CACHE: cache });
    expect(out.tokenIds).toEqual(reference.greedy_new_ids.slice(0, 3));

    // trained by name: adapter_config.json records the name, as PEFT does
    const run = join(ws.dir, "run-by-name");
    const trained = await runCli(ws.main, ["train", "--model", "lowrank/chat-tiny", "--data", chat, "--out", run, "--steps", "1", "--eval-split", "0", "--quiet"], { HF_HUB_CACHE: cache });
    expect(trained.code, trained.stderr).toBe(0);
    expect((JSON.parse(readFileSync(join(run, "adapter_config.json"), "utf8")) as { base_model_name_or_path: string }).base_model_name_or_path).toBe("lowrank/chat-tiny");

    const r = await runCli(ws.main, ["generate", "--model", "lowrank/not-there", "--prompt", "hi"], { HF_HUB_CACHE: cache });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`lowrank generate: --model: lowrank/not-there is neither a folder`);
    expect(r.stderr).toContain(join(cache, "models--lowrank--not-there"));
    rmSync(cache, { recursive: true, force: true });
  }, 60_000);
});
