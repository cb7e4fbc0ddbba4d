"""PyTorch + PEFT peer of dev/cuda/lora.cu's timings: the same shapes and the same table.

- LoRA linear forward + backward against the bare frozen linear (x requires grad, W frozen, so
  the bare backward is the gx GEMM alone), bf16, N=8192, k=d=4096, r=16 with dropout 0 and 0.05,
  and GPT-2's c_attn shape (transformers' Conv1D, k=768, d=2304, r=8; fan_in_fan_out).
- LoRA linear forward only (no grad), 4096 shape, r=16.
- merge W += s·B·A of a 4096 x 4096 bf16 weight, r=16, against a device-to-device copy of the
  same bytes (the memory floor).
PEFT is used with its defaults (adapter weights stay float32 on a bf16 model) and random A and B
(init_lora_weights=False: never time on zeros). CUDA events, 5 warm-ups, median of 25.

Run on the GPU machine: python3 bench/peer_lora.py  (--small: tiny shapes, for a smoke test on
any device, CPU included).
"""

import argparse
import statistics
import sys
import time

import torch
from torch import nn

try:
    import peft
    from peft import LoraConfig, get_peft_model
except ImportError:
    print(
        "peer_lora.py: peft is not installed. On the GPU machine carry its wheel: in the repository, "
        "python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl peft==0.21.0, "
        "then pass .whl in the run's carry list (dev/cuda/run-lora.sh installs it)",
        file=sys.stderr,
    )
    sys.exit(2)
from transformers.pytorch_utils import Conv1D

WARMUP, REPS = 5, 25


def median_ms(fn, device):
    """Median time of fn() in milliseconds: CUDA events on a GPU, the host clock elsewhere."""
    for _ in range(WARMUP):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    times = []
    for _ in range(REPS):
        if device.type == "cuda":
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            times.append(start.elapsed_time(stop))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


class Wrap(nn.Module):
    """A model holding one layer named `layer`, the module PEFT targets."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        return self.layer(x)


def make_model(k, d, conv1d, device):
    torch.manual_seed(0)
    layer = Conv1D(d, k) if conv1d else nn.Linear(k, d, bias=False)  # Conv1D(nf=out, nx=in) keeps its bias
    model = Wrap(layer).to(device=device, dtype=torch.bfloat16)
    model.requires_grad_(False)
    return model


def lora_model(k, d, r, p, conv1d, device):
    cfg = LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=p, target_modules=["layer"], fan_in_fan_out=conv1d,
                     init_lora_weights=False)
    model = get_peft_model(make_model(k, d, conv1d, device), cfg)
    model.train()
    return model


def bench_layer(rows, name, N, k, d, r, p, conv1d, device, step_target, fwd_target, issue_step, issue_fwd):
    x = torch.empty(N, k, device=device, dtype=torch.bfloat16).uniform_(-1, 1).requires_grad_()
    gy = torch.empty(N, d, device=device, dtype=torch.bfloat16).uniform_(-1, 1)
    bare = make_model(k, d, conv1d, device)
    lora = lora_model(k, d, r, p, conv1d, device)
    trainable = [q for q in lora.parameters() if q.requires_grad]

    def step(model, params):
        def run():
            model(x).backward(gy)
            x.grad = None
            for q in params:
                q.grad = None  # an optimizer's zero_grad(set_to_none=True)
        return run

    def forward(model):
        def run():
            with torch.no_grad():
                model(x)
        return run

    bare_step, lora_step = median_ms(step(bare, []), device), median_ms(step(lora, trainable), device)
    if step_target:
        rows.append((f"{name} fwd+bwd", bare_step, lora_step, step_target, issue_step))
    if fwd_target:
        bare_fwd, lora_fwd = median_ms(forward(bare), device), median_ms(forward(lora), device)
        rows.append((f"{name} forward only", bare_fwd, lora_fwd, fwd_target, issue_fwd))
    a_dtype = lora.base_model.model.layer.lora_A["default"].weight.dtype
    print(f"  {name}: bare step {bare_step * 1e3:.1f} us, LoRA step {lora_step * 1e3:.1f} us (adapter weights {a_dtype})")


def bench_merge(rows, d, k, r, device):
    lora = lora_model(k, d, r, 0.0, False, device)
    layer = lora.base_model.model.layer
    w = layer.base_layer.weight
    srcs = [torch.empty_like(w).uniform_(-0.02, 0.02) for _ in range(4)]  # rotated: 4 x 32 MB is past L2
    dsts = [torch.empty_like(w) for _ in range(4)]
    it = iter(range(1 << 30))

    def copy():
        i = next(it) % 4
        dsts[i].copy_(srcs[i])

    floor = median_ms(copy, device)
    # Time merge() alone; unmerge() runs between repetitions, outside the timed region.
    times = []
    for i in range(WARMUP + REPS):
        if device.type == "cuda":
            torch.cuda.synchronize()
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            layer.merge()
            stop.record()
            stop.synchronize()
            t = start.elapsed_time(stop)
        else:
            t0 = time.perf_counter()
            layer.merge()
            t = (time.perf_counter() - t0) * 1e3
        layer.unmerge()
        if i >= WARMUP:
            times.append(t)
    merge = statistics.median(times)
    rows.append((f"merge W += s·B·A {d}x{k} bf16 r={r} (vs d2d copy)", floor, merge, 1.5, "4.75x"))
    nbytes = w.numel() * w.element_size()
    print(f"  copy {nbytes / 1e6:.0f} MB: {floor * 1e3:.1f} us = {2 * nbytes / floor * 1e-6:.0f} GB/s; PEFT merge {merge * 1e3:.1f} us")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true", help="tiny shapes (smoke test)")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"\nPyTorch {torch.__version__} + PEFT {peft.__version__} on {name}")
    big, cat, mk = (8192, 4096, 4096), (8192, 768, 2304), 4096
    if args.small:
        big, cat, mk = (64, 256, 256), (64, 96, 288), 256
    rows = []
    n, k, d = big
    bench_layer(rows, f"N={n} k=d={k} r=16 p=0", n, k, d, 16, 0.0, False, device, 1.10, 1.05, "1.46x", "1.39x")
    bench_layer(rows, f"N={n} k=d={k} r=16 p=0.05", n, k, d, 16, 0.05, False, device, 1.12, None, "1.63x", "")
    n, k, d = cat
    bench_layer(rows, f"c_attn N={n} k={k} d={d} r=8", n, k, d, 8, 0.0, True, device, 1.40, None, "3.82x", "")
    bench_merge(rows, mk, mk, 16, device)

    print("\n| benchmark | base / floor (us) | PEFT (us) | PEFT ratio | lowrank target | PEFT (issue, H200) |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, base, lora, target, issue in rows:
        print(f"| {label} | {base * 1e3:.1f} | {lora * 1e3:.1f} | {lora / base:.3f}x | <= {target:.2f}x | {issue} |")


if __name__ == "__main__":
    main()
