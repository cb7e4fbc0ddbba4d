// Rotary position embeddings (RoPE) in transformers' Llama convention, forward and backward,
// float32 (lib/ops/rope.ts).
#pragma once
#include "../backend.h"

#define LOWRANK_ROPE_OPS                                                                            \
  /* y = x·cos + rotate_half(x)·sin over x [rows, T, D] (contiguous; rows = batch·heads) with       \
     cos, sin [T, D] (contiguous), rotate_half(v) = cat(-v[D/2:], v[:D/2]); D is even. With         \
     transpose, the transposed rotation (the backward): y = x·cos + rotate_halfᵀ(x·sin),            \
     rotate_halfᵀ(u) = cat(u[D/2:], -u[:D/2]). y must not alias x. */                               \
  void rope_f32(const float* x, const float* cos, const float* sin, float* y, int64_t rows, int64_t T, int64_t D, \
                bool transpose);

LOWRANK_DECLARE_BACKEND(LOWRANK_ROPE_OPS)
