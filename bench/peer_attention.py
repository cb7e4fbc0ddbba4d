"""PyTorch peer for dev/cuda/attention.cu: torch.nn.functional.scaled_dot_product_attention with the
flash backend, bf16, causal, at B=8 H=12 T=1024 D=64 (the lowrank benchmark shape).

    python3 bench/peer_attention.py [--B 8 --H 12 --T 1024 --D 64]

FLOPs are counted as in attention.cu: forward 4*B*H*T*T*D/2 (causal), backward 2.5x forward.
Times are CUDA-event medians (warmup, then >= 30 runs).
"""
import argparse

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def median_ms(fn, warmup=5, reps=30):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--B", type=int, default=8)
    ap.add_argument("--H", type=int, default=12)
    ap.add_argument("--T", type=int, default=1024)
    ap.add_argument("--D", type=int, default=64)
    a = ap.parse_args()
    B, H, T, D = a.B, a.H, a.T, a.D
    torch.manual_seed(0)
    q, k, v = (torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    dout = torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16)
    fwd_flop = 4.0 * B * H * T * T * D / 2
    bwd_flop = 2.5 * fwd_flop

    def fwd():
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    def fwd_bwd():
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        # inputs= keeps .grad from accumulating; the gradients are computed all the same
        torch.autograd.grad(out, (q, k, v), dout)

    print(f"PyTorch {torch.__version__} SDPA (flash backend) on {torch.cuda.get_device_name()}: "
          f"B={B} H={H} T={T} D={D} causal bf16, median of 30 after 5 warmup runs")
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION), torch.no_grad():
        f = median_ms(fwd)
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        fb = median_ms(fwd_bwd)
    b = fb - f
    for name, ms, flop in [("forward", f, fwd_flop), ("backward (fwd+bwd - fwd)", b, bwd_flop),
                           ("forward + backward", fb, fwd_flop + bwd_flop)]:
        print(f"  {name:<28} {ms:8.3f} ms  {flop / (ms * 1e-3) / 1e12:7.1f} TFLOP/s")


if __name__ == "__main__":
    main()
