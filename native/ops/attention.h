// Scaled dot-product attention, forward and backward, float32 tensors (lib/ops/attention.ts).
#pragma once
#include "../backend.h"

namespace lowrank {

// One of q, k, v, out (or their gradients) of attention, logically [B, H, T, D]: element
// (b, h, t, d) is at data[b*sb + h*sh + t*st + d]. The head dimension D is contiguous; the
// other strides are free, so the [B, T, H, D] layout of GPT-2's fused qkv projection is read
// and written without permuting copies.
struct AttnView {
  float* data;
  int64_t sb, sh, st;
  LR_HD float* row(int64_t b, int64_t h, int64_t t) const { return data + b * sb + h * sh + t * st; }
};

// Attention sizes and options. Queries are the last Tq of Tk positions (Tq == Tk in training,
// Tq < Tk when generating with a KV cache): query i sits at absolute position Tk - Tq + i, and a
// causal query sees keys j <= Tk - Tq + i (and j > Tk - Tq + i - window with a sliding window).
//
// key_keep (optional, [B, Tk] int32, nonzero = attend) is a key-padding mask: padded keys get
// weight 0. A query that sees no unpadded key (left padding: the pad positions before the first
// token) outputs zeros and passes no gradient, as PyTorch's F.scaled_dot_product_attention does
// for a fully masked row and so transformers' GPT-2 with its default "sdpa" attention
// (checked with torch 2.13 / transformers 5.18; the "eager" path instead spreads such a row
// uniformly over all keys). Unpadded positions are unaffected by that choice: padded keys are
// masked for every query. Such a row's lse is -inf.
//
// Dropout on the attention weights (training; GPT-2's attn_pdrop): weight (b, h, i, j) is element
// ((b*H + h)*Tq + i)*Tk + j of the Philox stream (seed, offset) (B·H·Tq·Tk counters), kept when
// philox_keep(seed, offset, element, dropout) and then scaled by 1/(1-dropout). The backward
// recomputes the same mask.
struct AttnDims {
  int64_t B, H, Tq, Tk, D;
  float scale;  // scores = scale * q·k (1/sqrt(D) for GPT-2)
  bool causal;
  // Sliding window (causal only; 0 = none): the query at absolute position p sees keys
  // p - window < j <= p, itself included (transformers' sliding_window; Mistral, Qwen2/3).
  int64_t window;
  float dropout;  // probability of dropping a weight, in [0, 1); 0 = none
  uint64_t seed, offset;
  // The arithmetic: DType::F32 (float32 throughout), or DType::BF16, attention as bf16 autocast
  // runs it for a model with bf16 weights: q, k, v (and dout in the backward) are rounded to bf16
  // and multiplied with float32 sums. The CPU also rounds the weights (the forward's unnormalized
  // exp(S - max) after dropout, the backward's drop(P) and dS) to bf16 for their products, and
  // runs bf16 GEMMs (16 queries or more) or float32 ones on the rounded values (fewer: decoding);
  // CUDA runs bf16 tensor-core flash attention (attention_mma.cu), which rounds P and dS alike,
  // where D is 64 or 128 and the rows are 16-byte aligned, and its float32 kernels (unrounded
  // weights) elsewhere. Both agree with float64 on bf16-rounded inputs to bf16 accuracy (~1e-3
  // relative), not float32's.
  DType precision;
  // Grouped-query attention (CPU only; the CUDA kernels take kv_group = 1 and lib/ops/attention.ts
  // repeats the key/value heads for them): k, v, dk and dv have H / kv_group heads, and key/value
  // head j serves query heads j·kv_group … j·kv_group + kv_group - 1 (transformers' repeat_kv),
  // read in place instead of repeated. dk and dv sum over their group's query heads.
  int64_t kv_group = 1;
  // With bf16 precision: k and v already hold bf16 values (a KV cache that stores keys and values
  // rounded, lib/models/kvcache.ts), so only q (and dout) are rounded. The CPU then reads the cache
  // in place instead of rounding a copy of all of it for every decoded token.
  bool kv_rounded = false;
};

}  // namespace lowrank

#define LOWRANK_ATTENTION_OPS                                                                       \
  /* out = softmax(scale * q kᵀ + masks) v; lse [B, H, Tq] (contiguous) saves each row's          \
     logsumexp for the backward. See AttnDims for the masks. */                                     \
  void attention_forward_f32(const AttnDims& dims, AttnView q, AttnView k, AttnView v,             \
                             const int32_t* key_keep, AttnView out, float* lse);                   \
  /* dq, dk, dv from dout, recomputing the probabilities from q, k and lse. out is the forward's \
     output: a kernel may take delta_i = dO_i·O_i from it (the CUDA flash path) where another     \
     gets rowsum(P ∘ dP) from the probabilities it recomputes anyway (the CPU). */                 \
  void attention_backward_f32(const AttnDims& dims, AttnView q, AttnView k, AttnView v,            \
                              const int32_t* key_keep, const float* lse, AttnView out,            \
                              AttnView dout, AttnView dq, AttnView dk, AttnView dv);

LOWRANK_DECLARE_BACKEND(LOWRANK_ATTENTION_OPS)
