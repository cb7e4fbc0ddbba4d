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
     of bf16 values accumulate in float32 (tensor cores on CUDA; the CPU widens to float32 and   \
     runs gemm_f32), as PyTorch's autocast matmuls do. Used for frozen bf16 weights. */          \
  void gemm_bf16(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,           \
                 const uint16_t* a, int64_t lda, int64_t batch_stride_a, const uint16_t* b,         \
                 int64_t ldb, int64_t batch_stride_b, float beta, float* c, int64_t ldc,            \
                 int64_t batch_stride_c, int64_t batch);                                            \
  /* A linear layer's product and what follows it: C = op(A)·op(B) + bias (bias[j] added to   \
     column j of every row; null: none), then, when pre is given, pre = that sum (kept for the  \
     backward) and C = gelu_tanh(pre) (GPT-2's gelu_new). a and b are `dtype` (float32 or       \
     bfloat16 bits); C, bias and pre float32, C and pre with row stride ldc. One GEMM with       \
     cuBLASLt's epilogue on CUDA; the CPU runs its gemm, then bias_gelu_rows_f32. */            \
  void gemm_epilogue(DType dtype, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,     \
                     const void* a, int64_t lda, const void* b, int64_t ldb, const float* bias,    \
                     float* pre, float* c, int64_t ldc);

LOWRANK_DECLARE_BACKEND(LOWRANK_GEMM_OPS)
