"""Checks attention.cu's float64 CPU reference against PyTorch autograd (float64, CPU).

    nvcc -O3 -std=c++17 -arch=sm_90a dev/cuda/attention.cu -o /tmp/attn
    mkdir -p /tmp/attnref && /tmp/attn reftest /tmp/attnref     # no GPU needed
    python3 dev/cuda/check_attention_reference.py /tmp/attnref

PyTorch computes softmax(scale q k^T + masks) with rows that see no key set to 0, multiplies by the
dropout factors the C++ wrote (Philox is checked elsewhere), and differentiates with autograd; the
reference's hand-written backward must agree to float64 rounding.
"""
import glob
import struct
import sys

import numpy as np
import torch


def load(path):
    raw = open(path, "rb").read()
    B, H, Tq, Tk, D, causal, padding = struct.unpack_from("7i", raw, 0)
    (dropout,) = struct.unpack_from("f", raw, 28)
    data = np.frombuffer(raw, dtype=np.float64, offset=32)
    pos = 0

    def take(*shape):
        nonlocal pos
        n = int(np.prod(shape))
        out = torch.from_numpy(data[pos : pos + n].copy()).reshape(shape)
        pos += n
        return out

    x = dict(B=B, H=H, Tq=Tq, Tk=Tk, D=D, causal=causal, dropout=dropout)
    x["q"], x["k"], x["v"] = take(B, H, Tq, D), take(B, H, Tk, D), take(B, H, Tk, D)
    x["dout"] = take(B, H, Tq, D)
    x["keep"] = take(B, Tk) if padding else torch.ones(B, Tk, dtype=torch.float64)
    x["M"] = take(B, H, Tq, Tk)
    for name, shape in [("o", (B, H, Tq, D)), ("lse", (B, H, Tq)), ("dq", (B, H, Tq, D)),
                        ("dk", (B, H, Tk, D)), ("dv", (B, H, Tk, D))]:
        x[name] = take(*shape)
    assert pos == data.size, f"{path}: {data.size - pos} values left over"
    return x


def main(directory):
    failures = 0
    files = sorted(glob.glob(f"{directory}/case*.bin"))
    assert files, f"no case*.bin in {directory}"
    for path in files:
        x = load(path)
        B, H, Tq, Tk, D = x["B"], x["H"], x["Tq"], x["Tk"], x["D"]
        q, k, v = (x[n].clone().requires_grad_(True) for n in ("q", "k", "v"))
        i = torch.arange(Tq).view(Tq, 1)
        j = torch.arange(Tk).view(1, Tk)
        allowed = (j <= i + Tk - Tq) if x["causal"] else torch.ones(Tq, Tk, dtype=torch.bool)
        allowed = allowed.view(1, 1, Tq, Tk) & (x["keep"] != 0).view(B, 1, 1, Tk)
        scale = float(np.float32(1.0) / np.sqrt(np.float32(D)))  # the C++ scale is float32
        scores = (q @ k.transpose(-1, -2)) * scale
        scores = scores.masked_fill(~allowed, float("-inf"))
        lse = torch.logsumexp(scores, dim=-1)
        empty = ~allowed.any(-1)  # rows that see no key: weights 0
        p = torch.softmax(scores.masked_fill(empty.unsqueeze(-1), 0.0), dim=-1) * (~empty).unsqueeze(-1)
        o = (p * x["M"]) @ v
        o.backward(x["dout"])
        checks = {"o": o.detach(), "lse": lse.detach(), "dq": q.grad, "dk": k.grad, "dv": v.grad}
        line = []
        for name, ref in checks.items():
            got = x[name]
            inf = torch.isinf(ref)
            same_inf = bool(torch.equal(inf, torch.isinf(got))) and bool((ref[inf] == got[inf]).all())
            err = (got[~inf] - ref[~inf]).abs().max().item() / max(ref[~inf].abs().max().item(), 1e-30)
            ok = same_inf and err < 1e-10
            failures += not ok
            line.append(f"{name} {err:.1e}{'' if ok else ' FAIL'}")
        kept = (x["M"] != 0).double().mean().item()
        print(f"{path}: B{B} H{H} Tq{Tq} Tk{Tk} D{D} causal={x['causal']} dropout={x['dropout']:.2f} "
              f"(kept {kept:.2f}, empty rows {int(empty.sum())}): " + ", ".join(line))
    print("reference matches PyTorch" if failures == 0 else f"FAIL: {failures} mismatches")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
