// Dropout from the counter-based Philox stream (core/philox.h): the mask is recomputed, never stored
// (lib/ops/dropout.ts).
#pragma once
#include "../backend.h"

#define LOWRANK_DROPOUT_OPS                                                                         \
  /* y[i] = x[i] * (philox_keep(seed, offset, i, p) ? scale : 0), so a dropped NaN stays NaN (as  \
     PyTorch's x * mask); i < n, contiguous; y may alias x. The same call with the same (seed,     \
     offset) is the backward (x = dy, y = dx). With residual (not null): y[i] = residual[i] +      \
     that product, rounded twice as the two ops would (a transformer's x + dropout(sublayer(x)) in \
     one pass); y may alias residual. */                                                           \
  void dropout_f32(const float* x, float* y, int64_t n, float p, float scale, uint64_t seed, uint64_t offset,             \
                   const float* residual);

LOWRANK_DECLARE_BACKEND(LOWRANK_DROPOUT_OPS)
