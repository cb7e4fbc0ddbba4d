// Element-wise kernels on the CPU. The loops over contiguous rows are written so the compiler
// vectorizes them; the op switch sits outside the inner loop.
#include "../ops/elementwise.h"

#include <algorithm>
#include <cmath>

#include "nn_rows.h"
#include "parallel.h"

namespace lowrank {
namespace cpu {
namespace {
constexpr int64_t kGrain = 1 << 14;

template <typename F>
void binary_rows(const float* a, const int64_t* as, const float* b, const int64_t* bs, float* out, int ndim,
                 const int64_t* shape, F f) {
  int64_t n = 1;
  for (int d = 0; d < ndim; ++d) n *= shape[d];
  if (n == 0) return;
  int64_t inner = ndim > 0 ? shape[ndim - 1] : 1;
  int64_t a_in = ndim > 0 ? as[ndim - 1] : 0, b_in = ndim > 0 ? bs[ndim - 1] : 0;
  int64_t rows = n / inner;
  parallel_for(rows, std::max<int64_t>(1, kStreamGrain / inner), [&](int64_t r0, int64_t r1) {
    for (int64_t row = r0; row < r1; ++row) {
      int64_t rem = row, ao = 0, bo = 0;
      for (int d = ndim - 2; d >= 0; --d) {
        int64_t i = rem % shape[d];
        ao += i * as[d];
        bo += i * bs[d];
        rem /= shape[d];
      }
      const float* ar = a + ao;
      const float* br = b + bo;
      float* o = out + row * inner;
      // The common layouts get their own loops so they vectorize.
      if (a_in == 1 && b_in == 1) {
        for (int64_t j = 0; j < inner; ++j) o[j] = f(ar[j], br[j]);
      } else if (a_in == 1 && b_in == 0) {
        const float bv = br[0];
        for (int64_t j = 0; j < inner; ++j) o[j] = f(ar[j], bv);
      } else if (a_in == 0 && b_in == 1) {
        const float av = ar[0];
        for (int64_t j = 0; j < inner; ++j) o[j] = f(av, br[j]);
      } else {
        for (int64_t j = 0; j < inner; ++j) o[j] = f(ar[j * a_in], br[j * b_in]);
      }
    }
  });
}

template <typename F>
void map(int64_t n, F f) {
  parallel_for(n, kGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) f(i);
  });
}
}  // namespace

void binary_f32(BinaryOp op, const float* a, const int64_t* as, const float* b, const int64_t* bs, float* out, int ndim,
                const int64_t* shape) {
  switch (op) {
    case BinaryOp::Add: return binary_rows(a, as, b, bs, out, ndim, shape, [](float x, float y) { return x + y; });
    case BinaryOp::Sub: return binary_rows(a, as, b, bs, out, ndim, shape, [](float x, float y) { return x - y; });
    case BinaryOp::Mul: return binary_rows(a, as, b, bs, out, ndim, shape, [](float x, float y) { return x * y; });
    case BinaryOp::Div: return binary_rows(a, as, b, bs, out, ndim, shape, [](float x, float y) { return x / y; });
  }
}

void unary_f32(UnaryOp op, const float* x, float* out, int64_t n, float alpha) {
  switch (op) {
    case UnaryOp::Neg: return map(n, [&](int64_t i) { out[i] = -x[i]; });
    case UnaryOp::Exp: return map(n, [&](int64_t i) { out[i] = std::exp(x[i]); });
    case UnaryOp::Log: return map(n, [&](int64_t i) { out[i] = std::log(x[i]); });
    case UnaryOp::Sqrt: return map(n, [&](int64_t i) { out[i] = std::sqrt(x[i]); });
    case UnaryOp::Tanh: return map(n, [&](int64_t i) { out[i] = std::tanh(x[i]); });
    case UnaryOp::Relu: return map(n, [&](int64_t i) { out[i] = x[i] > 0 ? x[i] : 0.0f; });
    case UnaryOp::Sigmoid: return map(n, [&](int64_t i) { out[i] = 1.0f / (1.0f + std::exp(-x[i])); });
    case UnaryOp::Square: return map(n, [&](int64_t i) { out[i] = x[i] * x[i]; });
    case UnaryOp::Scale: return map(n, [&](int64_t i) { out[i] = alpha * x[i]; });
    case UnaryOp::AddScalar: return map(n, [&](int64_t i) { out[i] = x[i] + alpha; });
    case UnaryOp::PowScalar: return map(n, [&](int64_t i) { out[i] = std::pow(x[i], alpha); });
    case UnaryOp::Gelu:  // vectorized through the SIMD exp (nn_rows.cc): scalar tanhf cost ~40 ns an element
      return parallel_for(n, kGrain, [&](int64_t b, int64_t e) { gelu_run(x + b, out + b, e - b); });
    case UnaryOp::Abs: return map(n, [&](int64_t i) { out[i] = std::fabs(x[i]); });
  }
}

void unary_backward_f32(UnaryOp op, const float* x, const float* g, float* gx, int64_t n, float alpha) {
  switch (op) {
    case UnaryOp::Neg: return map(n, [&](int64_t i) { gx[i] = -g[i]; });
    case UnaryOp::Exp: return map(n, [&](int64_t i) { gx[i] = g[i] * std::exp(x[i]); });
    case UnaryOp::Log: return map(n, [&](int64_t i) { gx[i] = g[i] / x[i]; });
    case UnaryOp::Sqrt: return map(n, [&](int64_t i) { gx[i] = g[i] * 0.5f / std::sqrt(x[i]); });
    case UnaryOp::Tanh:
      return map(n, [&](int64_t i) {
        float t = std::tanh(x[i]);
        gx[i] = g[i] * (1.0f - t * t);
      });
    case UnaryOp::Relu: return map(n, [&](int64_t i) { gx[i] = x[i] > 0 ? g[i] : 0.0f; });
    case UnaryOp::Sigmoid:
      return map(n, [&](int64_t i) {
        float s = 1.0f / (1.0f + std::exp(-x[i]));
        gx[i] = g[i] * s * (1.0f - s);
      });
    case UnaryOp::Square: return map(n, [&](int64_t i) { gx[i] = g[i] * 2.0f * x[i]; });
    case UnaryOp::Scale: return map(n, [&](int64_t i) { gx[i] = g[i] * alpha; });
    case UnaryOp::AddScalar: return map(n, [&](int64_t i) { gx[i] = g[i]; });
    case UnaryOp::PowScalar: return map(n, [&](int64_t i) { gx[i] = g[i] * alpha * std::pow(x[i], alpha - 1.0f); });
    case UnaryOp::Gelu:
      return parallel_for(n, kGrain, [&](int64_t b, int64_t e) { gelu_backward_run(x + b, g + b, gx + b, e - b); });
    case UnaryOp::Abs: return map(n, [&](int64_t i) { gx[i] = x[i] > 0 ? g[i] : x[i] < 0 ? -g[i] : 0.0f; });
  }
}

void sum_rows_f32(const float* x, float* out, int64_t rows, int64_t cols) {
  parallel_for(rows, std::max<int64_t>(1, kStreamGrain / std::max<int64_t>(1, cols)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* row = x + r * cols;
      double acc = 0;
      for (int64_t j = 0; j < cols; ++j) acc += row[j];
      out[r] = static_cast<float>(acc);
    }
  });
}

}  // namespace cpu
}  // namespace lowrank
