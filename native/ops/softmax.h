// Row-wise softmax and log-softmax, forward and backward, float32 (lib/ops/softmax.ts).
#pragma once
#include "../backend.h"

#define LOWRANK_SOFTMAX_OPS                                                                         \
  /* Row-wise softmax (or log-softmax) of x [rows, cols], contiguous; y may alias x. */             \
  void softmax_f32(const float* x, float* y, int64_t rows, int64_t cols, bool log);                \
  /* dx from the forward output y and dy: softmax: y * (dy - sum(dy * y)); log-softmax:            \
     dy - exp(y) * sum(dy). dx may alias dy. */                                                     \
  void softmax_backward_f32(const float* y, const float* dy, float* dx, int64_t rows, int64_t cols, bool log);

LOWRANK_DECLARE_BACKEND(LOWRANK_SOFTMAX_OPS)
