// The LoRA update of a frozen layer, fused by blocks of rows (lib/ops/lora.ts):
//   out = y + s·u·Bᵀ,  u = drop(x)·Aᵀ          x [N, k], A [r, k], B [d, r], y and out [N, d], u [N, r]
// and its backward, with v = g·B:
//   gB = s·gᵀ·u,  gA = s·vᵀ·drop(x),  gx = s·(v·A) ⊙ mask/(1-p)
// The dropout mask is Philox's (core/philox.h; element (i, c) of x is element i·k + c of the
// stream at (seed, offset)), recomputed in the backward, where one evaluation masks both x and gx.
// Each block of rows runs all its products while its rows of x, g, gx and drop(x) sit in L2, so no
// N×k intermediate (drop(x), the masked gradient) goes through memory and the skinny factor
// products never make cache-cold passes of their own.
//
// CPU only for now: CUDA tensors take the composed path in lib/ops/lora.ts (cuBLAS products and
// the dropout kernel); the hand-written CUDA kernels are the fused-LoRA issue's (dev/cuda/lora.cu).
#pragma once
#include <cstdint>

namespace lowrank {

struct LoraDims {
  int64_t N, k, r, d;
  float scaling;     // s
  float p;           // dropout probability on x (0: none)
  float mask_scale;  // 1/(1-p), 0 when p = 1
  uint64_t seed, offset;
};

namespace cpu {
// out may be y (updated in place). All operands contiguous row-major float32.
void lora_forward_f32(const LoraDims& d, const float* x, const float* A, const float* B, const float* y, float* out, float* u);
// gx, gA, gB may each be null (not wanted). The gradients are overwritten, not accumulated. gA and
// gB sum over the rows in a fixed order, whatever the number of threads.
void lora_backward_f32(const LoraDims& d, const float* g, const float* x, const float* A, const float* B, const float* u,
                       float* gx, float* gA, float* gB);
}  // namespace cpu
}  // namespace lowrank
