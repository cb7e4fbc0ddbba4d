// Block-wide reductions for the row-wise CUDA kernels (layernorm, softmax, crossentropy,
// attention): one block per row, a fixed tree so that every result is deterministic.
#pragma once
#include "../core/nanmath.h"

namespace lowrank {
namespace cuda {

constexpr int kThreads = 256;  // per block; a multiple of 32
constexpr int kWarps = kThreads / 32;

struct SumOp {
  template <typename T>
  __device__ T operator()(T a, T b) const { return a + b; }
};
// nan_max, not fmaxf: a row of NaN scores must not reduce to -inf (core/nanmath.h).
struct MaxOp {
  __device__ float operator()(float a, float b) const { return nan_max(a, b); }
};

// Reduces v over the block (blockDim.x == kThreads) in a fixed tree; every thread gets the result.
template <typename T, typename Op>
__device__ T block_reduce(T v, Op op, T identity) {
  __shared__ T partial[kWarps];
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();  // an earlier call may still be reading partial
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = v;
  __syncthreads();
  v = identity;
  for (int w = 0; w < kWarps; ++w) v = op(v, partial[w]);
  return v;
}

}  // namespace cuda
}  // namespace lowrank
