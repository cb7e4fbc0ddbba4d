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


// Thread t takes the elements of one Philox block: with the stream's 64-element groups counted from
// the group holding element 0 (at stream position offset), group t / 16, elements l, l+16, l+32,
// l+48 of it for l = t % 16 (those inside [0, n)). One evaluation gives all four decisions, and
// each of the four stores runs over 16 consecutive elements per half-warp.
// With residual, y = residual + x·factor with the product rounded first (__fmul_rn: no fused
// multiply-add), the bits of the dropout and the add run one after the other.
__global__ void dropout_kernel(const float* x, float* y, int64_t n, float p, float scale, uint64_t seed, uint64_t offset,
                               const float* residual) {
  const int64_t phase = int64_t(offset & 63), threads = (n + phase + 63) / 64 * 16;
  for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < threads; t += (int64_t)blockDim.x * gridDim.x) {
    const int64_t first = (t / 16) * 64 + (t % 16) - phase;  // element index of word 0
    const Philox4 b = philox_keep_block(seed, offset + uint64_t(first));
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      const int64_t i = first + 16 * w;
      if (i < 0 || i >= n) continue;
      const float dropped = __fmul_rn(x[i], philox_unit(b.v[w]) >= p ? scale : 0.0f);  // a dropped NaN stays NaN
      y[i] = residual ? __fadd_rn(residual[i], dropped) : dropped;
    }
  }
}

}  // namespace

void dropout_f32(const float* x, float* y, int64_t n, float p, float scale, uint64_t seed, uint64_t offset, const float* residual) {
  if (n == 0) return;
  dropout_kernel<<<grid_for((n + 63) / 64 * 16 + 16, kThreads), kThreads, 0, current_stream()>>>(x, y, n, p, scale, seed, offset, residual);
  LR_CUDA_LAUNCH_CHECK("dropout_f32");
}

}  // namespace cuda
}  // namespace lowrank
