"""Makes a random-init GPT-2 124M checkpoint (transformers' GPT2Config() defaults, seeded) and its
reference logits for test/gpu/gpt2.test.ts. Run on the GPU machine (nothing is downloaded):
    python3 test/gpu/make_gpt2_124m.py OUT_DIR
float32 on the CPU, eager attention off (sdpa default), eval mode."""
import json, sys
import torch
from transformers import GPT2Config, GPT2LMHeadModel

out = sys.argv[1]
torch.manual_seed(0)
model = GPT2LMHeadModel(GPT2Config()).eval()
model.save_pretrained(out)
g = torch.Generator().manual_seed(1)
ids = torch.randint(0, 50257, (2, 64), generator=g)
mask = torch.ones_like(ids)
mask[1, 50:] = 0
labels = ids.clone()
labels[1, 50:] = -100
with torch.no_grad():
    o = model(input_ids=ids, attention_mask=mask, labels=labels)
json.dump({"input_ids": ids.tolist(), "attention_mask": mask.tolist(), "labels": labels.tolist(),
           "logits": o.logits.tolist(), "loss": o.loss.item()}, open(f"{out}/reference.json", "w"))
print("wrote", out)
