// Rotary position embeddings on the CPU: (row, position) pairs split across threads.
#include <algorithm>

#include "../ops/rope.h"
#include "parallel.h"

namespace lowrank {
namespace cpu {

void rope_f32(const float* x, const float* cos, const float* sin, float* y, int64_t rows, int64_t T, int64_t D,
              bool transpose) {
  const int64_t h = D / 2;
  // Forward: y[j] = x[j]·c[j] − x[j+h]·s[j] (j < h), x[j]·c[j] + x[j−h]·s[j] (j >= h).
  // Transpose: y[j] = x[j]·c[j] + x[j+h]·s[j+h] (j < h), x[j]·c[j] − x[j−h]·s[j−h] (j >= h).
  parallel_for(rows * T, std::max<int64_t>(1, kComputeGrain / std::max<int64_t>(1, D)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = x + r * D;
      float* yr = y + r * D;
      const float* c = cos + (r % T) * D;
      const float* s = sin + (r % T) * D;
      if (!transpose) {
        for (int64_t j = 0; j < h; ++j) yr[j] = xr[j] * c[j] - xr[j + h] * s[j];
        for (int64_t j = h; j < D; ++j) yr[j] = xr[j] * c[j] + xr[j - h] * s[j];
      } else {
        for (int64_t j = 0; j < h; ++j) yr[j] = xr[j] * c[j] + xr[j + h] * s[j + h];
        for (int64_t j = h; j < D; ++j) yr[j] = xr[j] * c[j] - xr[j - h] * s[j - h];
      }
    }
  });
}

}  // namespace cpu
}  // namespace lowrank
