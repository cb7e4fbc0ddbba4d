// Embedding kernels on the GPU; each is checked against its CPU twin (native/cpu/embedding.cc).
#include <climits>

#include "../ops/embedding.h"
#include "common.cuh"

namespace lowrank {
namespace cuda {
namespace {
constexpr int kThreads = 256;
// Vocabulary rows owned by one scatter-add block.
constexpr int64_t kRowsPerBlock = 128;

__device__ __forceinline__ bool valid(int32_t id, int64_t vocab) { return id >= 0 && id < vocab; }

__global__ void find_bad_id_kernel(const int32_t* ids, int64_t n, int64_t vocab, unsigned long long* first) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)blockDim.x * gridDim.x)
    if (!valid(ids[i], vocab)) atomicMin(first, static_cast<unsigned long long>(i));
}

__global__ void gather_kernel(const int32_t* ids, int64_t n, const float* weight, int64_t vocab, int64_t dim, float* out) {
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n * dim; e += (int64_t)blockDim.x * gridDim.x) {
    int32_t id = ids[e / dim];
    out[e] = valid(id, vocab) ? weight[id * dim + e % dim] : 0.0f;
  }
}

// Deterministic without sorting or atomics: block (x, y) owns vocabulary rows
// [x·kRowsPerBlock, (x+1)·kRowsPerBlock) and columns [y·kThreads, (y+1)·kThreads). It walks all ids
// in order (staged through shared memory) and adds the gradient rows of the ids it owns, so each
// element sums its contributions in order of position, exactly like the CPU twin.
__global__ void scatter_add_kernel(const int32_t* ids, int64_t n, const float* grad, int64_t vocab, int64_t dim,
                                   float* dweight) {
  __shared__ int32_t tile[kThreads];
  const int64_t lo = blockIdx.x * kRowsPerBlock, hi = min(lo + kRowsPerBlock, vocab);
  const int64_t d = blockIdx.y * (int64_t)kThreads + threadIdx.x;
  for (int64_t i0 = 0; i0 < n; i0 += kThreads) {
    tile[threadIdx.x] = i0 + threadIdx.x < n ? ids[i0 + threadIdx.x] : -1;
    __syncthreads();
    const int64_t count = min(static_cast<int64_t>(kThreads), n - i0);
    for (int64_t j = 0; j < count; ++j) {
      const int32_t id = tile[j];
      if (id >= lo && id < hi && d < dim) dweight[id * dim + d] += grad[(i0 + j) * dim + d];
    }
    __syncthreads();
  }
}
}  // namespace

void embedding_find_bad_id(const int32_t* ids, int64_t n, int64_t vocab, int64_t* first) {
  *first = -1;
  if (n == 0) return;
  int device = 0;
  LR_CUDA_CHECK(cudaGetDevice(&device));
  auto* found = static_cast<unsigned long long*>(alloc(device, sizeof(unsigned long long)));
  LR_CUDA_CHECK(cudaMemsetAsync(found, 0xff, sizeof(unsigned long long), current_stream()));  // ULLONG_MAX: none
  find_bad_id_kernel<<<grid_for(n, kThreads), kThreads, 0, current_stream()>>>(ids, n, vocab, found);
  LR_CUDA_LAUNCH_CHECK("embedding_find_bad_id");
  unsigned long long host = 0;
  copy_device_to_host(device, &host, found, sizeof host);
  free(device, found);
  if (host != ULLONG_MAX) *first = static_cast<int64_t>(host);
}

void embedding_gather_f32(const int32_t* ids, int64_t n, const float* weight, int64_t vocab, int64_t dim, float* out) {
  if (n * dim == 0) return;
  gather_kernel<<<grid_for(n * dim, kThreads), kThreads, 0, current_stream()>>>(ids, n, weight, vocab, dim, out);
  LR_CUDA_LAUNCH_CHECK("embedding_gather_f32");
}

void embedding_scatter_add_f32(const int32_t* ids, int64_t n, const float* grad, int64_t vocab, int64_t dim,
                               float* dweight) {
  if (n == 0 || dim == 0 || vocab == 0) return;
  dim3 grid(static_cast<unsigned>((vocab + kRowsPerBlock - 1) / kRowsPerBlock), static_cast<unsigned>((dim + kThreads - 1) / kThreads));
  scatter_add_kernel<<<grid, kThreads, 0, current_stream()>>>(ids, n, grad, vocab, dim, dweight);
  LR_CUDA_LAUNCH_CHECK("embedding_scatter_add_f32");
}

}  // namespace cuda
}  // namespace lowrank
