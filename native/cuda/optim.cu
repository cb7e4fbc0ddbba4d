// Fused optimizer kernels on the GPU; each is checked against its CPU twin (native/cpu/optim.cc).
// The host-side tensor and chunk tables are copied into one stream-ordered device buffer, then a
// single launch runs one block per chunk. The per-element math is shared with the CPU
// (native/ops/optim.h), so both backends give bit-identical results.
#include <cmath>
#include <cstring>
#include <vector>

#include "../ops/optim.h"
#include "common.cuh"

namespace lowrank {
namespace cuda {
namespace {
constexpr int kThreads = 256;

// The tensor table followed by the chunk table, in one allocation on the current stream. The
// buffer is released with cudaFreeAsync when this object goes out of scope, after the kernel
// that reads it was queued, so the stream order keeps it alive for exactly as long as needed.
template <typename T>
class DeviceTables {
 public:
  DeviceTables(const T* tensors, int count, const std::vector<OptimChunk>& chunks) {
    const size_t tensor_bytes = sizeof(T) * count;
    chunk_offset_ = (tensor_bytes + alignof(OptimChunk) - 1) / alignof(OptimChunk) * alignof(OptimChunk);
    std::vector<char> host(chunk_offset_ + sizeof(OptimChunk) * chunks.size());
    std::memcpy(host.data(), tensors, tensor_bytes);
    std::memcpy(host.data() + chunk_offset_, chunks.data(), sizeof(OptimChunk) * chunks.size());
    LR_CUDA_CHECK(cudaMallocAsync(&device_, host.size(), current_stream()));
    // Pageable source: the driver stages it before returning, so `host` may go out of scope.
    LR_CUDA_CHECK(cudaMemcpyAsync(device_, host.data(), host.size(), cudaMemcpyHostToDevice, current_stream()));
  }
  ~DeviceTables() { cudaFreeAsync(device_, current_stream()); }
  DeviceTables(const DeviceTables&) = delete;
  DeviceTables& operator=(const DeviceTables&) = delete;

  const T* tensors() const { return reinterpret_cast<const T*>(device_); }
  const OptimChunk* chunks() const { return reinterpret_cast<const OptimChunk*>(static_cast<char*>(device_) + chunk_offset_); }

 private:
  void* device_ = nullptr;
  size_t chunk_offset_ = 0;
};

__global__ void adamw_kernel(const AdamWTensor* tensors, const OptimChunk* chunks) {
  const OptimChunk c = chunks[blockIdx.x];
  const AdamWTensor t = tensors[c.tensor];
  for (int64_t i = c.begin + threadIdx.x; i < c.end; i += blockDim.x) adamw_element(t, i);
}

__global__ void sgd_kernel(const SGDTensor* tensors, const OptimChunk* chunks) {
  const OptimChunk c = chunks[blockIdx.x];
  const SGDTensor t = tensors[c.tensor];
  for (int64_t i = c.begin + threadIdx.x; i < c.end; i += blockDim.x) sgd_element(t, i);
}

__global__ void scale_kernel(const FloatSpan* spans, const OptimChunk* chunks, float alpha) {
  const OptimChunk c = chunks[blockIdx.x];
  float* x = spans[c.tensor].data;
  for (int64_t i = c.begin + threadIdx.x; i < c.end; i += blockDim.x) x[i] *= alpha;
}

// One partial per chunk (block), reduced in shared memory in double.
__global__ void sum_pow_kernel(const FloatSpan* spans, const OptimChunk* chunks, double p, double* partial) {
  __shared__ double part[kThreads];
  const OptimChunk c = chunks[blockIdx.x];
  const float* x = spans[c.tensor].data;
  const bool inf = isinf(p);
  double acc = 0;
  for (int64_t i = c.begin + threadIdx.x; i < c.end; i += blockDim.x) {
    const double term = norm_term(x[i], p, inf);
    acc = inf ? nan_max(acc, term) : acc + term;
  }
  part[threadIdx.x] = acc;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) part[threadIdx.x] = inf ? nan_max(part[threadIdx.x], part[threadIdx.x + s]) : part[threadIdx.x] + part[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) partial[blockIdx.x] = part[0];
}
}  // namespace

void adamw_step_f32(const AdamWTensor* tensors, int count) {
  const std::vector<OptimChunk> chunks = optim_chunks(tensors, count);
  if (chunks.empty()) return;
  DeviceTables<AdamWTensor> tables(tensors, count, chunks);
  adamw_kernel<<<static_cast<unsigned>(chunks.size()), kThreads, 0, current_stream()>>>(tables.tensors(), tables.chunks());
  LR_CUDA_LAUNCH_CHECK("adamw_step_f32");
}

void sgd_step_f32(const SGDTensor* tensors, int count) {
  const std::vector<OptimChunk> chunks = optim_chunks(tensors, count);
  if (chunks.empty()) return;
  DeviceTables<SGDTensor> tables(tensors, count, chunks);
  sgd_kernel<<<static_cast<unsigned>(chunks.size()), kThreads, 0, current_stream()>>>(tables.tensors(), tables.chunks());
  LR_CUDA_LAUNCH_CHECK("sgd_step_f32");
}

void sum_pow_f32(const FloatSpan* spans, int count, double p, double* out) {
  const std::vector<OptimChunk> chunks = optim_chunks(spans, count);
  std::fill(out, out + count, 0.0);
  if (chunks.empty()) return;
  DeviceTables<FloatSpan> tables(spans, count, chunks);
  double* partial = nullptr;
  LR_CUDA_CHECK(cudaMallocAsync(&partial, sizeof(double) * chunks.size(), current_stream()));
  sum_pow_kernel<<<static_cast<unsigned>(chunks.size()), kThreads, 0, current_stream()>>>(tables.tensors(), tables.chunks(), p, partial);
  LR_CUDA_LAUNCH_CHECK("sum_pow_f32");
  std::vector<double> host(chunks.size());
  LR_CUDA_CHECK(cudaMemcpyAsync(host.data(), partial, sizeof(double) * chunks.size(), cudaMemcpyDeviceToHost, current_stream()));
  LR_CUDA_CHECK(cudaFreeAsync(partial, current_stream()));
  LR_CUDA_CHECK(cudaStreamSynchronize(current_stream()));
  // Combined in chunk order on the host, like the CPU twin.
  combine_chunk_partials(chunks, host.data(), std::isinf(p), out);
}

void scale_spans_f32(const FloatSpan* spans, int count, float alpha) {
  const std::vector<OptimChunk> chunks = optim_chunks(spans, count);
  if (chunks.empty()) return;
  DeviceTables<FloatSpan> tables(spans, count, chunks);
  scale_kernel<<<static_cast<unsigned>(chunks.size()), kThreads, 0, current_stream()>>>(tables.tensors(), tables.chunks(), alpha);
  LR_CUDA_LAUNCH_CHECK("scale_spans_f32");
}

}  // namespace cuda
}  // namespace lowrank
