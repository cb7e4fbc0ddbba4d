"""transformers side of the greedy-decoding benchmark (bench only; not a lowrank dependency).

  python torch_generate.py DIR [--threads 2] [--new 128] [--rounds 5] [--warmup 1]

Loads DIR (written by bench/train-cpu/torch_train.py make), float32 on the CPU, and times whole
model.generate(do_sample=False) calls (prefill + every new token, KV cache on, as transformers
decodes by default) from the first row of DIR/ids.json. Also a read-bandwidth probe: torch.sum over
a 1 GiB float32 tensor on the same threads. Prints one JSON line prefixed "RESULT ".
"""
import argparse
import json
import os
import statistics
import time

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import transformers
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(args.dir, torch_dtype=torch.float32).eval()
    with open(os.path.join(args.dir, "ids.json")) as f:
        prompt = torch.tensor([json.load(f)[0]])
    weight_bytes = sum(p.numel() * 4 for p in model.parameters())  # the tied lm_head counted once, as it is read once
    rates, out = [], None
    with torch.inference_mode():
        for r in range(args.warmup + args.rounds):
            t0 = time.perf_counter()
            out = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                                 max_new_tokens=args.new, min_new_tokens=args.new, pad_token_id=model.config.eos_token_id)
            s = time.perf_counter() - t0
            if r >= args.warmup:
                rates.append((out.shape[1] - prompt.shape[1]) / s)
        big = torch.ones(1 << 28)
        times = []
        for r in range(6):
            t0 = time.perf_counter()
            big.sum().item()
            if r > 0:
                times.append(time.perf_counter() - t0)
    gbps = big.numel() * 4 / statistics.median(times) / 1e9
    print("RESULT " + json.dumps({
        "side": "transformers", "threads": torch.get_num_threads(), "prompt": prompt.shape[1],
        "new_tokens": out.shape[1] - prompt.shape[1], "tokens_per_s": statistics.median(rates), "samples": rates,
        "weight_bytes": weight_bytes, "read_gbps": gbps, "bound_tokens_per_s": gbps * 1e9 / weight_bytes,
        "first_tokens": out[0, prompt.shape[1]:prompt.shape[1] + 16].tolist(),
        "versions": f"torch {torch.__version__}, transformers {transformers.__version__}",
    }))


if __name__ == "__main__":
    main()
