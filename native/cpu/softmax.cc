// Softmax and log-softmax on the CPU, row by row (rows.h).
#include <algorithm>
#include <cmath>
#include <limits>

#include "../ops/softmax.h"
#include "parallel.h"
#include "rows.h"

namespace lowrank {
namespace cpu {


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


}  // namespace cpu
}  // namespace lowrank
