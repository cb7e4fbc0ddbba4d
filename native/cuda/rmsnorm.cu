// RMS norm on the GPU, twin of native/cpu/rmsnorm.cc (test/gpu checks it against the CPU):
// one block per row.
#include <cmath>

#include "../ops/rmsnorm.h"
#include "common.cuh"
#include "reduce.cuh"

namespace lowrank {
namespace cuda {
namespace {

__global__ void rms_norm_kernel(const float* x, const float* w, float* y, float* rstd, int64_t C, float eps) {
  const float* xr = x + blockIdx.x * C;
  float* yr = y + blockIdx.x * C;
  float v = 0;
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x) v += xr[j] * xr[j];
  const float r = rsqrtf(block_reduce(v, SumOp(), 0.0f) / float(C) + eps);
  // (x * rstd) * w, in LlamaRMSNorm's order.
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x) yr[j] = xr[j] * r * (w ? w[j] : 1.0f);
  if (threadIdx.x == 0) rstd[blockIdx.x] = r;
}

// dx = rstd * (g - xhat * mean(g * xhat)), g = dy * w, xhat = x * rstd.
__global__ void rms_norm_dx_kernel(const float* x, const float* w, const float* rstd, const float* dy, float* dx,
                                   int64_t C) {
  const int64_t off = blockIdx.x * C;
  const float r = rstd[blockIdx.x];
  float sgx = 0;
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x) sgx += dy[off + j] * (w ? w[j] : 1.0f) * x[off + j];
  const float gx_mean = block_reduce(sgx, SumOp(), 0.0f) * r / float(C);
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x) {
    const float g = dy[off + j] * (w ? w[j] : 1.0f);
    dx[off + j] = r * (g - x[off + j] * r * gx_mean);
  }
}

// dw: block (32, kRowSplit) sums 32 columns; thread row ty takes rows ty, ty + kRowSplit, ... and
// the kRowSplit partial sums are added in order by ty == 0.
constexpr int kRowSplit = 16;
__global__ void rms_norm_dw_kernel(const float* x, const float* rstd, const float* dy, float* dw, int64_t N, int64_t C) {
  __shared__ float pw[kRowSplit][32];
  const int64_t c = blockIdx.x * 32 + threadIdx.x;
  float sw = 0;
  if (c < C)
    for (int64_t n = threadIdx.y; n < N; n += kRowSplit) sw += dy[n * C + c] * (x[n * C + c] * rstd[n]);
  pw[threadIdx.y][threadIdx.x] = sw;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    for (int k = 1; k < kRowSplit; ++k) sw += pw[k][threadIdx.x];
    dw[c] = sw;
  }
}

}  // namespace

void rms_norm_f32(const float* x, const float* w, float* y, float* rstd, int64_t N, int64_t C, float eps) {
  if (N == 0) return;
  rms_norm_kernel<<<unsigned(N), kThreads, 0, current_stream()>>>(x, w, y, rstd, C, eps);
  LR_CUDA_LAUNCH_CHECK("rms_norm_f32");
}

void rms_norm_backward_f32(const float* x, const float* w, const float* rstd, const float* dy, float* dx, float* dw,
                           int64_t N, int64_t C) {
  if (N > 0) {
    rms_norm_dx_kernel<<<unsigned(N), kThreads, 0, current_stream()>>>(x, w, rstd, dy, dx, C);
    LR_CUDA_LAUNCH_CHECK("rms_norm_backward_f32 (dx)");
  }
  if (dw && C > 0) {
    rms_norm_dw_kernel<<<unsigned((C + 31) / 32), dim3(32, kRowSplit), 0, current_stream()>>>(x, rstd, dy, dw, N, C);
    LR_CUDA_LAUNCH_CHECK("rms_norm_backward_f32 (dw)");
  }
}

}  // namespace cuda
}  // namespace lowrank
