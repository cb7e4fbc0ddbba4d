// Fused optimizer kernels on the CPU: one parallel_for over the chunk list of all tensors.
// The per-element math is shared with the CUDA twin (native/ops/optim.h).
#include "../ops/optim.h"

#include <algorithm>
#include <cmath>

#include "parallel.h"
#include "simd.h"

namespace lowrank {
namespace cpu {
namespace {
// Chunks per task: 4 x 4096 elements keeps each task well above the pool's wake-up cost.
constexpr int64_t kChunkGrain = 4;

// fn(tensor, begin, end) for each chunk of elements of the tensors, on the pool's threads.
template <typename T, typename F>
void for_each_chunk(const T* tensors, int count, F fn) {
  const std::vector<OptimChunk> chunks = optim_chunks(tensors, count);
  parallel_for(static_cast<int64_t>(chunks.size()), kChunkGrain, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) fn(tensors[chunks[c].tensor], chunks[c].begin, chunks[c].end);
  });
}

// Element(t, i) for i in [begin, end) of one tensor: a plain loop that simd_variant vectorizes.
template <auto Element, typename T>
LR_SIMD_BODY void element_range(const T& tensor, int64_t begin, int64_t end) {
  const T t = tensor;  // a local copy: stores through t.param cannot alias it
  for (int64_t i = begin; i < end; ++i) Element(t, i);
}
}  // namespace

void adamw_step_f32(const AdamWTensor* tensors, int count) {
  static const auto range = simd_variant<element_range<adamw_element, AdamWTensor>>();
  for_each_chunk(tensors, count, range);
}

void sgd_step_f32(const SGDTensor* tensors, int count) {
  static const auto range = simd_variant<element_range<sgd_element, SGDTensor>>();
  for_each_chunk(tensors, count, range);
}

void sum_pow_f32(const FloatSpan* spans, int count, double p, double* out) {
  const std::vector<OptimChunk> chunks = optim_chunks(spans, count);
  const bool inf = std::isinf(p);
  std::vector<double> partial(chunks.size());
  parallel_for(static_cast<int64_t>(chunks.size()), kChunkGrain, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const OptimChunk& chunk = chunks[c];
      const float* x = spans[chunk.tensor].data;
      double acc = 0;
      for (int64_t i = chunk.begin; i < chunk.end; ++i) {
        const double term = norm_term(x[i], p, inf);
        acc = inf ? nan_max(acc, term) : acc + term;
      }
      partial[c] = acc;
    }
  });
  std::fill(out, out + count, 0.0);
  combine_chunk_partials(chunks, partial.data(), inf, out);
}

void scale_spans_f32(const FloatSpan* spans, int count, float alpha) {
  for_each_chunk(spans, count, [alpha](const FloatSpan& s, int64_t begin, int64_t end) {
    float* x = s.data;
    for (int64_t i = begin; i < end; ++i) x[i] *= alpha;
  });
}

}  // namespace cpu
}  // namespace lowrank
