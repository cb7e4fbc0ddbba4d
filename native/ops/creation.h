// Creation and conversion kernels: fills, ranges, dtype casts, strided copies, Philox random
// streams (core/philox.h). Every other op family reads tensors these make.
#pragma once
#include "../backend.h"

#define LOWRANK_CREATION_OPS                                                                        \
  /* dst[i] = value, i < n */                                                                      \
  void fill(void* dst, DType dtype, int64_t n, double value);                                      \
  /* dst[i] = start + i * step */                                                                  \
  void arange(void* dst, DType dtype, int64_t n, double start, double step);                       \
  /* element-wise conversion (float32 <-> bfloat16 rounds to nearest even; float -> int32 truncates) */ \
  void cast(const void* src, DType src_dtype, void* dst, DType dst_dtype, int64_t n);              \
  /* copies a strided view of `src` into a strided view of `dst` (strides in elements) */         \
  void copy_strided(const void* src, const int64_t* src_strides, void* dst, const int64_t* dst_strides, \
                    size_t elem_size, int ndim, const int64_t* shape);                             \
  /* Philox streams, see core/philox.h */                                                          \
  void random_uniform(float* dst, int64_t n, uint64_t seed, uint64_t offset, float low, float high); \
  void random_normal(float* dst, int64_t n, uint64_t seed, uint64_t offset, float mean, float std);

LOWRANK_DECLARE_BACKEND(LOWRANK_CREATION_OPS)
