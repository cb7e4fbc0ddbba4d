// Layer norm over the last dimension, forward and backward, float32 (lib/ops/layernorm.ts).
#pragma once
#include "../backend.h"

#define LOWRANK_LAYERNORM_OPS                                                                       \
  /* Layer norm over the last dimension of x [N, C] (contiguous): y = (x - mean) * rstd * w + b,   \
     rstd = 1 / sqrt(biased variance + eps). w, b may be null (1 and 0). Saves mean[N], rstd[N]. */ \
  void layer_norm_f32(const float* x, const float* w, const float* b, float* y, float* mean,        \
                      float* rstd, int64_t N, int64_t C, float eps);                                \
  /* Backward of layer_norm_f32 from dy [N, C]: dx [N, C]; dw [C] and db [C] when not null (the    \
     sums over rows are deterministic: a fixed split of the rows and a fixed-order total). */      \
  void layer_norm_backward_f32(const float* x, const float* w, const float* mean, const float* rstd, \
                               const float* dy, float* dx, float* dw, float* db, int64_t N, int64_t C);

LOWRANK_DECLARE_BACKEND(LOWRANK_LAYERNORM_OPS)
