// Layer norm on the GPU, twin of native/cpu/layernorm.cc (test/gpu checks it against the CPU):
// one block per row.
#include <cfloat>
#include <cmath>

#include "../ops/layernorm.h"
#include "common.cuh"
#include "reduce.cuh"

namespace lowrank {
namespace cuda {
namespace {


__global__ void layer_norm_kernel(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd,
                                  int64_t C, float eps) {
  const float* xr = x + blockIdx.x * C;
  float* yr = y + blockIdx.x * C;
  float s = 0;
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x) s += xr[j];
  const float m = block_reduce(s, SumOp(), 0.0f) / float(C);
  float v = 0;
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x) v += (xr[j] - m) * (xr[j] - m);
  const float r = rsqrtf(block_reduce(v, SumOp(), 0.0f) / float(C) + eps);
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x)
    yr[j] = (xr[j] - m) * r * (w ? w[j] : 1.0f) + (b ? b[j] : 0.0f);
  if (threadIdx.x == 0) {
    mean[blockIdx.x] = m;
    rstd[blockIdx.x] = r;
  }
}

// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * w.
__global__ void layer_norm_dx_kernel(const float* x, const float* w, const float* mean, const float* rstd, const float* dy,
                                     float* dx, int64_t C) {
  const int64_t off = blockIdx.x * C;
  const float m = mean[blockIdx.x], r = rstd[blockIdx.x];
  float sg = 0, sgx = 0;
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x) {
    const float g = dy[off + j] * (w ? w[j] : 1.0f);
    sg += g;
    sgx += g * (x[off + j] - m) * r;
  }
  const float g_mean = block_reduce(sg, SumOp(), 0.0f) / float(C);
  const float gx_mean = block_reduce(sgx, SumOp(), 0.0f) / float(C);
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x) {
    const float g = dy[off + j] * (w ? w[j] : 1.0f);
    dx[off + j] = r * (g - g_mean - (x[off + j] - m) * r * gx_mean);
  }
}

// dw, db: block (32, kRowSplit) sums 32 columns; thread row ty takes rows ty, ty + kRowSplit, ...
// and the kRowSplit partial sums are added in order by ty == 0.
constexpr int kRowSplit = 16;
__global__ void layer_norm_dwdb_kernel(const float* x, const float* mean, const float* rstd, const float* dy, float* dw,
                                       float* db, int64_t N, int64_t C) {
  __shared__ float pw[kRowSplit][32], pb[kRowSplit][32];
  const int64_t c = blockIdx.x * 32 + threadIdx.x;
  float sw = 0, sb = 0;
  if (c < C) {
    for (int64_t n = threadIdx.y; n < N; n += kRowSplit) {
      const float g = dy[n * C + c];
      sw += g * (x[n * C + c] - mean[n]) * rstd[n];
      sb += g;
    }
  }
  pw[threadIdx.y][threadIdx.x] = sw;
  pb[threadIdx.y][threadIdx.x] = sb;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    for (int k = 1; k < kRowSplit; ++k) {
      sw += pw[k][threadIdx.x];
      sb += pb[k][threadIdx.x];
    }
    if (dw) dw[c] = sw;
    if (db) db[c] = sb;
  }
}

}  // namespace

void layer_norm_f32(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd, int64_t N, int64_t C,
                    float eps) {
  if (N == 0) return;
  layer_norm_kernel<<<unsigned(N), kThreads, 0, current_stream()>>>(x, w, b, y, mean, rstd, C, eps);
  LR_CUDA_LAUNCH_CHECK("layer_norm_f32");
}

void layer_norm_backward_f32(const float* x, const float* w, const float* mean, const float* rstd, const float* dy, float* dx,
                             float* dw, float* db, int64_t N, int64_t C) {
  if (N > 0) {
    layer_norm_dx_kernel<<<unsigned(N), kThreads, 0, current_stream()>>>(x, w, mean, rstd, dy, dx, C);
    LR_CUDA_LAUNCH_CHECK("layer_norm_backward_f32 (dx)");
  }
  if ((dw || db) && C > 0) {
    layer_norm_dwdb_kernel<<<unsigned((C + 31) / 32), dim3(32, kRowSplit), 0, current_stream()>>>(x, mean, rstd, dy, dw, db, N, C);
    LR_CUDA_LAUNCH_CHECK("layer_norm_backward_f32 (dw, db)");
  }
}

}  // namespace cuda
}  // namespace lowrank
