// Element-wise kernels on the CPU. The loops over contiguous rows are written so the compiler
// vectorizes them; the op switch sits outside the inner loop.
#include "../ops/elementwise.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "bf16_load.h"
#include "parallel.h"
#include "vexp.h"

namespace lowrank {
namespace cpu {
namespace {

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
  parallel_for(n, kComputeGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) f(i);
  });
}

// GELU, tanh form (GPT-2's gelu_new): y = 0.5·x·(1 + tanh(u)) with u = √(2/π)·(x + 0.044715·x³),
// computed as x·sigmoid(2u) = x / (1 + exp(-2u)) (the same function) through the vector exp of
// vexp.h, at three SIMD levels picked once at run time: scalar tanhf costs ~40 ns an element.
// Backward: gx = g·(s + 2·x·s·(1 - s)·du/dx), s = sigmoid(2u). y may alias x; gx may alias g.
constexpr float kGeluK = 0.7978845608028654f;  // √(2/π)
constexpr float kGeluC = 0.044715f;
// the exact GELU (GeluErf): Φ(x) = 0.5·(1 + erf(x·√½)), φ(x) = exp(-x²/2)/√(2π)
constexpr float kSqrtHalf = 0.7071067811865476f;
constexpr float kInvSqrt2Pi = 0.3989422804014327f;

void gelu_scalar(const float* x, float* y, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const float v = x[j];
    y[j] = v / (1.0f + std::exp(-2.0f * kGeluK * (v + kGeluC * v * v * v)));
  }
}

void gelu_backward_scalar(const float* x, const float* g, float* gx, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const float v = x[j];
    const float s = 1.0f / (1.0f + std::exp(-2.0f * kGeluK * (v + kGeluC * v * v * v)));
    const float du = kGeluK * (1.0f + 3.0f * kGeluC * v * v);
    gx[j] = g[j] * (s + 2.0f * v * s * (1.0f - s) * du);
  }
}

#ifdef LOWRANK_X86
// s = sigmoid(2u) = 1 / (1 + exp(-2u)) for GELU; exp overflowing to +inf gives s = 0 (x·s = -0 for x -> -inf).
LR_TARGET_AVX512 inline __m512 gelu_sig512(__m512 v, __m512* du) {
  const __m512 k = _mm512_set1_ps(kGeluK), c = _mm512_set1_ps(kGeluC), one = _mm512_set1_ps(1.0f);
  const __m512 v2 = _mm512_mul_ps(v, v);
  const __m512 u = _mm512_mul_ps(k, _mm512_fmadd_ps(_mm512_mul_ps(c, v2), v, v));
  if (du) *du = _mm512_mul_ps(k, _mm512_fmadd_ps(_mm512_set1_ps(3.0f * kGeluC), v2, one));
  return _mm512_div_ps(one, _mm512_add_ps(one, exp512(_mm512_mul_ps(_mm512_set1_ps(-2.0f), u))));
}

LR_TARGET_AVX512 void gelu_avx512(const float* x, float* y, int64_t n) {
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 m = n - j >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - j)) - 1);
    const __m512 v = _mm512_maskz_loadu_ps(m, x + j);
    _mm512_mask_storeu_ps(y + j, m, _mm512_mul_ps(v, gelu_sig512(v, nullptr)));
  }
}

LR_TARGET_AVX512 void gelu_backward_avx512(const float* x, const float* g, float* gx, int64_t n) {
  const __m512 one = _mm512_set1_ps(1.0f), two = _mm512_set1_ps(2.0f);
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 m = n - j >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - j)) - 1);
    const __m512 v = _mm512_maskz_loadu_ps(m, x + j);
    __m512 du;
    const __m512 s = gelu_sig512(v, &du);
    // s + 2·v·s·(1 - s)·du
    const __m512 d = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_mul_ps(two, v), _mm512_mul_ps(s, _mm512_sub_ps(one, s))), du, s);
    _mm512_mask_storeu_ps(gx + j, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, g + j), d));
  }
}

LR_TARGET_AVX2 inline __m256 gelu_sig256(__m256 v, __m256* du) {
  const __m256 k = _mm256_set1_ps(kGeluK), c = _mm256_set1_ps(kGeluC), one = _mm256_set1_ps(1.0f);
  const __m256 v2 = _mm256_mul_ps(v, v);
  const __m256 u = _mm256_mul_ps(k, _mm256_fmadd_ps(_mm256_mul_ps(c, v2), v, v));
  if (du) *du = _mm256_mul_ps(k, _mm256_fmadd_ps(_mm256_set1_ps(3.0f * kGeluC), v2, one));
  return _mm256_div_ps(one, _mm256_add_ps(one, exp256(_mm256_mul_ps(_mm256_set1_ps(-2.0f), u))));
}

LR_TARGET_AVX2 void gelu_avx2(const float* x, float* y, int64_t n) {
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 v = _mm256_loadu_ps(x + j);
    _mm256_storeu_ps(y + j, _mm256_mul_ps(v, gelu_sig256(v, nullptr)));
  }
  gelu_scalar(x + j, y + j, n - j);
}

LR_TARGET_AVX2 void gelu_backward_avx2(const float* x, const float* g, float* gx, int64_t n) {
  const __m256 one = _mm256_set1_ps(1.0f), two = _mm256_set1_ps(2.0f);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 v = _mm256_loadu_ps(x + j);
    __m256 du;
    const __m256 s = gelu_sig256(v, &du);
    const __m256 d = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_mul_ps(two, v), _mm256_mul_ps(s, _mm256_sub_ps(one, s))), du, s);
    _mm256_storeu_ps(gx + j, _mm256_mul_ps(_mm256_loadu_ps(g + j), d));
  }
  gelu_backward_scalar(x + j, g + j, gx + j, n - j);
}
#endif

using GeluFn = void (*)(const float*, float*, int64_t);
using GeluBackwardFn = void (*)(const float*, const float*, float*, int64_t);

GeluFn pick_gelu() {
#ifdef LOWRANK_X86
  if (has_avx512()) return gelu_avx512;
  if (has_avx2_fma()) return gelu_avx2;
#endif
  return gelu_scalar;
}

GeluBackwardFn pick_gelu_backward() {
#ifdef LOWRANK_X86
  if (has_avx512()) return gelu_backward_avx512;
  if (has_avx2_fma()) return gelu_backward_avx2;
#endif
  return gelu_backward_scalar;
}

void gelu_run(const float* x, float* y, int64_t n) {
  static const GeluFn fn = pick_gelu();
  fn(x, y, n);
}

void gelu_backward_run(const float* x, const float* g, float* gx, int64_t n) {
  static const GeluBackwardFn fn = pick_gelu_backward();
  fn(x, g, gx, n);
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
    case UnaryOp::Relu: return map(n, [&](int64_t i) { out[i] = x[i] <= 0 ? 0.0f : x[i]; });  // NaN stays NaN
    case UnaryOp::Sigmoid: return map(n, [&](int64_t i) { out[i] = 1.0f / (1.0f + std::exp(-x[i])); });
    case UnaryOp::Square: return map(n, [&](int64_t i) { out[i] = x[i] * x[i]; });
    case UnaryOp::Scale: return map(n, [&](int64_t i) { out[i] = alpha * x[i]; });
    case UnaryOp::AddScalar: return map(n, [&](int64_t i) { out[i] = x[i] + alpha; });
    case UnaryOp::PowScalar: return map(n, [&](int64_t i) { out[i] = std::pow(x[i], alpha); });
    case UnaryOp::Gelu:
      return parallel_for(n, kComputeGrain, [&](int64_t b, int64_t e) { gelu_run(x + b, out + b, e - b); });
    case UnaryOp::Abs: return map(n, [&](int64_t i) { out[i] = std::fabs(x[i]); });
    case UnaryOp::Silu: return map(n, [&](int64_t i) { out[i] = x[i] / (1.0f + std::exp(-x[i])); });
    // PyTorch's gelu (approximate="none"): x·0.5·(1 + erf(x/√2))
    case UnaryOp::GeluErf: return map(n, [&](int64_t i) { out[i] = x[i] * 0.5f * (1.0f + std::erf(x[i] * kSqrtHalf)); });
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
    // PyTorch's threshold_backward: exactly 0 where x <= 0, g elsewhere (x = NaN passes g)
    case UnaryOp::Relu: return map(n, [&](int64_t i) { gx[i] = x[i] <= 0 ? 0.0f : g[i]; });
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
      return parallel_for(n, kComputeGrain, [&](int64_t b, int64_t e) { gelu_backward_run(x + b, g + b, gx + b, e - b); });
    // g·sgn(x), sgn(0) = sgn(NaN) = 0 as in PyTorch: a NaN g stays NaN, also at x = 0
    case UnaryOp::Abs: return map(n, [&](int64_t i) { gx[i] = g[i] * (x[i] > 0 ? 1.0f : x[i] < 0 ? -1.0f : 0.0f); });
    // d/dx x·s(x) = s·(1 + x·(1 − s)), the form PyTorch's silu_backward uses
    case UnaryOp::Silu:
      return map(n, [&](int64_t i) {
        float s = 1.0f / (1.0f + std::exp(-x[i]));
        gx[i] = g[i] * s * (1.0f + x[i] * (1.0f - s));
      });
    // Φ(x) + x·φ(x), PyTorch's GeluBackward for approximate="none"
    case UnaryOp::GeluErf:
      return map(n, [&](int64_t i) {
        const float cdf = 0.5f * (1.0f + std::erf(x[i] * kSqrtHalf));
        const float pdf = std::exp(-0.5f * x[i] * x[i]) * kInvSqrt2Pi;
        gx[i] = g[i] * (cdf + x[i] * pdf);
      });
  }
}

void unary_backward_bf16(UnaryOp op, const float* x, const float* g, uint16_t* gx, int64_t n, float alpha) {
  // The float32 gradient of a few thousand elements at a time on the stack, then rounded: no
  // n-sized buffer. unary_backward_f32 runs inline inside the parallel region.
  constexpr int64_t kChunk = 4096;
  parallel_for(n, kComputeGrain, [&](int64_t b, int64_t e) {
    float exact[kChunk];
    for (int64_t c0 = b; c0 < e; c0 += kChunk) {
      const int64_t len = std::min(kChunk, e - c0);
      unary_backward_f32(op, x + c0, g + c0, exact, len, alpha);
      round_to_bf16(exact, gx + c0, len);
    }
  });
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

void bias_gelu_rows_f32(float* c, const float* bias, float* pre, int64_t rows, int64_t cols, int64_t ld) {
  const int64_t grain = std::max<int64_t>(1, (pre ? kComputeGrain : kStreamGrain) / std::max<int64_t>(1, cols));
  parallel_for(rows, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      float* row = c + r * ld;
      float* sum = pre ? pre + r * ld : row;
      if (bias) {
        for (int64_t j = 0; j < cols; ++j) sum[j] = row[j] + bias[j];
      } else if (pre) {
        std::memcpy(sum, row, size_t(cols) * sizeof(float));
      }
      if (pre) gelu_run(sum, row, cols);
    }
  });
}

}  // namespace cpu
}  // namespace lowrank
