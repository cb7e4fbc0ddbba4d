// Element-wise arithmetic (with broadcasting) and row reductions.
#pragma once
#include "../backend.h"

namespace lowrank {
// Binary ops; the backward rules live in lib/ops/elementwise.ts.
enum class BinaryOp : int32_t { Add = 0, Sub = 1, Mul = 2, Div = 3 };
// Unary ops y = f(x; alpha). Each has a backward kernel that computes g * f'(x).
enum class UnaryOp : int32_t {
  Neg = 0, Exp = 1, Log = 2, Sqrt = 3, Tanh = 4, Relu = 5, Sigmoid = 6, Square = 7,
  Scale = 8,     // alpha * x
  AddScalar = 9, // x + alpha
  PowScalar = 10,// x ^ alpha
  Gelu = 11,     // GPT-2's tanh approximation ("gelu_new")
  Abs = 12,
};
}  // namespace lowrank

#define LOWRANK_ELEMENTWISE_OPS                                                                    \
  /* out = a (op) b over `shape`; a and b are strided views (stride 0 broadcasts), out is         \
     contiguous. out may alias a or b when that operand is contiguous with out's shape. */        \
  void binary_f32(BinaryOp op, const float* a, const int64_t* a_strides, const float* b,          \
                  const int64_t* b_strides, float* out, int ndim, const int64_t* shape);          \
  /* out[i] = f(x[i]; alpha), contiguous; out may alias x. */                                     \
  void unary_f32(UnaryOp op, const float* x, float* out, int64_t n, float alpha);                 \
  /* gx[i] = g[i] * f'(x[i]; alpha), contiguous. */                                               \
  void unary_backward_f32(UnaryOp op, const float* x, const float* g, float* gx, int64_t n, float alpha); \
  /* out[r] = sum of the `cols` contiguous values of row r, r < rows (accumulated in double). */   \
  void sum_rows_f32(const float* x, float* out, int64_t rows, int64_t cols);

LOWRANK_DECLARE_BACKEND(LOWRANK_ELEMENTWISE_OPS)
