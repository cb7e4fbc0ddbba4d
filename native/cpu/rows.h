// Row primitives shared by the row-wise kernels (layernorm.cc, softmax.cc, crossentropy.cc,
// attention.cc): reductions over one contiguous row, and exp, the cost that dominates softmax,
// cross-entropy over a 50257-token vocabulary and attention. exp has AVX-512 and AVX2 versions
// picked at run time (rows.cc, vexp.h); the reductions are plain loops over kLanes independent
// accumulators, which compilers vectorize without reassociating (so without -ffast-math) and
// which are deterministic for a given row length.
#pragma once
#include <algorithm>
#include <cstdint>

#include "../core/nanmath.h"
#include "parallel.h"

namespace lowrank {
namespace cpu {

constexpr int kLanes = 16;

// sum_j f(j) for j < n, in kLanes interleaved partial sums (a fixed order for a given n).
template <typename F>
inline float lanes_sum(int64_t n, F f) {
  float acc[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int l = 0; l < kLanes; ++l) acc[l] += f(j + l);
  for (int l = 0; j + l < n; ++l) acc[l] += f(j + l);
  float s = 0;
  for (int l = 0; l < kLanes; ++l) s += acc[l];
  return s;
}

inline float row_sum(const float* x, int64_t n) {
  return lanes_sum(n, [x](int64_t j) { return x[j]; });
}

inline float row_dot(const float* a, const float* b, int64_t n) {
  return lanes_sum(n, [a, b](int64_t j) { return a[j] * b[j]; });
}

// The largest value of x[0..n) (-inf when n == 0), NaN when any element is NaN. A max that
// skipped NaN would make a row of NaN scores look like a row of masked ones (max -inf), which
// callers turn into zeros: NaN must come out as NaN. AVX-512 where present (rows.cc): the portable
// loop compiles to one element at a time (nan_max's NaN test).
float row_max(const float* x, int64_t n);

// Returns sum_j exp(x[j] - shift); when y is not null also writes y[j] = scale * exp(x[j] - shift)
// (y may alias x). exp(-inf) is exactly 0. The SIMD versions use a Cephes-style polynomial
// (about 1 ulp); the scalar fallback uses std::exp.
float row_exp_sum(const float* x, int64_t n, float shift, float scale, float* y);

// Dropout of a run of n elements that starts at element i0 of the Philox stream (seed, offset):
// y[j] = x[j] * (philox_keep(seed, offset, i0 + j, p) ? scale : 0) (a dropped NaN stays NaN). y may alias x. Defined
// in dropout.cc; attention.cc drops its probability rows through it.
void dropout_run(const float* x, float* y, int64_t n, float p, float scale, uint64_t seed, uint64_t offset, uint64_t i0);
// The same mask applied to two runs at once (one Philox evaluation for both): y = x · factor and,
// when x2 is not null, y2 = x2 · factor. The LoRA backward (lora.cc) masks x and the input gradient.
void dropout_run2(const float* x, float* y, const float* x2, float* y2, int64_t n, float p, float scale, uint64_t seed,
                  uint64_t offset, uint64_t i0);


// Rows per thread chunk for rows of `cols` elements (about kComputeGrain elements a chunk).
inline int64_t row_grain(int64_t cols) { return std::max<int64_t>(1, kComputeGrain / std::max<int64_t>(1, cols)); }

}  // namespace cpu
}  // namespace lowrank
