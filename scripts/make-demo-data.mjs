#!/usr/bin/env node
// Writes the demo's instruction data, deterministically from a seed:
//
//   data/demo/train.jsonl  1000 examples of the task the demo's LoRA adapter learns:
//                          "Move the first word to the end." + input "net,button,moon"
//                          -> "button,moon,net"
//   data/demo/eval.jsonl   100 more, none of whose word lists occurs in train.jsonl
//   data/demo/base.jsonl   10000 examples of four other list tasks (copy, first word, last word,
//                          repeat twice) for making the small base model, which must know the
//                          words, the lists and the prompt format, and must not know the task
//   data/demo/chat.jsonl   60 chat conversations ({"messages"}) asking for the first 60 lists of
//                          train.jsonl in capital letters, a quarter with a system message: the
//                          README's chat fine-tune of a Llama-family model
//
// Why this task (data/demo/README.md has the measurements): the answer is made only of words
// from the input, so it is learned by routing information between positions (attention and the
// projections LoRA adapts) rather than by storing new facts; a LoRA run of 300 steps learned it
// where reversing the list needed about 800. Every word is one GPT-2 token alone and after a
// space, and the lists have no spaces, so a word is the same tokens in the input and in the
// answer under any byte-level BPE. Right or wrong is plain to see in a before/after print.
//
// Usage: node scripts/make-demo-data.mjs [--out DIR] [--seed N]
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";

const { values } = parseArgs({ options: { out: { type: "string", default: "data/demo" }, seed: { type: "string", default: "1234" } } });
const seed = Number(values.seed);
if (!Number.isSafeInteger(seed) || seed < 0) throw new Error(`make-demo-data: --seed must be a non-negative integer, got ${values.seed}`);

// Short common nouns that GPT-2's tokenizer encodes as one token both alone and after a space.
const WORDS = (
  "apple river stone cloud window silver forest bread horse rocket castle dragon paper tower button circle " +
  "cookie doctor engine finger flower hammer letter market monkey orange planet pocket school shadow spring " +
  "street table ticket wallet winter yellow red cat moon sun tree fish bird rock star rain wind fire leaf ship " +
  "road king gold blue green door book ball bell boat bone cake card coat corn cow dog egg fan farm fork frog " +
  "game girl hat hill home horn ice ink jam key lake map mouse net nut owl pan park pen pin pot ring rose sand " +
  "seed sky toe train wall water wheel wing wolf wood yard box bag bus car cup hand head sea oil bee ant bear " +
  "fox hen ox rat bat jar mat"
).split(" ");

/** mulberry32: a tiny seeded PRNG; this script runs without the library's build, so it has its own. */
function random(s) {
  let a = s >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** n distinct words. */
function pick(rand, n) {
  const pool = [...WORDS];
  return Array.from({ length: n }, () => pool.splice(Math.floor(rand() * pool.length), 1)[0]);
}

const TASK = "Move the first word to the end.";
const BASE_TASKS = [
  ["Copy the words.", (w) => w.join(",")],
  ["Give the first word.", (w) => w[0]],
  ["Give the last word.", (w) => w[w.length - 1]],
  ["Repeat the list twice.", (w) => [...w, ...w].join(",")],
];

/** `count` task examples over 3-word lists not in `taken` (which grows). */
function taskExamples(rand, count, taken) {
  const out = [];
  while (out.length < count) {
    const words = pick(rand, 3);
    const input = words.join(",");
    if (taken.has(input)) continue;
    taken.add(input);
    out.push({ instruction: TASK, input, output: [...words.slice(1), words[0]].join(",") });
  }
  return out;
}

function baseExamples(rand, count) {
  return Array.from({ length: count }, () => {
    const words = pick(rand, 2 + Math.floor(rand() * 4));
    const [instruction, answer] = BASE_TASKS[Math.floor(rand() * BASE_TASKS.length)];
    return { instruction, input: words.join(","), output: answer(words) };
  });
}

/** Conversations that ask for each list of `rows` in capitals (the first of every four with a system message). */
function chatExamples(rows) {
  return rows.map((r, i) => ({
    messages: [
      ...(i % 4 === 0 ? [{ role: "system", content: "You are a careful assistant. Answer with the list only." }] : []),
      { role: "user", content: `Write these words in capital letters: ${r.input}` },
      { role: "assistant", content: r.input.toUpperCase() },
    ],
  }));
}

const jsonl = (rows) => rows.map((r) => JSON.stringify(r)).join("\n") + "\n";
const taken = new Set();
const train = taskExamples(random(seed), 1000, taken);
const files = {
  "train.jsonl": train,
  "eval.jsonl": taskExamples(random(seed + 1), 100, taken),
  "base.jsonl": baseExamples(random(seed + 2), 10000),
  "chat.jsonl": chatExamples(train.slice(0, 60)),
};
mkdirSync(values.out, { recursive: true });
for (const [name, rows] of Object.entries(files)) {
  writeFileSync(join(values.out, name), jsonl(rows));
  console.log(`${join(values.out, name)}: ${rows.length} examples`);
}
