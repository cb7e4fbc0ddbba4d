// Matrix products, the op CPU training spends its time in.
#pragma once
#include "../backend.h"

#define LOWRANK_GEMM_OPS                                                                               \
  /* For b < batch: C_b = alpha * op(A_b) * op(B_b) + beta * C_b, all row-major.                    \
     op(X) = X, or Xᵀ when trans_x. op(A) is m×k, op(B) is k×n, C is m×n. lda/ldb/ldc are the row   \
     strides of the matrices as stored; batch strides are in elements (0 broadcasts one matrix).    \
     beta == 0 overwrites C without reading it (so C may hold NaN garbage). */                      \
  void gemm_f32(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,            \
                const float* a, int64_t lda, int64_t batch_stride_a, const float* b, int64_t ldb,    \
                int64_t batch_stride_b, float beta, float* c, int64_t ldc, int64_t batch_stride_c,   \
                int64_t batch);                                                                      \
  /* The same product with bfloat16 operands a and b (raw bf16 bits) and a float32 C: products  \
     of bf16 values accumulate in float32 (tensor cores on CUDA; vdpbf16ps or float32 FMAs on   \
     the CPU), as PyTorch's autocast matmuls do. Used for frozen bf16 weights. */                \
  void gemm_bf16(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,           \
                 const uint16_t* a, int64_t lda, int64_t batch_stride_a, const uint16_t* b,         \
                 int64_t ldb, int64_t batch_stride_b, float beta, float* c, int64_t ldc,            \
                 int64_t batch_stride_c, int64_t batch);                                            \
  /* The same product with a float32 (x, or dY in a backward) rounded to bf16 as it is read:     \
     the result is gemm_bf16's on a bf16 copy of a made by a cast (round to nearest even), bit   \
     for bit. The CPU rounds while packing, so no copy is written; CUDA casts into a scratch     \
     copy for cuBLAS. b is bf16 (raw bits). */                                                   \
  void gemm_f32_bf16(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,       \
                     const float* a, int64_t lda, int64_t batch_stride_a, const uint16_t* b,        \
                     int64_t ldb, int64_t batch_stride_b, float beta, float* c, int64_t ldc,        \
                     int64_t batch_stride_c, int64_t batch);                                        \
  /* A linear layer's product and what follows it: C = op(A)·op(B) + bias (bias[j] added to   \
     column j of every row; null: none), then, when pre is given, pre = that sum (kept for the  \
     backward) and C = gelu_tanh(pre) (GPT-2's gelu_new). a and b are a_dtype and b_dtype: both \
     float32, both bfloat16 bits, or float32 a and bf16 b (a rounded, as gemm_f32_bf16); C,     \
     bias and pre float32, C and pre with row stride ldc. One GEMM with cuBLASLt's epilogue on  \
     CUDA; the CPU runs its gemm, then bias_gelu_rows_f32. */                                  \
  void gemm_epilogue(DType a_dtype, DType b_dtype, bool trans_a, bool trans_b, int64_t m, int64_t n, \
                     int64_t k, const void* a, int64_t lda, const void* b, int64_t ldb,             \
                     const float* bias, float* pre, float* c, int64_t ldc);

LOWRANK_DECLARE_BACKEND(LOWRANK_GEMM_OPS)

namespace lowrank {
// Elements a batch of row-major matrices (rows × cols, row stride ld, batch_stride apart) spans,
// from the first element to the last.
inline int64_t gemm_span(int64_t rows, int64_t cols, int64_t ld, int64_t batch_stride, int64_t batch) {
  if (rows == 0 || cols == 0 || batch == 0) return 0;
  return (batch - 1) * batch_stride + (rows - 1) * ld + cols;
}
}  // namespace lowrank
