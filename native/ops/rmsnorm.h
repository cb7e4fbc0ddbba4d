// RMS norm over the last dimension, forward and backward, float32 (lib/ops/rmsnorm.ts).
#pragma once
#include "../backend.h"

#define LOWRANK_RMSNORM_OPS                                                                         \
  /* RMS norm over the last dimension of x [N, C] (contiguous): y = (x * rstd) * w,                \
     rstd = 1 / sqrt(mean(x^2) + eps) (LlamaRMSNorm's order). w may be null (1). Saves rstd[N]. */ \
  void rms_norm_f32(const float* x, const float* w, float* y, float* rstd, int64_t N, int64_t C, float eps); \
  /* Backward of rms_norm_f32 from dy [N, C]: dx [N, C]; dw [C] when not null (the sum over rows   \
     is deterministic: a fixed split of the rows and a fixed-order total). */                      \
  void rms_norm_backward_f32(const float* x, const float* w, const float* rstd, const float* dy, float* dx, float* dw, \
                             int64_t N, int64_t C);

LOWRANK_DECLARE_BACKEND(LOWRANK_RMSNORM_OPS)
