// Cross-entropy over a vocabulary on the GPU, twin of native/cpu/crossentropy.cc: one block per row.
#include <cfloat>
#include <cmath>

#include "../core/dtype.h"
#include "../ops/creation.h"
#include "../ops/crossentropy.h"
#include "common.cuh"
#include "bf16x4.cuh"  // after common.cuh: the CPU emulator swaps that for its own uint2 and float4
#include "reduce.cuh"

namespace lowrank {
namespace cuda {
namespace {


__device__ bool bad_target(int32_t t, int64_t V, int32_t ignore) { return t != ignore && (t < 0 || t >= V); }

__global__ void cross_entropy_kernel(const float* logits, const int32_t* targets, float* lse, float* loss, int64_t V,
                                     int32_t ignore, unsigned long long* first_bad) {
  const int64_t n = blockIdx.x;
  const int32_t t = targets[n];
  if (t == ignore || bad_target(t, V, ignore)) {
    if (threadIdx.x == 0) {
      lse[n] = loss[n] = 0.0f;
      if (t != ignore) atomicMin(first_bad, static_cast<unsigned long long>(n));
    }
    return;
  }
  const float* xr = logits + n * V;
  float m = -INFINITY;
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) m = nan_max(m, xr[j]);
  m = block_reduce(m, MaxOp(), -INFINITY);
  float s = 0;
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) s += expf(xr[j] - m);
  s = block_reduce(s, SumOp(), 0.0f);
  if (threadIdx.x == 0) {
    lse[n] = m + logf(s);
    loss[n] = lse[n] - xr[t];
  }
}

// One block: the sum of loss (double, fixed order) and of counted rows.
__global__ void cross_entropy_total_kernel(const float* loss, const int32_t* targets, float* total, int64_t N, int32_t ignore,
                                           Reduction reduction) {
  double s = 0, c = 0;
  for (int64_t n = threadIdx.x; n < N; n += blockDim.x) {
    s += loss[n];
    c += targets[n] != ignore;
  }
  s = block_reduce(s, SumOp(), 0.0);
  c = block_reduce(c, SumOp(), 0.0);
  if (threadIdx.x == 0) total[0] = reduction == Reduction::Sum ? float(s) : c > 0 ? float(s / c) : NAN;
}

// g_all = dout[0] (Sum) or dout[0] / count (Mean; 0 when nothing is counted, then every row is ignored).
__global__ void cross_entropy_scale_kernel(const int32_t* targets, const float* dout, float* g_all, int64_t N, int32_t ignore,
                                           Reduction reduction) {
  float c = 0;
  for (int64_t n = threadIdx.x; n < N; n += blockDim.x) c += targets[n] != ignore;
  c = block_reduce(c, SumOp(), 0.0f);
  if (threadIdx.x == 0) g_all[0] = reduction == Reduction::Sum ? dout[0] : c > 0 ? dout[0] / c : 0.0f;
}

__global__ void cross_entropy_backward_kernel(const float* logits, const int32_t* targets, const float* lse, const float* dout,
                                              const float* g_all, float* dlogits, int64_t V, int32_t ignore) {
  const int64_t n = blockIdx.x;
  const int32_t t = targets[n];
  float* dr = dlogits + n * V;
  const float* xr = logits + n * V;
  if (t == ignore) {
    // 0, or NaN when the row's softmax is NaN (a NaN or +inf logit, or none finite), as PyTorch (crossentropy.cc)
    float m = -INFINITY;
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) m = nan_max(m, xr[j]);
    m = block_reduce(m, MaxOp(), -INFINITY);
    const float value = isfinite(m) ? 0.0f : NAN;
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) dr[j] = value;
    return;
  }
  const float g = g_all ? g_all[0] : dout[n];
  const float l = lse[n];
  // exp(x - lse) sums to 1 only within the rounding of lse: scaled by 1 / its actual sum, the row sums
  // exactly as softmax's own division makes it (native/cpu/crossentropy.cc does the same)
  float s = 0;
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) s += expf(xr[j] - l);
  const float scale = g / block_reduce(s, SumOp(), 0.0f);
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) dr[j] = scale * expf(xr[j] - l) - (j == t ? g : 0.0f);
}


// Adds x to a running (max m, Σ exp(x - m)): the sum is rescaled when the max grows. A NaN makes the
// sum NaN (as the two-pass max-then-sum would); -inf adds nothing.
__device__ __forceinline__ void online_add(float x, float& m, float& s) {
  if (x > m) {
    s = s * expf(m - x) + 1.0f;
    m = x;
  } else if (x != -INFINITY) {
    s += expf(x - m);
  }
}

// One block per row: the max and the sum of exponentials in one pass over the logits (each thread
// a running pair, then combined over the block), then the loss and (optionally) the unscaled
// gradient in a second pass. The logits' rows (ld apart) are read 4 at a time where ld and the
// pointers allow (the rows are ~200 KB: a third pass would come from DRAM again, not from L2).
__global__ void cross_entropy_rows_kernel(const float* logits, const int32_t* targets, float* loss, float* counted,
                                          void* grad, bool grad_bf16, int64_t V, int64_t ld, bool vec, int32_t ignore,
                                          int32_t* first_bad) {
  const int64_t n = blockIdx.x;
  const int32_t t = targets[n];
  const bool ignored = t == ignore, bad = bad_target(t, V, ignore);
  const float* xr = logits + n * ld;
  const int64_t V4 = vec ? V / 4 * 4 : 0;  // [0, V4) by float4, the rest one by one
  float lse = 0, m = -INFINITY;
  if (!ignored && !bad) {
    float s = 0;
    for (int64_t j = 4 * int64_t(threadIdx.x); j < V4; j += 4 * int64_t(blockDim.x)) {
      const float4 x = __ldg(reinterpret_cast<const float4*>(xr + j));
      online_add(x.x, m, s), online_add(x.y, m, s), online_add(x.z, m, s), online_add(x.w, m, s);
    }
    for (int64_t j = V4 + threadIdx.x; j < V; j += blockDim.x) online_add(xr[j], m, s);
    const float M = block_reduce(m, MaxOp(), -INFINITY);
    s = s == 0.0f ? 0.0f : s * expf(m - M);  // s is 0 or NaN (a NaN seen) while m is still -inf
    lse = M + logf(block_reduce(s, SumOp(), 0.0f));
    m = M;
  } else if (ignored && grad) {  // the fill below needs to know whether the row has a NaN or +inf
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) m = nan_max(m, xr[j]);
    m = block_reduce(m, MaxOp(), -INFINITY);
  }
  if (threadIdx.x == 0) {
    loss[n] = ignored || bad ? 0.0f : lse - xr[t];
    counted[n] = ignored || bad ? 0.0f : 1.0f;
    if (bad) atomicMin(first_bad, static_cast<int32_t>(n));
  }
  if (!grad) return;
  // Every thread has read the target logit's row through the reductions' barriers before any writes.
  __syncthreads();
  const float fill = ignored && !isfinite(m) ? NAN : 0.0f;
  const bool plain = ignored || bad;
  auto g_of = [&](float x, int64_t j) { return plain ? fill : expf(x - lse) - (j == t ? 1.0f : 0.0f); };
  for (int64_t j = 4 * int64_t(threadIdx.x); j < V4; j += 4 * int64_t(blockDim.x)) {
    const float4 x = __ldg(reinterpret_cast<const float4*>(xr + j));
    const float g0 = g_of(x.x, j), g1 = g_of(x.y, j + 1), g2 = g_of(x.z, j + 2), g3 = g_of(x.w, j + 3);
    if (grad_bf16)
      *reinterpret_cast<uint2*>(static_cast<uint16_t*>(grad) + n * ld + j) = bf16x4_pack(g0, g1, g2, g3);
    else
      *reinterpret_cast<float4*>(static_cast<float*>(grad) + n * ld + j) = make_float4(g0, g1, g2, g3);
  }
  for (int64_t j = V4 + threadIdx.x; j < V; j += blockDim.x) {
    const float g = g_of(xr[j], j);
    if (grad_bf16) static_cast<uint16_t*>(grad)[n * ld + j] = f32_to_bf16(g);
    else static_cast<float*>(grad)[n * ld + j] = g;
  }
}
}  // namespace

void cross_entropy_rows_f32(const float* logits, const int32_t* targets, float* loss, float* counted, void* grad,
                            bool grad_bf16, int64_t N, int64_t V, int64_t ld, int32_t ignore_index, int32_t* first_bad) {
  if (N == 0) return;
  // float4 loads (and 8- or 16-byte stores of the gradient) where every row starts 16-byte aligned
  const bool vec = ld % 4 == 0 && reinterpret_cast<uintptr_t>(logits) % 16 == 0 && reinterpret_cast<uintptr_t>(grad) % 16 == 0;
  cross_entropy_rows_kernel<<<unsigned(N), kThreads, 0, current_stream()>>>(logits, targets, loss, counted, grad, grad_bf16, V,
                                                                            ld, vec, ignore_index, first_bad);
  LR_CUDA_LAUNCH_CHECK("cross_entropy_rows_f32");
}

// Reporting an invalid target needs its row on the host: one small copy and a wait per call.
void cross_entropy_f32(const float* logits, const int32_t* targets, float* lse, float* loss, float* total, int64_t N, int64_t V,
                       int32_t ignore_index, Reduction reduction, int64_t* invalid) {
  if (N == 0) {
    if (reduction != Reduction::None) {
      fill(total, DType::F32, 1, reduction == Reduction::Sum ? 0.0 : NAN);
    }
    return;
  }
  cudaStream_t stream = current_stream();
  unsigned long long* first_bad = scratch<unsigned long long>(1);
  LR_CUDA_CHECK(cudaMemsetAsync(first_bad, 0xFF, sizeof(unsigned long long), stream));
  cross_entropy_kernel<<<unsigned(N), kThreads, 0, stream>>>(logits, targets, lse, loss, V, ignore_index, first_bad);
  LR_CUDA_LAUNCH_CHECK("cross_entropy_f32");
  if (reduction != Reduction::None) {
    cross_entropy_total_kernel<<<1, kThreads, 0, stream>>>(loss, targets, total, N, ignore_index, reduction);
    LR_CUDA_LAUNCH_CHECK("cross_entropy_f32 (total)");
  }
  unsigned long long bad = 0;
  LR_CUDA_CHECK(cudaMemcpyAsync(&bad, first_bad, sizeof(bad), cudaMemcpyDeviceToHost, stream));
  release(first_bad);
  LR_CUDA_CHECK(cudaStreamSynchronize(stream));
  if (bad == ~0ull) return;
  int32_t target = 0;
  LR_CUDA_CHECK(cudaMemcpyAsync(&target, targets + bad, sizeof(target), cudaMemcpyDeviceToHost, stream));
  LR_CUDA_CHECK(cudaStreamSynchronize(stream));
  invalid[0] = static_cast<int64_t>(bad);
  invalid[1] = target;
}

void cross_entropy_backward_f32(const float* logits, const int32_t* targets, const float* lse, const float* dout, float* dlogits,
                                int64_t N, int64_t V, int32_t ignore_index, Reduction reduction) {
  if (N == 0) return;
  cudaStream_t stream = current_stream();
  float* g_all = nullptr;
  if (reduction != Reduction::None) {
    g_all = scratch<float>(1);
    cross_entropy_scale_kernel<<<1, kThreads, 0, stream>>>(targets, dout, g_all, N, ignore_index, reduction);
    LR_CUDA_LAUNCH_CHECK("cross_entropy_backward_f32 (scale)");
  }
  cross_entropy_backward_kernel<<<unsigned(N), kThreads, 0, stream>>>(logits, targets, lse, dout, g_all, dlogits, V, ignore_index);
  LR_CUDA_LAUNCH_CHECK("cross_entropy_backward_f32");
  if (g_all) release(g_all);
}

}  // namespace cuda
}  // namespace lowrank
