// Dropout from the Philox stream on the GPU, twin of native/cpu/dropout.cc: the mask is recomputed
// from (seed, offset, index), never stored.
#include <cfloat>
#include <cmath>

#include "../core/philox.h"
#include "../ops/dropout.h"
#include "common.cuh"
#include "reduce.cuh"

namespace lowrank {
namespace cuda {
namespace {


__global__ void dropout_kernel(const float* x, float* y, int64_t n, float p, float scale, uint64_t seed, uint64_t offset) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)blockDim.x * gridDim.x)
    y[i] = x[i] * (philox_keep(seed, offset, static_cast<uint64_t>(i), p) ? scale : 0.0f);  // a dropped NaN stays NaN
}

}  // namespace

void dropout_f32(const float* x, float* y, int64_t n, float p, float scale, uint64_t seed, uint64_t offset) {
  if (n == 0) return;
  dropout_kernel<<<grid_for(n, kThreads), kThreads, 0, current_stream()>>>(x, y, n, p, scale, seed, offset);
  LR_CUDA_LAUNCH_CHECK("dropout_f32");
}

}  // namespace cuda
}  // namespace lowrank
