// Softmax and log-softmax over rows on the GPU, twin of native/cpu/softmax.cc: one block per row.
#include <cfloat>
#include <cmath>

#include "../ops/softmax.h"
#include "common.cuh"
#include "reduce.cuh"

namespace lowrank {
namespace cuda {
namespace {


__global__ void softmax_kernel(const float* x, float* y, int64_t cols, bool log) {
  const float* xr = x + blockIdx.x * cols;
  float* yr = y + blockIdx.x * cols;
  float m = -INFINITY;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) m = nan_max(m, xr[j]);
  m = block_reduce(m, MaxOp(), -INFINITY);
  float s = 0;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) s += expf(xr[j] - m);
  s = block_reduce(s, SumOp(), 0.0f);
  const float lse = m + logf(s);
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) yr[j] = log ? xr[j] - lse : expf(xr[j] - lse);
}

__global__ void softmax_backward_kernel(const float* y, const float* dy, float* dx, int64_t cols, bool log) {
  const int64_t off = blockIdx.x * cols;
  float s = 0;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) s += log ? dy[off + j] : dy[off + j] * y[off + j];
  s = block_reduce(s, SumOp(), 0.0f);
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x)
    dx[off + j] = log ? dy[off + j] - expf(y[off + j]) * s : y[off + j] * (dy[off + j] - s);
}

}  // namespace

void softmax_f32(const float* x, float* y, int64_t rows, int64_t cols, bool log) {
  if (rows == 0) return;
  softmax_kernel<<<unsigned(rows), kThreads, 0, current_stream()>>>(x, y, cols, log);
  LR_CUDA_LAUNCH_CHECK("softmax_f32");
}

void softmax_backward_f32(const float* y, const float* dy, float* dx, int64_t rows, int64_t cols, bool log) {
  if (rows == 0) return;
  softmax_backward_kernel<<<unsigned(rows), kThreads, 0, current_stream()>>>(y, dy, dx, cols, log);
  LR_CUDA_LAUNCH_CHECK("softmax_backward_f32");
}

}  // namespace cuda
}  // namespace lowrank
