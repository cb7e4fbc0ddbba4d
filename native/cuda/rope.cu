// Rotary position embeddings on the GPU, twin of native/cpu/rope.cc (test/gpu checks it against
// the CPU): one thread per element.
#include "../ops/rope.h"
#include "common.cuh"

namespace lowrank {
namespace cuda {
namespace {

constexpr int kThreads = 256;

__global__ void rope_kernel(const float* x, const float* cos, const float* sin, float* y, int64_t n, int64_t T,
                            int64_t D, bool transpose) {
  const int64_t h = D / 2;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)blockDim.x * gridDim.x) {
    const int64_t j = i % D, p = ((i / D) % T) * D;  // p: the row of cos/sin
    const bool lo = j < h;
    const int64_t k = lo ? i + h : i - h;            // the partner element of x
    // Forward: the partner is scaled by s[j]; the transpose scales it by its own s (j ± h).
    const float s = sin[p + (transpose ? (lo ? j + h : j - h) : j)];
    const float sign = lo != transpose ? -1.0f : 1.0f;
    y[i] = x[i] * cos[p + j] + sign * (x[k] * s);
  }
}

}  // namespace

void rope_f32(const float* x, const float* cos, const float* sin, float* y, int64_t rows, int64_t T, int64_t D,
              bool transpose) {
  const int64_t n = rows * T * D;
  if (n == 0) return;
  rope_kernel<<<grid_for(n, kThreads), kThreads, 0, current_stream()>>>(x, cos, sin, y, n, T, D, transpose);
  LR_CUDA_LAUNCH_CHECK("rope_f32");
}

}  // namespace cuda
}  // namespace lowrank
