// The LoRA update of a frozen layer, fused by blocks of rows (lib/ops/lora.ts):
//   out = y + s·u·Bᵀ,  u = drop(x)·Aᵀ          x [N, k], A [r, k], B [d, r], y and out [N, d], u [N, r]
// and its backward, with v = g·B:
//   gB = s·gᵀ·u,  gA = s·vᵀ·drop(x),  gx = s·(v·A) ⊙ mask/(1-p)
// The dropout mask is Philox's (core/philox.h; element (i, c) of x is element i·k + c of the
// stream at (seed, offset)), recomputed in the backward (on the CPU one evaluation masks both x and gx).
// No N×k intermediate (drop(x), the masked gradient) goes through memory on either backend. The CPU
// (native/cpu/lora.cc) runs all the products of a block of rows while its rows of x, g, gx and
// drop(x) sit in L2; CUDA (native/cuda/lora.cu) runs thin hand-written passes over the rows of x and
// g with the mask applied in registers. Same mask, same results up to float32 summation order.
#pragma once
#include <cstdint>

#include "../backend.h"

namespace lowrank {

struct LoraDims {
  int64_t N, k, r, d;
  float scaling;     // s
  float p;           // dropout probability on x (0: none)
  float mask_scale;  // 1/(1-p), 0 when p = 1
  uint64_t seed, offset;
};

// The merge W += s·ΔW of an adapter into its frozen weight, in place (unmerge: s < 0). A [r, k] and
// B [d, r] float32; W float32 or bfloat16 (raw bits), contiguous:
//   transposed = false: W [rows = d, cols = k] += s·B·A          (nn.Linear)
//   transposed = true:  W [rows = k, cols = d] += s·(B·A)ᵀ = s·Aᵀ·Bᵀ  (GPT-2's Conv1D, nn.Embedding)
// Each element of W is read once and written once: a bfloat16 one is widened, changed in float32
// and rounded back, as PyTorch's in-place add of PEFT's float32 delta does.
struct LoraMergeDims {
  int64_t rows, cols, r;
  float scaling;
  bool transposed;
};

}  // namespace lowrank

#define LOWRANK_LORA_OPS                                                                                   \
  /* out may be y (updated in place). All operands contiguous row-major float32. */                      \
  void lora_forward_f32(const LoraDims& d, const float* x, const float* A, const float* B, const float* y, \
                        float* out, float* u);                                                             \
  /* gx, gA, gB may each be null (not wanted). The gradients are overwritten, not accumulated. gA and  \
     gB sum over the rows in an order fixed by the shapes alone (not by the number of threads). */      \
  void lora_backward_f32(const LoraDims& d, const float* g, const float* x, const float* A, const float* B, \
                         const float* u, float* gx, float* gA, float* gB);                                 \
  void lora_merge(const LoraMergeDims& m, void* W, DType w_dtype, const float* A, const float* B);

LOWRANK_DECLARE_BACKEND(LOWRANK_LORA_OPS)
