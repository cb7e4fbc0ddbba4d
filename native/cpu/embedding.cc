// Embedding kernels on the CPU.
#include "../ops/embedding.h"

#include <algorithm>
#include <cstring>

#include "parallel.h"

namespace lowrank {
namespace cpu {
namespace {
// Columns per unit of scatter-add work: 16 floats fill a 64-byte cache line.
constexpr int64_t kCols = 16;

bool valid(int32_t id, int64_t vocab) { return id >= 0 && id < vocab; }
}  // namespace

void embedding_find_bad_id(const int32_t* ids, int64_t n, int64_t vocab, int64_t* first) {
  *first = -1;
  for (int64_t i = 0; i < n && *first < 0; ++i)
    if (!valid(ids[i], vocab)) *first = i;
}

void embedding_gather_f32(const int32_t* ids, int64_t n, const float* weight, int64_t vocab, int64_t dim, float* out) {
  parallel_for(n, std::max<int64_t>(1, kComputeGrain / std::max<int64_t>(dim, 1)), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      float* dst = out + i * dim;
      if (valid(ids[i], vocab)) std::memcpy(dst, weight + ids[i] * dim, static_cast<size_t>(dim) * sizeof(float));
      else std::fill(dst, dst + dim, 0.0f);
    }
  });
}

void embedding_gather_bf16(const int32_t* ids, int64_t n, const uint16_t* weight, int64_t vocab, int64_t dim, float* out) {
  parallel_for(n, std::max<int64_t>(1, kComputeGrain / std::max<int64_t>(dim, 1)), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      float* dst = out + i * dim;
      const uint16_t* src = valid(ids[i], vocab) ? weight + ids[i] * dim : nullptr;
      for (int64_t j = 0; j < dim; ++j) dst[j] = src ? bf16_to_f32(src[j]) : 0.0f;
    }
  });
}

// Threads split the columns, not the ids: each walks every id in order over its own columns, so a
// repeated id is summed in order of position without locks or atomics, whatever the thread count.
void embedding_scatter_add_f32(const int32_t* ids, int64_t n, const float* grad, int64_t vocab, int64_t dim,
                               float* dweight) {
  int64_t blocks = (dim + kCols - 1) / kCols;
  parallel_for(blocks, std::max<int64_t>(1, kComputeGrain / std::max<int64_t>(n * kCols, 1)), [&](int64_t b0, int64_t b1) {
    int64_t c0 = b0 * kCols, c1 = std::min(dim, b1 * kCols);
    for (int64_t i = 0; i < n; ++i) {
      if (!valid(ids[i], vocab)) continue;
      float* dst = dweight + ids[i] * dim;
      const float* src = grad + i * dim;
      for (int64_t d = c0; d < c1; ++d) dst[d] += src[d];
    }
  });
}

}  // namespace cpu
}  // namespace lowrank
