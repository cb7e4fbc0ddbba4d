// RMS norm on the CPU: rows split across threads, each row a few passes through rows.h.
#include <algorithm>
#include <cmath>
#include <vector>

#include "../ops/rmsnorm.h"
#include "parallel.h"
#include "rows.h"

namespace lowrank {
namespace cpu {
namespace {
// RMS norm's dw is a sum over all rows. The rows are cut into this many fixed chunks (not one per
// thread), each summed on its own, and the chunk sums added in order: the result is the same for
// any thread count.
constexpr int64_t kNormChunks = 64;
}  // namespace

void rms_norm_f32(const float* x, const float* w, float* y, float* rstd, int64_t N, int64_t C, float eps) {
  parallel_for(N, row_grain(C), [&](int64_t r0, int64_t r1) {
    for (int64_t n = r0; n < r1; ++n) {
      const float* xr = x + n * C;
      float* yr = y + n * C;
      const float s = 1.0f / std::sqrt(row_dot(xr, xr, C) / float(C) + eps);
      // (x * rstd) * w, in LlamaRMSNorm's order, so float32 results match it rounding for rounding.
      for (int64_t j = 0; j < C; ++j) yr[j] = xr[j] * s;
      if (w)
        for (int64_t j = 0; j < C; ++j) yr[j] *= w[j];
      rstd[n] = s;
    }
  });
}

// With xhat = x * rstd and g = dy * w (dy when w is null):
//   dx = rstd * (g - xhat * mean(g * xhat)),  dw = sum_rows dy * xhat.
void rms_norm_backward_f32(const float* x, const float* w, const float* rstd, const float* dy, float* dx, float* dw,
                           int64_t N, int64_t C) {
  if (N == 0) {
    if (dw) std::fill(dw, dw + C, 0.0f);
    return;
  }
  const int64_t chunks = std::min(N, kNormChunks);
  // partial[c] holds chunk c's dw sums.
  std::vector<float> partial(size_t(dw ? chunks * C : 0), 0.0f);
  parallel_for(chunks, row_grain(C * (N / chunks)), [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      float* pw = partial.empty() ? nullptr : partial.data() + c * C;
      for (int64_t n = N * c / chunks; n < N * (c + 1) / chunks; ++n) {
        const float* xr = x + n * C;
        const float* gr = dy + n * C;
        float* dxr = dx + n * C;
        const float s = rstd[n];
        const float gx_mean =
            (w ? lanes_sum(C, [=](int64_t j) { return gr[j] * w[j] * xr[j]; }) : row_dot(gr, xr, C)) * s / float(C);
        for (int64_t j = 0; j < C; ++j) {
          const float g = w ? gr[j] * w[j] : gr[j];
          dxr[j] = s * (g - xr[j] * s * gx_mean);
        }
        if (pw)
          for (int64_t j = 0; j < C; ++j) pw[j] += gr[j] * (xr[j] * s);
      }
    }
  });
  if (partial.empty()) return;
  for (int64_t j = 0; j < C; ++j) {
    float sw = 0;
    for (int64_t c = 0; c < chunks; ++c) sw += partial[size_t(c * C + j)];
    dw[j] = sw;
  }
}

}  // namespace cpu
}  // namespace lowrank
