// Layer norm, softmax, cross-entropy and dropout on the CPU (attention is in attention.cc).
// Every op is row-wise: rows are split across threads with parallel_for, and each row is a few
// passes over contiguous memory through the primitives of nn_rows.h.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "../ops/nn.h"
#include "nn_rows.h"
#include "parallel.h"

namespace lowrank {
namespace cpu {
namespace {
constexpr int64_t kGrain = 1 << 14;  // elements per thread chunk below which threads don't pay

int64_t row_grain(int64_t cols) { return std::max<int64_t>(1, kGrain / std::max<int64_t>(1, cols)); }

// Layer norm's dw/db are sums over all rows. The rows are cut into this many fixed chunks (not
// one per thread), each summed on its own, and the chunk sums added in order: the result is
// the same for any thread count.
constexpr int64_t kNormChunks = 64;
}  // namespace

// ---- layer norm ---------------------------------------------------------------------------------

void layer_norm_f32(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd, int64_t N,
                    int64_t C, float eps) {
  parallel_for(N, row_grain(C), [&](int64_t r0, int64_t r1) {
    for (int64_t n = r0; n < r1; ++n) {
      const float* xr = x + n * C;
      float* yr = y + n * C;
      const float m = row_sum(xr, C) / float(C);
      // Two passes (mean, then squared deviations): no cancellation when |mean| >> std.
      const float var = lanes_sum(C, [xr, m](int64_t j) { float d = xr[j] - m; return d * d; }) / float(C);
      const float s = 1.0f / std::sqrt(var + eps);
      for (int64_t j = 0; j < C; ++j) yr[j] = (xr[j] - m) * s;
      if (w)
        for (int64_t j = 0; j < C; ++j) yr[j] *= w[j];
      if (b)
        for (int64_t j = 0; j < C; ++j) yr[j] += b[j];
      mean[n] = m;
      rstd[n] = s;
    }
  });
}

// With xhat = (x - mean) * rstd and g = dy * w (dy when w is null):
//   dx = rstd * (g - mean(g) - xhat * mean(g * xhat)),  dw = sum_rows dy * xhat,  db = sum_rows dy.
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
  parallel_for(chunks, row_grain(C * (N / chunks)), [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      float* pw = partial.empty() ? nullptr : partial.data() + c * 2 * C;
      float* pb = pw ? pw + C : nullptr;
      for (int64_t n = N * c / chunks; n < N * (c + 1) / chunks; ++n) {
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

// ---- softmax --------------------------------------------------------------------------------------

// Subtracting the row max keeps exp in range; a row of -inf gives NaN, as in PyTorch.
void softmax_f32(const float* x, float* y, int64_t rows, int64_t cols, bool log) {
  parallel_for(rows, row_grain(cols), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = x + r * cols;
      float* yr = y + r * cols;
      const float m = row_max(xr, cols);
      if (log) {
        const float lse = m + std::log(row_exp_sum(xr, cols, m, 1.0f, nullptr));
        for (int64_t j = 0; j < cols; ++j) yr[j] = xr[j] - lse;
      } else {
        const float inv = 1.0f / row_exp_sum(xr, cols, m, 1.0f, yr);
        for (int64_t j = 0; j < cols; ++j) yr[j] *= inv;
      }
    }
  });
}

void softmax_backward_f32(const float* y, const float* dy, float* dx, int64_t rows, int64_t cols, bool log) {
  parallel_for(rows, row_grain(cols), [&](int64_t r0, int64_t r1) {
    std::vector<float> e(size_t(log ? cols : 0));  // exp(y) of one row (dx may alias dy)
    for (int64_t r = r0; r < r1; ++r) {
      const float* yr = y + r * cols;
      const float* gr = dy + r * cols;
      float* dxr = dx + r * cols;
      if (log) {
        const float s = row_sum(gr, cols);
        row_exp_sum(yr, cols, 0.0f, s, e.data());
        for (int64_t j = 0; j < cols; ++j) dxr[j] = gr[j] - e[size_t(j)];
      } else {
        const float d = row_dot(gr, yr, cols);
        for (int64_t j = 0; j < cols; ++j) dxr[j] = yr[j] * (gr[j] - d);
      }
    }
  });
}

// ---- cross-entropy --------------------------------------------------------------------------------

void cross_entropy_f32(const float* logits, const int32_t* targets, float* lse, float* loss, float* total, int64_t N,
                       int64_t V, int32_t ignore_index, Reduction reduction, int64_t* invalid) {
  for (int64_t n = 0; n < N; ++n) {
    if (targets[n] != ignore_index && (targets[n] < 0 || targets[n] >= V)) {
      invalid[0] = n;
      invalid[1] = targets[n];
      return;
    }
  }
  parallel_for(N, row_grain(V), [&](int64_t r0, int64_t r1) {
    for (int64_t n = r0; n < r1; ++n) {
      if (targets[n] == ignore_index) {
        lse[n] = loss[n] = 0.0f;
        continue;
      }
      const float* xr = logits + n * V;
      const float m = row_max(xr, V);
      lse[n] = m + std::log(row_exp_sum(xr, V, m, 1.0f, nullptr));
      loss[n] = lse[n] - xr[targets[n]];
    }
  });
  if (reduction == Reduction::None) return;
  double sum = 0;  // rows in order: deterministic
  int64_t count = 0;
  for (int64_t n = 0; n < N; ++n) {
    sum += loss[n];
    count += targets[n] != ignore_index;
  }
  // Mean over counted rows; 0/0 = NaN when all are ignored, like PyTorch.
  total[0] = reduction == Reduction::Sum ? float(sum) : count ? float(sum / double(count)) : std::numeric_limits<float>::quiet_NaN();
}

void cross_entropy_backward_f32(const float* logits, const int32_t* targets, const float* lse, const float* dout,
                                float* dlogits, int64_t N, int64_t V, int32_t ignore_index, Reduction reduction) {
  float g_all = 0;
  if (reduction != Reduction::None) {
    int64_t count = 0;
    for (int64_t n = 0; n < N; ++n) count += targets[n] != ignore_index;
    // With no counted row every row is ignored and gets 0 below; g_all is then unused.
    g_all = reduction == Reduction::Sum ? dout[0] : count ? dout[0] / float(count) : 0.0f;
  }
  parallel_for(N, row_grain(V), [&](int64_t r0, int64_t r1) {
    for (int64_t n = r0; n < r1; ++n) {
      float* dr = dlogits + n * V;
      const int32_t t = targets[n];
      if (t == ignore_index) {
        std::fill(dr, dr + V, 0.0f);
        continue;
      }
      const float g = reduction == Reduction::None ? dout[n] : g_all;
      row_exp_sum(logits + n * V, V, lse[n], g, dr);  // g * softmax
      dr[t] -= g;
    }
  });
}

// ---- dropout --------------------------------------------------------------------------------------

void dropout_f32(const float* x, float* y, int64_t n, float p, float scale, uint64_t seed, uint64_t offset) {
  parallel_for(n, kGrain, [&](int64_t i0, int64_t i1) { dropout_run(x + i0, y + i0, i1 - i0, p, scale, seed, offset, uint64_t(i0)); });
}

}  // namespace cpu
}  // namespace lowrank
