// Fused cross-entropy over a vocabulary, forward and backward, float32 (lib/ops/crossentropy.ts).
#pragma once
#include "../backend.h"

namespace lowrank {

// How cross-entropy reduces its per-row losses (PyTorch's `reduction`).
#define LOWRANK_REDUCTIONS(X) X(None) X(Sum) X(Mean)
enum class Reduction : int32_t { LOWRANK_REDUCTIONS(LR_ENUM_MEMBER) };
constexpr int kReductionCount = 0 LOWRANK_REDUCTIONS(LR_ENUM_PLUS_ONE);

}  // namespace lowrank

#define LOWRANK_CROSSENTROPY_OPS                                                                    \
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
  /* dlogits [N, V] = g_n * (softmax(logits[n]) - onehot(t_n)); on ignored rows 0, or NaN when    \
     the row's softmax is NaN (PyTorch's 0 - softmax·0). g_n = dout[n] for None, dout[0] for Sum,  \
     dout[0] / count for Mean. */                                                                   \
  void cross_entropy_backward_f32(const float* logits, const int32_t* targets, const float* lse,  \
                                  const float* dout, float* dlogits, int64_t N, int64_t V,         \
                                  int32_t ignore_index, Reduction reduction);                      \
  /* One chunk of the fused lm_head + cross-entropy (linearCrossEntropy in lib/ops/crossentropy.ts), \
     whose [N, V] logits are never stored whole. For each row n: loss[n] as cross_entropy_f32 gives \
     it and counted[n] = 1 (0 and 0 for an ignored row); with grad (optional) also                 \
     grad[n] = softmax(logits[n]) - onehot(t_n), unscaled (an ignored row: 0, or NaN as in          \
     cross_entropy_backward_f32), float32 (grad may be logits itself: every element is read before  \
     it is written) or bfloat16 bits when grad_bf16 (the operand of a bf16 weight's GEMM). A row    \
     whose target is outside [0, V) and not ignore_index lowers *first_bad (int32, same device) to \
     its index: no synchronization here, the caller reads it once after its chunks. Rows of logits  \
     and grad are ld >= V elements apart (a row stride padded for the GEMMs that write and read   \
     them; the V - ld tail of each row is neither read nor written). */                          \
  void cross_entropy_rows_f32(const float* logits, const int32_t* targets, float* loss, float* counted, \
                              void* grad, bool grad_bf16, int64_t N, int64_t V, int64_t ld,        \
                              int32_t ignore_index, int32_t* first_bad);

LOWRANK_DECLARE_BACKEND(LOWRANK_CROSSENTROPY_OPS)
