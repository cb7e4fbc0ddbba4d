"""PyTorch + PEFT side of the CPU LoRA training benchmark (bench only; not a lowrank dependency).

  python torch_train.py make  DIR [--seq 256] [--batch 1] [--seed 0] [--arch gpt2|smollm2-135m]
      writes a random-init model with save_pretrained into DIR (config.json + model.safetensors):
      GPT-2 124M (transformers' GPT2Config() defaults), or SmolLM2-135M's shapes (its published
      config.json values, a LlamaForCausalLM); and DIR/ids.json: one batch of random token ids
      that both sides train on (labels = ids), shape [batch, seq].
  python torch_train.py bench DIR [--threads 2] [--warmup 3] [--steps 10] [--lora-dropout 0.05]
                                  [--device cpu|cuda] [--precision fp32|bf16|bf16-compile]
      loads DIR, wraps it with PEFT LoRA (r=16, alpha=32; GPT-2: c_attn + c_proj, Llama family:
      "all-linear", every attention and MLP projection), AdamW lr 1e-4, train
      mode, and times forward + backward + optimizer.step() + zero_grad() per step. Prints one JSON
      line (prefix "RESULT ") with the per-step times. On CUDA, bf16 is autocast (float32 weights,
      bf16 GEMMs and attention, as PEFT users run it); bf16-compile adds torch.compile of the model.
      The step ends with loss.item(), which waits for the GPU, on both sides.
"""
import argparse
import json
import os
import statistics
import sys
import time


def make(args):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(args.seed)
    if args.arch == "gpt2":
        model = GPT2LMHeadModel(GPT2Config())
    else:  # https://huggingface.co/HuggingFaceTB/SmolLM2-135M/blob/main/config.json (lib/models/llama/shapes.ts)
        model = LlamaForCausalLM(LlamaConfig(
            vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
            num_key_value_heads=3, max_position_embeddings=8192, rope_theta=100000.0, rms_norm_eps=1e-5,
            tie_word_embeddings=True, bos_token_id=0, eos_token_id=0))
    model.save_pretrained(args.dir, safe_serialization=True)
    g = torch.Generator().manual_seed(args.seed + 1)
    ids = torch.randint(0, model.config.vocab_size, (args.batch, args.seq), generator=g)
    with open(os.path.join(args.dir, "ids.json"), "w") as f:
        json.dump(ids.tolist(), f)
    print(f"wrote {args.dir}: {args.arch} {sum(p.numel() for p in model.parameters()):,} params, ids {list(ids.shape)}")


def bench(args):
    import torch

    torch.set_num_threads(args.threads)
    import peft
    import transformers
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(args.dir, torch_dtype=torch.float32)
    gpt2 = model.config.model_type == "gpt2"
    cfg = LoraConfig(task_type="CAUSAL_LM", r=16, lora_alpha=32, lora_dropout=args.lora_dropout,
                     target_modules=["c_attn", "c_proj"] if gpt2 else "all-linear", fan_in_fan_out=gpt2, bias="none")
    model = get_peft_model(model, cfg).to(args.device)
    model.train()  # GPT-2's own dropout (embd/attn/resid 0.1) and the LoRA dropout are active
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-4)  # weight_decay 0.01 (torch's default; lowrank's too)
    with open(os.path.join(args.dir, "ids.json")) as f:
        ids = torch.tensor(json.load(f), dtype=torch.long, device=args.device)
    forward = torch.compile(model) if args.precision == "bf16-compile" else model
    autocast = torch.autocast(args.device, dtype=torch.bfloat16, enabled=args.precision != "fp32")
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()

    times, losses = [], []
    for step in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        with autocast:
            out = forward(input_ids=ids, labels=ids)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss = out.loss.item()
        t1 = time.perf_counter()
        losses.append(loss)
        if step >= args.warmup:
            times.append(t1 - t0)
    ms = statistics.median(times) * 1e3
    tokens = ids.numel()
    print("RESULT " + json.dumps({
        "impl": "pytorch+peft",
        "model_type": model.config.model_type,
        "tokens": tokens,
        "ms_per_step": ms,
        "tokens_per_s": tokens / (ms / 1e3),
        "step_ms": [t * 1e3 for t in times],
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "threads": torch.get_num_threads(),
        "lora_dropout": args.lora_dropout,
        "device": args.device,
        "precision": args.precision,
        "peak_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "trainable": sum(p.numel() for p in trainable),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
                     "python": sys.version.split()[0]},
        "blas": "mkl" if torch.backends.mkl.is_available() else "other",
        "mkldnn": torch.backends.mkldnn.is_available(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("dir")
    m.add_argument("--seq", type=int, default=256)
    m.add_argument("--batch", type=int, default=1)
    m.add_argument("--arch", choices=["gpt2", "smollm2-135m"], default="gpt2")
    m.add_argument("--seed", type=int, default=0)
    b = sub.add_parser("bench")
    b.add_argument("dir")
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--warmup", type=int, default=3)
    b.add_argument("--steps", type=int, default=10)
    b.add_argument("--lora-dropout", type=float, default=0.05)
    b.add_argument("--device", default="cpu")
    b.add_argument("--precision", choices=["fp32", "bf16", "bf16-compile"], default="fp32")
    args = ap.parse_args()
    {"make": make, "bench": bench}[args.cmd](args)


if __name__ == "__main__":
    main()
