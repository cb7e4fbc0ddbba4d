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

__device__ float widen(float x) { return x; }
__device__ float widen(uint16_t x) { return bf16_to_f32(x); }

template <typename T>
__global__ void gather_kernel(const int32_t* ids, int64_t n, const T* weight, int64_t vocab, int64_t dim, float* out) {
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n * dim; e += (int64_t)blockDim.x * gridDim.x) {
    int32_t id = ids[e / dim];
    out[e] = valid(id, vocab) ? widen(weight[id * dim + e % dim]) : 0.0f;
  }
}

// Deterministic without sorting or atomics: block (x, y) owns vocabulary rows
// [x·kRowsPerBlock, (x+1)·kRowsPerBlock) and columns [y·kThreads, (y+1)·kThreads). It reads the ids
// a tile at a time, compacts the positions whose id it owns (in order: warp ballots and a prefix over
// warps), and adds their gradient rows, thread t on column t. So each element sums its contributions
// in order of position, exactly like the CPU twin, and the two agree bit for bit. A run of equal ids
// accumulates in a register ((w + g0) + g1 ..., the same order) and is written back once.
__global__ void scatter_add_kernel(const int32_t* ids, int64_t n, const float* grad, int64_t vocab, int64_t dim,
                                   float* dweight) {
  constexpr int kWarps = kThreads / 32;
  __shared__ int32_t hit_pos[kThreads], hit_id[kThreads];
  __shared__ int warp_hits[kWarps];
  const int64_t lo = blockIdx.x * kRowsPerBlock, hi = min(lo + kRowsPerBlock, vocab);
  const int64_t d = blockIdx.y * (int64_t)kThreads + threadIdx.x;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  int32_t cur = -1;  // the row `acc` holds
  float acc = 0.0f;
  for (int64_t i0 = 0; i0 < n; i0 += kThreads) {
    const int64_t i = i0 + threadIdx.x;
    const int32_t id = i < n ? ids[i] : -1;
    const bool hit = id >= lo && id < hi;
    const unsigned mask = __ballot_sync(0xffffffffu, hit);
    if (lane == 0) warp_hits[warp] = __popc(mask);
    __syncthreads();
    int base = 0, total = 0;
    for (int w = 0; w < kWarps; ++w) {
      base += w < warp ? warp_hits[w] : 0;
      total += warp_hits[w];
    }
    if (hit) {
      const int slot = base + __popc(mask & ((1u << lane) - 1));
      hit_pos[slot] = threadIdx.x;
      hit_id[slot] = id;
    }
    __syncthreads();
    if (d < dim) {
      for (int j = 0; j < total; ++j) {
        if (hit_id[j] != cur) {
          if (cur >= 0) dweight[cur * dim + d] = acc;
          cur = hit_id[j];
          acc = dweight[cur * dim + d];
        }
        acc += grad[(i0 + hit_pos[j]) * dim + d];
      }
    }
    __syncthreads();  // hit lists are rewritten by the next tile
  }
  if (cur >= 0 && d < dim) dweight[cur * dim + d] = acc;
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

void embedding_gather_bf16(const int32_t* ids, int64_t n, const uint16_t* weight, int64_t vocab, int64_t dim, float* out) {
  if (n * dim == 0) return;
  gather_kernel<<<grid_for(n * dim, kThreads), kThreads, 0, current_stream()>>>(ids, n, weight, vocab, dim, out);
  LR_CUDA_LAUNCH_CHECK("embedding_gather_bf16");
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
