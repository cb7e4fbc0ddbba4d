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
  int64_t ld;  // W's row stride (>= cols): a frozen weight may live in an augmented buffer (below)
};

// The one-GEMM LoRA of a frozen bfloat16 weight (lib/ops/lora.ts, loraLinear). The weight W lives in
// the top-left corner of a padded bf16 buffer, its "augmented" form, whose r + 1 extra rows and r
// extra columns (rounded up: rp) hold the adapter and the bias, so that one tensor-core GEMM of an
// augmented input computes the base layer, its bias and the LoRA update together:
//   forward   y  = [x | s·u | 1]·[W; Bᵀ; b]          u = drop(x)·Aᵀ                (K = k + rp)
//   backward  gx = [g | s·v]·[W | Aᵀ]ᵀ (dropout: [g]·Wᵀ, then the masked s·v·A added)  v = g·B
// In "input × output" coordinates X(a, b), a < k + rp the input index and b < d + rp the output
// index, with X(a, b) = W[a·ld + b] for Conv1D's [in, out] weight (transposed) and W[b·ld + a]
// for nn.Linear's [out, in]:
//   X(a, c) = W's element for a < k, c < d;  X(k + j, c) = B[c, j];  X(k + r, c) = bias[c];
//   X(a, d + j) = A[j, a];  every other padding element 0.
struct LoraAugPack {
  int64_t k, d, r;
  int64_t ld;       // the buffer's row stride: d + rp (transposed) or k + rp
  bool transposed;  // Conv1D's layout
};

// The augmented input of that GEMM from a float32 input (x [N, K] in the forward, g in the backward):
//   u = drop(x)·Fᵀ [N, r]          F = A [r, K], or given as B [K, r] when f_transposed
//   xa[:, :K] = bf16(x) (unmasked)  xa[:, K:K+r] = bf16(tail_scale·u)  xa[:, K+r] = 1 when ones,
//   every other column < ld 0.      (xa [N, ld] bfloat16)
struct LoraAugDims {
  int64_t N, K, r, ld;
  float tail_scale;
  bool ones, f_transposed;
  float p, mask_scale;  // dropout of x in u (the forward); p = 0 in the backward
  uint64_t seed, offset;
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
  void lora_merge(const LoraMergeDims& m, void* W, DType w_dtype, const float* A, const float* B);       \
  /* Writes bf16 A, B and the bias (may be null: zeros) into W's padding (LoraAugPack). */              \
  void lora_aug_pack(const LoraAugPack& pk, uint16_t* W, const float* A, const float* B, const float* bias); \
  void lora_down_aug(const LoraAugDims& a, const float* x, const float* f, float* u, uint16_t* xa);    \
  /* The rest of the one-GEMM backward (d as lora_backward_f32's), v = g·B and u [N, r] float32,     \
     xa [N, ldx] and ga [N, ldg] the augmented input and gradient (bf16, their first k / d columns \
     read): gA = s·vᵀ·drop(xa), gB = s·gaᵀ·u (each may be null), and gx += s·(v·A) ⊙ mask/(1-p)    \
     when gx is not null (dropout: the GEMM left that term out). */                                 \
  void lora_backward_aug(const LoraDims& d, const float* v, const float* u, const uint16_t* xa, int64_t ldx, \
                         const uint16_t* ga, int64_t ldg, const float* A, float* gx, float* gA, float* gB);

LOWRANK_DECLARE_BACKEND(LOWRANK_LORA_OPS)
