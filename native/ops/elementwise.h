// Element-wise arithmetic (with broadcasting) and row reductions.
#pragma once
#include "../backend.h"

namespace lowrank {
// Binary ops; the backward rules live in lib/ops/elementwise.ts.
#define LOWRANK_BINARY_OPS(X) X(Add) X(Sub) X(Mul) X(Div)
enum class BinaryOp : int32_t { LOWRANK_BINARY_OPS(LR_ENUM_MEMBER) };
constexpr int kBinaryOpCount = 0 LOWRANK_BINARY_OPS(LR_ENUM_PLUS_ONE);

// Unary ops y = f(x; alpha). Each has a backward kernel that computes g * f'(x). Scale is alpha·x,
// AddScalar x + alpha, PowScalar x^alpha, Gelu GPT-2's tanh approximation ("gelu_new"),
// Silu x·sigmoid(x) (Llama's MLP activation), GeluErf the exact GELU x·Φ(x) (transformers' "gelu").
#define LOWRANK_UNARY_OPS(X) \
  X(Neg) X(Exp) X(Log) X(Sqrt) X(Tanh) X(Relu) X(Sigmoid) X(Square) X(Scale) X(AddScalar) X(PowScalar) X(Gelu) X(Abs) X(Silu) X(GeluErf)
enum class UnaryOp : int32_t { LOWRANK_UNARY_OPS(LR_ENUM_MEMBER) };
constexpr int kUnaryOpCount = 0 LOWRANK_UNARY_OPS(LR_ENUM_PLUS_ONE);
}  // namespace lowrank

#define LOWRANK_ELEMENTWISE_OPS                                                                    \
  /* out = a (op) b over `shape`; a and b are strided views (stride 0 broadcasts), out is         \
     contiguous. out may alias a or b when that operand is contiguous with out's shape. */        \
  void binary_f32(BinaryOp op, const float* a, const int64_t* a_strides, const float* b,          \
                  const int64_t* b_strides, float* out, int ndim, const int64_t* shape);          \
  /* out[i] = f(x[i]; alpha), contiguous; out may alias x. */                                     \
  void unary_f32(UnaryOp op, const float* x, float* out, int64_t n, float alpha);                 \
  /* gx[i] = g[i] * f'(x[i]; alpha), contiguous; gx may alias g. */                               \
  void unary_backward_f32(UnaryOp op, const float* x, const float* g, float* gx, int64_t n, float alpha); \
  /* The same gradient rounded to bfloat16 bits (the operand of a bf16 GEMM that reads it next). */ \
  void unary_backward_bf16(UnaryOp op, const float* x, const float* g, uint16_t* gx, int64_t n, float alpha); \
  /* out[r] = sum of the `cols` contiguous values of row r, r < rows (accumulated in double). */   \
  void sum_rows_f32(const float* x, float* out, int64_t rows, int64_t cols);                      \
  /* The epilogue of a linear layer's GEMM, rows × cols at row stride ld: v = c + bias[col]       \
     (bias may be null), then pre = v and c = gelu(v) when pre is given, else c = v. */            \
  void bias_gelu_rows_f32(float* c, const float* bias, float* pre, int64_t rows, int64_t cols, int64_t ld);

LOWRANK_DECLARE_BACKEND(LOWRANK_ELEMENTWISE_OPS)
