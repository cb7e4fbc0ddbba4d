#!/usr/bin/env python3
"""Reference run of the demo recipe with PyTorch, transformers and PEFT (not part of the package).

It shows that the demo data does what the demo needs, and gives numbers to compare the Node
implementation with:
  1. makes a small base model: a randomly initialized GPT-2 (4 layers, 128 wide, GPT-2's
     vocabulary) fully trained on base.jsonl (copy / first word / last word / repeat twice),
     gradients clipped to norm 1;
  2. greedy answers on eval.jsonl before LoRA ("Move the first word to the end.": never seen);
  3. LoRA (r=8, alpha=16, c_attn/c_proj/c_fc) on train.jsonl, base frozen;
  4. greedy answers on eval.jsonl after LoRA, exact-match accuracy.

    python3 data/demo/check_learnable.py [--device cuda] [--lora-steps 300] [--seed 0]

The prompt is the short template below (the full Alpaca preamble would triple the prompt length
of these tiny examples); the loss covers the response and its EOS only, as lib/train/data.ts does.
"""
import argparse
import json
import time

import torch
from peft import LoraConfig, get_peft_model
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel

TEMPLATE = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
EOS = 50256


def gpt2_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE.from_file("test/fixtures/gpt2-tokenizer/vocab.json", "test/fixtures/gpt2-tokenizer/merges.txt"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def encode(tok, ex):
    prompt = tok.encode(TEMPLATE.format(**ex)).ids
    response = tok.encode(ex["output"]).ids + [EOS]
    return prompt + response, [-100] * len(prompt) + response


def train(model, params, examples, steps, lr, batch_size, device, generator):
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    warmup = 20
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, 1 - s / steps))
    model.train()
    for step in range(steps):
        idx = torch.randint(len(examples), (batch_size,), generator=generator).tolist()
        batch = [examples[i] for i in idx]
        width = max(len(ids) for ids, _ in batch)
        ids = torch.tensor([x + [EOS] * (width - len(x)) for x, _ in batch], device=device)
        labels = torch.tensor([y + [-100] * (width - len(y)) for _, y in batch], device=device)
        mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x, _ in batch], device=device)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
    return loss.item()


@torch.no_grad()
def evaluate(model, tok, examples, device, show=3):
    model.eval()
    correct = 0
    for i, ex in enumerate(examples):
        prompt = tok.encode(TEMPLATE.format(**ex)).ids
        out = model.generate(input_ids=torch.tensor([prompt], device=device), max_new_tokens=16, do_sample=False,
                             pad_token_id=EOS, eos_token_id=EOS)
        answer = tok.decode([t for t in out[0, len(prompt):].tolist() if t != EOS])
        correct += answer == ex["output"]
        if i < show:
            print(f"    {ex['input']:>28} -> {answer!r} (expected {ex['output']!r})")
    return correct / len(examples)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--base-steps", type=int, default=3000)
    ap.add_argument("--lora-steps", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    tok = gpt2_tokenizer()
    base, train_set, eval_set = (load(f"data/demo/{n}.jsonl") for n in ("base", "train", "eval"))

    config = GPT2Config(n_layer=4, n_embd=128, n_head=4, n_positions=128, vocab_size=50257,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(config).to(args.device)
    t0 = time.time()
    loss = train(model, list(model.parameters()), [encode(tok, e) for e in base], args.base_steps, 1e-3, 32, args.device, gen)
    print(f"base: {args.base_steps} full steps, loss {loss:.4f}, {time.time() - t0:.0f} s")
    print(f"base tasks: accuracy {evaluate(model, tok, base[:100], args.device):.2f}")
    print(f"before LoRA: accuracy {evaluate(model, tok, eval_set, args.device):.2f}")

    for p in model.parameters():
        p.requires_grad_(False)
    peft = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, fan_in_fan_out=True,
                                            target_modules=["c_attn", "c_proj", "c_fc"]))
    peft.print_trainable_parameters()
    t0 = time.time()
    params = [p for p in peft.parameters() if p.requires_grad]
    loss = train(peft, params, [encode(tok, e) for e in train_set], args.lora_steps, 2e-3, 16, args.device, gen)
    print(f"LoRA: {args.lora_steps} steps, loss {loss:.4f}, {time.time() - t0:.0f} s")
    print(f"after LoRA: accuracy {evaluate(peft, tok, eval_set, args.device):.2f}")


if __name__ == "__main__":
    main()
