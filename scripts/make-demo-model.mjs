#!/usr/bin/env node
// Makes the demo's small base model, data/demo/model/, with lowrank itself. Run `npm run build`
// first: the script imports the built package ("lowrank" resolves to dist/ through package.json).
//
//   1. A tiny byte-level BPE vocabulary trained on the demo corpus (base.jsonl, train.jsonl and
//      the prompt template): GPT-2's conventions (the bytes-to-unicode alphabet and GPT-2's
//      pre-tokenizer, both taken from lowrank's tokenizer), 256 byte tokens + the merges +
//      <|endoftext|>, written as vocab.json + merges.txt. GPT2Tokenizer must round-trip every line
//      of base/train/eval.jsonl, and every list word must come out as one token.
//   2. A GPT-2 (4 layers, 128 wide, 4 heads, 128 positions, the tiny vocabulary) initialized as
//      transformers initializes GPT-2, fully trained (every parameter, no LoRA) on base.jsonl
//      (four list tasks; the demo's task is not among them) with the Trainer (AdamW, warmup, linear
//      decay, clipping). Then greedy exact match on a held-out slice of base.jsonl (the base tasks
//      must be answered well) and on eval.jsonl (the demo task must NOT be solved: ~0%).
//   3. config.json + model.safetensors + the tokenizer files + README.md (how it was made and
//      what was measured) in the output folder.
//
// Everything is drawn from --seed, so the same seed and step count give the same model.
//
//   npm run build && LOWRANK_NUM_THREADS=2 node scripts/make-demo-model.mjs [--out data/demo/model]
//       [--seed 0] [--steps 3000] [--batch-size 32] [--lr 1e-3] [--merges 1000] [--held-out 400]
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import {
  BYTE_SYMBOLS, byteLevelWords, copyInto, DataLoader, formatPrompt, generate, Generator, GPT2Config, GPT2LMHeadModel, GPT2Tokenizer,
  info, noGrad, randn, readJsonl, resolveTemplate, splitTrainEval, tokenizeRecords, Trainer,
} from "lowrank";

const { values: flags } = parseArgs({
  options: {
    out: { type: "string", default: "data/demo/model" },
    data: { type: "string", default: "data/demo" },
    seed: { type: "string", default: "0" },
    steps: { type: "string", default: "3000" },
    "batch-size": { type: "string", default: "32" },
    lr: { type: "string", default: "1e-3" },
    merges: { type: "string", default: "1000" },
    "held-out": { type: "string", default: "400" },
  },
});
const int = (name) => {
  const n = Number(flags[name]);
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`make-demo-model: --${name} must be a non-negative integer, got ${flags[name]}`);
  return n;
};
const seed = int("seed"), steps = int("steps"), batchSize = int("batch-size"), maxMerges = int("merges"), heldOut = int("held-out");
const lr = Number(flags.lr);
const out = flags.out;
const dataDir = flags.data;

/** The demo's prompt template (data/demo/README.md): short, so the examples are short. */
const DEMO_TEMPLATE = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n";
const EOS = "<|endoftext|>";
const started = performance.now();
const seconds = () => ((performance.now() - started) / 1000).toFixed(0);
const log = (line) => console.log(`[${seconds()} s] ${line}`);

// ---- 1. the tokenizer ---------------------------------------------------------------------------

/**
 * Greedy byte-level BPE training: words (pre-tokenized, in the byte alphabet) with their counts;
 * repeatedly merge the most frequent adjacent pair (ties: the pair whose joined text sorts first,
 * then the left part) in every word, until no pair occurs `minCount` times or `maxMerges` merges.
 */
function trainBpe(wordCounts, maxMerges, minCount = 2) {
  const words = [...wordCounts].map(([w, count]) => ({ parts: [...w], count }));
  const merges = [];
  while (merges.length < maxMerges) {
    const pairs = new Map();
    for (const { parts, count } of words) {
      for (let i = 0; i + 1 < parts.length; i++) {
        const key = parts[i] + " " + parts[i + 1];
        pairs.set(key, (pairs.get(key) ?? 0) + count);
      }
    }
    let best = null, bestCount = 0;
    for (const [key, count] of pairs) {
      if (count > bestCount || (count === bestCount && key < best)) [best, bestCount] = [key, count];
    }
    if (best === null || bestCount < minCount) break;
    const [left, right] = best.split(" ");
    merges.push([left, right]);
    for (const w of words) {
      const merged = [];
      for (let i = 0; i < w.parts.length; i++) {
        if (w.parts[i] === left && w.parts[i + 1] === right) {
          merged.push(left + right);
          i++;
        } else {
          merged.push(w.parts[i]);
        }
      }
      w.parts = merged;
    }
  }
  return merges;
}

const template = resolveTemplate(DEMO_TEMPLATE);
const read = async (name) => (await readJsonl(join(dataDir, name))).examples;
const [base, train, evalSet] = [await read("base.jsonl"), await read("train.jsonl"), await read("eval.jsonl")];
const fullText = (r) => formatPrompt(template, r.instruction, r.input) + r.output;

const wordCounts = new Map();
for (const r of [...base, ...train]) {
  for (const w of byteLevelWords(fullText(r))) wordCounts.set(w, (wordCounts.get(w) ?? 0) + 1);
}
const merges = trainBpe(wordCounts, maxMerges);
// GPT-2's id order: the 256 byte symbols sorted by code point (printable bytes first), the merges, then EOS.
const vocab = new Map([...BYTE_SYMBOLS].sort((a, b) => a.codePointAt(0) - b.codePointAt(0)).map((s, i) => [s, i]));
for (const [l, r] of merges) vocab.set(l + r, vocab.size);
vocab.set(EOS, vocab.size);
mkdirSync(out, { recursive: true });
writeFileSync(join(out, "vocab.json"), JSON.stringify(Object.fromEntries(vocab)) + "\n");
writeFileSync(join(out, "merges.txt"), ["#version: 0.2", ...merges.map(([l, r]) => `${l} ${r}`)].join("\n") + "\n");

const tokenizer = GPT2Tokenizer.fromPretrained(out);
const allRecords = [...base, ...train, ...evalSet];
let maxTokens = 0;
for (const r of allRecords) {
  for (const text of [formatPrompt(template, r.instruction, r.input), r.output]) {
    const ids = tokenizer.encode(text);
    if (tokenizer.decode(ids) !== text) throw new Error(`make-demo-model: the tokenizer does not round-trip ${JSON.stringify(text)}`);
  }
  maxTokens = Math.max(maxTokens, tokenizer.encode(formatPrompt(template, r.instruction, r.input)).length + tokenizer.encode(r.output).length + 1);
}
const listWords = [...new Set(allRecords.flatMap((r) => r.input.split(",")))].sort();
const split = listWords.filter((w) => tokenizer.encode(w).length !== 1);
if (split.length > 0) throw new Error(`make-demo-model: list words that are not one token: ${split.join(", ")}; raise --merges`);
const promptTokens = tokenizer.encode(formatPrompt(template, train[0].instruction, train[0].input)).length;
log(
  `tokenizer: ${merges.length} merges, ${tokenizer.vocabSize} ids; round-trips all ${allRecords.length} demo lines; ` +
    `all ${listWords.length} list words are one token; longest example ${maxTokens} tokens, demo prompt ${promptTokens} tokens`,
);

// ---- 2. the base model --------------------------------------------------------------------------

const config = new GPT2Config({
  vocabSize: tokenizer.vocabSize, nPositions: 128, nEmbd: 128, nLayer: 4, nHead: 4,
  residPdrop: 0, embdPdrop: 0, attnPdrop: 0,
  bosTokenId: tokenizer.eosTokenId, eosTokenId: tokenizer.eosTokenId,
});
const generator = new Generator(seed);
const model = new GPT2LMHeadModel(config, { device: "cpu", generator });
// The constructor already initializes as transformers' GPT-2 (every weight N(0, 0.02), embeddings
// included, c_proj N(0, 0.02 / sqrt(2 · n_layer))). These draws of the same distributions come from
// the time it did not: they are kept so that the same seed still gives the committed
// data/demo/model bit for bit (they move the random stream on).
noGrad(() => {
  for (const [name, p] of model.namedParameters()) {
    const std = /\.(wte|wpe)\.weight$/.test(name) ? config.initializerRange
      : /\.c_proj\.weight$/.test(name) ? config.initializerRange / Math.sqrt(2 * config.nLayer) : null;
    if (std === null) continue;
    const fresh = randn(p.shape, { std, generator });
    copyInto(p, fresh);
    fresh.dispose();
  }
});

const { train: baseTrain, eval: baseHeld } = splitTrainEval(base, { evalCount: heldOut, seed });
const tokenized = tokenizeRecords(join(dataDir, "base.jsonl"), baseTrain, tokenizer, { template: DEMO_TEMPLATE, maxLength: config.nPositions });
const warmupSteps = Math.min(100, Math.ceil(steps / 20));
const trainer = new Trainer({
  model,
  trainData: new DataLoader(tokenized.examples, { batchSize, tokenizer, seed, device: "cpu" }),
  maxSteps: steps, lr, warmupSteps, schedule: "linear", weightDecay: 0, maxGradNorm: 1,
  progress: { mode: "plain", logEvery: 100 },
});
const nParams = model.parameters().reduce((n, p) => n + p.size, 0);
log(`base model: ${nParams.toLocaleString("en-US")} parameters, all trained; ${baseTrain.length} examples (${baseHeld.length} held out), ${steps} steps of batch ${batchSize}, lr ${lr}, ${info().threads} threads`);
const trainStart = performance.now();
const result = await trainer.train();
const trainSeconds = (performance.now() - trainStart) / 1000;
trainer.dispose();
const finalLoss = result.history.slice(-50).reduce((s, r) => s + (r.loss ?? 0), 0) / Math.min(50, result.history.length);
log(`trained ${result.step} steps in ${trainSeconds.toFixed(0)} s; mean loss of the last 50 steps ${finalLoss.toFixed(4)}`);

/** Greedy answer (EOS stripped) of the model to one record's prompt. */
function answer(r) {
  const ids = tokenizer.encode(formatPrompt(template, r.instruction, r.input));
  const outIds = generate(model, ids, { maxNewTokens: 24, eosTokenId: tokenizer.eosTokenId });
  return tokenizer.decode(outIds.filter((t) => t !== tokenizer.eosTokenId));
}

/** Exact-match accuracy per instruction, with a few examples. */
function exactMatch(records) {
  const by = new Map();
  const samples = [];
  for (const r of records) {
    const got = answer(r);
    const s = by.get(r.instruction) ?? { right: 0, total: 0 };
    s.total++;
    if (got === r.output) s.right++;
    by.set(r.instruction, s);
    if (samples.length < 3) samples.push(`${r.input} -> ${JSON.stringify(got)} (expected ${JSON.stringify(r.output)})`);
  }
  const right = [...by.values()].reduce((n, s) => n + s.right, 0);
  return { right, total: records.length, by, samples };
}
const pct = (right, total) => `${((100 * right) / total).toFixed(1)}% (${right}/${total})`;

const baseScore = exactMatch(baseHeld);
log(`held-out base tasks: ${pct(baseScore.right, baseScore.total)}`);
for (const [task, s] of baseScore.by) log(`  ${task.padEnd(24)} ${pct(s.right, s.total)}`);
const demoScore = exactMatch(evalSet);
log(`demo task (eval.jsonl, never trained on): ${pct(demoScore.right, demoScore.total)}`);
for (const s of demoScore.samples) log(`  ${s}`);

model.savePretrainedSync(out);
const command = `LOWRANK_NUM_THREADS=2 node scripts/make-demo-model.mjs --out ${out} --seed ${seed} --steps ${steps} --batch-size ${batchSize} --lr ${flags.lr} --merges ${maxMerges} --held-out ${heldOut}`;
const readme = `# The demo's base model

A small GPT-2 made by \`scripts/make-demo-model.mjs\` with lowrank itself, so that \`npm run demo\`
has a base model to adapt without downloading anything. Hugging Face layout: \`config.json\`,
\`model.safetensors\` (float32), \`vocab.json\` + \`merges.txt\` (byte-level BPE, GPT-2's conventions), and
\`template.txt\`, the prompt template it was trained with (for \`lowrank generate --template\`).

Made with (after \`npm run build\`; ${info().threads} CPU threads, ${info().simd} kernels, ${trainSeconds.toFixed(0)} s of training):

\`\`\`sh
${command}
\`\`\`

The same seed and settings write the same bytes (two runs of the script with \`--steps 20\` gave identical
files) on the same CPU kernels; another SIMD level or thread count may round differently.

## Tokenizer

Trained by the script on \`base.jsonl\` + \`train.jsonl\` in the demo's prompt template
(\`${JSON.stringify(DEMO_TEMPLATE).slice(1, -1)}\`): GPT-2's pre-tokenizer and byte alphabet,
a greedy BPE (the most frequent adjacent pair within words merged first, until no pair occurs twice
or ${maxMerges} merges), ${merges.length} merges, ${tokenizer.vocabSize} ids (256 bytes + merges +
\`<|endoftext|>\`, id ${tokenizer.eosTokenId}). It round-trips every line of \`base.jsonl\`, \`train.jsonl\`
and \`eval.jsonl\`; each of the ${listWords.length} list words is one token; a demo example is
${promptTokens} prompt tokens + the answer + EOS, the longest base example ${maxTokens} tokens.

## Model

GPT-2 architecture: ${config.nLayer} layers, ${config.nEmbd} wide, ${config.nHead} heads, ${config.nPositions} positions,
vocabulary ${config.vocabSize}, no dropout; ${nParams.toLocaleString("en-US")} parameters. Initialized as transformers
initializes GPT-2 (N(0, 0.02), \`c_proj\` N(0, 0.02/sqrt(2·n_layer))) from seed ${seed}, then every
parameter trained (full training, not LoRA) with lowrank's Trainer on \`base.jsonl\` (four list
tasks: copy, first word, last word, repeat twice) less ${baseHeld.length} held-out examples:
${steps} steps of batch ${batchSize}, AdamW lr ${lr} (weight decay 0), linear warmup over the first ${warmupSteps} steps then linear decay to 0,
gradients clipped to norm 1; the loss is on the response and its EOS only. Mean loss over the last
50 steps: ${finalLoss.toFixed(4)}.

## Measured (greedy decoding, exact match of the whole answer)

| data | exact match |
| --- | --- |
| held-out base examples (${baseHeld.length}) | ${pct(baseScore.right, baseScore.total)} |
${[...baseScore.by].map(([task, s]) => `| … "${task}" | ${pct(s.right, s.total)} |`).join("\n")}
| demo task, \`eval.jsonl\` ("Move the first word to the end.", never trained) | ${pct(demoScore.right, demoScore.total)} |

Answers to the demo task before any adapter:

\`\`\`
${demoScore.samples.join("\n")}
\`\`\`

The demo (\`npm run demo\`) trains a LoRA adapter on \`train.jsonl\` over this frozen model.
`;
writeFileSync(join(out, "template.txt"), DEMO_TEMPLATE); // for `lowrank generate --template`
writeFileSync(join(out, "README.md"), readme);
log(`wrote ${out}: config.json, model.safetensors, vocab.json, merges.txt, template.txt, README.md`);
model.dispose();
