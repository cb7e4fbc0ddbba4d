// Neural-network ops a GPT-2 forward/backward needs, float32, each forward and backward one
// native pass: layer norm, softmax / log-softmax, fused cross-entropy, dropout, attention.
// The autograd rules that call them live in lib/ops/nn.ts and lib/ops/attention.ts.
#pragma once
#include "../backend.h"

namespace lowrank {

// How cross-entropy reduces its per-row losses (PyTorch's `reduction`).
enum class Reduction : int32_t { None = 0, Sum = 1, Mean = 2 };

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
// causal query sees keys j <= Tk - Tq + i.
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
  float dropout;  // probability of dropping a weight, in [0, 1); 0 = none
  uint64_t seed, offset;
};

}  // namespace lowrank

#define LOWRANK_NN_OPS                                                                             \
  /* Layer norm over the last dimension of x [N, C] (contiguous): y = (x - mean) * rstd * w + b,   \
     rstd = 1 / sqrt(biased variance + eps). w, b may be null (1 and 0). Saves mean[N], rstd[N]. */ \
  void layer_norm_f32(const float* x, const float* w, const float* b, float* y, float* mean,        \
                      float* rstd, int64_t N, int64_t C, float eps);                                \
  /* Backward of layer_norm_f32 from dy [N, C]: dx [N, C]; dw [C] and db [C] when not null (the    \
     sums over rows are deterministic: a fixed split of the rows and a fixed-order total). */      \
  void layer_norm_backward_f32(const float* x, const float* w, const float* mean, const float* rstd, \
                               const float* dy, float* dx, float* dw, float* db, int64_t N, int64_t C); \
  /* Row-wise softmax (or log-softmax) of x [rows, cols], contiguous; y may alias x. */             \
  void softmax_f32(const float* x, float* y, int64_t rows, int64_t cols, bool log);                \
  /* dx from the forward output y and dy: softmax: y * (dy - sum(dy * y)); log-softmax:            \
     dy - exp(y) * sum(dy). dx may alias dy. */                                                     \
  void softmax_backward_f32(const float* y, const float* dy, float* dx, int64_t rows, int64_t cols, bool log); \
  /* Fused cross-entropy of logits [N, V] against int32 targets [N], without materializing the     \
     probabilities: lse[n] = logsumexp(logits[n]), loss[n] = lse[n] - logits[n, t] (0 and lse 0   \
     for rows whose target is ignore_index). total[0] (Sum, Mean) = the sum of loss, or that sum   \
     over the number of counted rows (NaN when every row is ignored, as in PyTorch); unused for    \
     None. invalid (host memory) gets {row, target} of the first target outside [0, V) that is not \
     ignore_index, or stays {-1, 0}; with an invalid target the outputs are meaningless (on CUDA   \
     reporting it waits for the stream). */                                                         \
  void cross_entropy_f32(const float* logits, const int32_t* targets, float* lse, float* loss,     \
                         float* total, int64_t N, int64_t V, int32_t ignore_index, Reduction reduction, \
                         int64_t* invalid);                                                         \
  /* dlogits [N, V] = g_n * (softmax(logits[n]) - onehot(t_n)), 0 on ignored rows. g_n = dout[n]   \
     for None, dout[0] for Sum, dout[0] / count for Mean. */                                        \
  void cross_entropy_backward_f32(const float* logits, const int32_t* targets, const float* lse,  \
                                  const float* dout, float* dlogits, int64_t N, int64_t V,         \
                                  int32_t ignore_index, Reduction reduction);                      \
  /* y[i] = x[i] * scale where philox_keep(seed, offset, i, p), else 0; i < n, contiguous; y may   \
     alias x. The same call with the same (seed, offset) is the backward (x = dy, y = dx). */      \
  void dropout_f32(const float* x, float* y, int64_t n, float p, float scale, uint64_t seed, uint64_t offset); \
  /* out = softmax(scale * q kᵀ + masks) v; lse [B, H, Tq] (contiguous) saves each row's          \
     logsumexp for the backward. See AttnDims for the masks. */                                     \
  void attention_forward_f32(const AttnDims& dims, AttnView q, AttnView k, AttnView v,             \
                             const int32_t* key_keep, AttnView out, float* lse);                   \
  /* dq, dk, dv from dout, recomputing the probabilities from q, k and lse. */                      \
  void attention_backward_f32(const AttnDims& dims, AttnView q, AttnView k, AttnView v,            \
                              const int32_t* key_keep, const float* lse, AttnView dout, AttnView dq, \
                              AttnView dk, AttnView dv);

LOWRANK_DECLARE_BACKEND(LOWRANK_NN_OPS)
