// Layer norm on the CPU: rows split across threads, each row a few passes through rows.h.
#include <algorithm>
#include <cmath>
#include <vector>

#include "../ops/layernorm.h"
#include "parallel.h"
#include "rows.h"
#include "simd.h"

namespace lowrank {
namespace cpu {
namespace {
// Layer norm's dw/db are sums over all rows. The rows are cut into this many fixed chunks (not
// one per thread), each summed on its own, and the chunk sums added in order: the result is
// the same for any thread count.
constexpr int64_t kNormChunks = 64;

// Rows [r0, r1) of the forward: plain loops that simd_variant builds for the CPU's widest vectors
// (the baseline x86-64 build has SSE2 only). A 256 x 768 layer norm, forward and backward, took
// ~20 us each on 2 Zen 5 threads built for AVX-512, 50-120 us built for SSE2.
LR_SIMD_BODY void layer_norm_rows(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd,
                                  int64_t r0, int64_t r1, int64_t C, float eps) {
  for (int64_t n = r0; n < r1; ++n) {
    const float* xr = x + n * C;
    float* yr = y + n * C;
    const float m = row_sum(xr, C) / float(C);
    // Two passes (mean, then squared deviations): no cancellation when |mean| >> std.
    const float var = lanes_sum(C, [xr, m](int64_t j) { float d = xr[j] - m; return d * d; }) / float(C);
    const float s = 1.0f / std::sqrt(var + eps);
    for (int64_t j = 0; j < C; ++j) {  // w and b are loop-invariant tests: the compiler unswitches them
      float v = (xr[j] - m) * s;
      if (w) v *= w[j];
      if (b) v += b[j];
      yr[j] = v;
    }
    mean[n] = m;
    rstd[n] = s;
  }
}
}  // namespace

void layer_norm_f32(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd, int64_t N,
                    int64_t C, float eps) {
  static const auto rows = simd_variant<layer_norm_rows>();
  parallel_for(N, row_grain(C), [&](int64_t r0, int64_t r1) { rows(x, w, b, y, mean, rstd, r0, r1, C, eps); });
}

// With xhat = (x - mean) * rstd and g = dy * w (dy when w is null):
//   dx = rstd * (g - mean(g) - xhat * mean(g * xhat)),  dw = sum_rows dy * xhat,  db = sum_rows dy.
namespace {
// Rows [r0, r1) of the backward (plain loops for simd_variant), adding their dw and db terms into
// pw and pb (null: not wanted).
LR_SIMD_BODY void layer_norm_backward_rows(const float* x, const float* w, const float* mean, const float* rstd,
                                           const float* dy, float* dx, float* pw, float* pb, int64_t r0, int64_t r1,
                                           int64_t C) {
  for (int64_t n = r0; n < r1; ++n) {
    const float* xr = x + n * C;
    const float* gr = dy + n * C;
    float* dxr = dx + n * C;
    const float m = mean[n], s = rstd[n];
    const float g_mean = (w ? row_dot(gr, w, C) : row_sum(gr, C)) / float(C);
    const float gx_mean =
        (w ? lanes_sum(C, [=](int64_t j) { return gr[j] * w[j] * (xr[j] - m); })
           : lanes_sum(C, [=](int64_t j) { return gr[j] * (xr[j] - m); })) * s / float(C);
    for (int64_t j = 0; j < C; ++j) {
      const float xhat = (xr[j] - m) * s;
      const float g = w ? gr[j] * w[j] : gr[j];
      dxr[j] = s * (g - g_mean - xhat * gx_mean);
    }
    if (pw)
      for (int64_t j = 0; j < C; ++j) pw[j] += gr[j] * ((xr[j] - m) * s);
    if (pb)
      for (int64_t j = 0; j < C; ++j) pb[j] += gr[j];
  }
}
}  // namespace

void layer_norm_backward_f32(const float* x, const float* w, const float* mean, const float* rstd, const float* dy,
                             float* dx, float* dw, float* db, int64_t N, int64_t C) {
  if (N == 0) {
    if (dw) std::fill(dw, dw + C, 0.0f);
    if (db) std::fill(db, db + C, 0.0f);
    return;
  }
  const int64_t chunks = std::min(N, kNormChunks);
  // partial[c] holds chunk c's sums: C for dw, then C for db.
  std::vector<float> partial(size_t((dw || db) ? chunks * 2 * C : 0), 0.0f);
  static const auto rows = simd_variant<layer_norm_backward_rows>();
  parallel_for(chunks, row_grain(C * (N / chunks)), [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      float* pw = partial.empty() ? nullptr : partial.data() + c * 2 * C;
      rows(x, w, mean, rstd, dy, dx, pw, pw ? pw + C : nullptr, N * c / chunks, N * (c + 1) / chunks, C);
    }
  });
  if (partial.empty()) return;
  for (int64_t j = 0; j < C; ++j) {
    float sw = 0, sb = 0;
    for (int64_t c = 0; c < chunks; ++c) {
      sw += partial[size_t(c * 2 * C + j)];
      sb += partial[size_t(c * 2 * C + C + j)];
    }
    if (dw) dw[j] = sw;
    if (db) db[j] = sb;
  }
}


}  // namespace cpu
}  // namespace lowrank
