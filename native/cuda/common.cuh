// Shared by the CUDA op files: error checks that name the call, the per-device stream, launch sizes.
#pragma once
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "../backend.h"
#include "../core/device.h"

namespace lowrank {
namespace cuda {

inline void check(cudaError_t err, const char* what, const char* file, int line) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("CUDA error in ") + what + " (" + file + ":" + std::to_string(line) +
                             "): " + cudaGetErrorString(err));
}

#define LR_CUDA_CHECK(call) ::lowrank::cuda::check((call), #call, __FILE__, __LINE__)
#define LR_CUDA_LAUNCH_CHECK(name) ::lowrank::cuda::check(cudaGetLastError(), name, __FILE__, __LINE__)

// The stream all of lowrank's work on the current device is queued on (created on first use).
cudaStream_t current_stream();

// A small temporary device buffer on the current stream (a kernel's scratch: a flag, a scalar, a
// row of statistics), and its release; stream-ordered, so no synchronization.
template <typename T>
T* scratch(size_t n) {
  void* p = nullptr;
  LR_CUDA_CHECK(cudaMallocAsync(&p, n * sizeof(T), current_stream()));
  return static_cast<T*>(p);
}
inline void release(void* p) { LR_CUDA_CHECK(cudaFreeAsync(p, current_stream())); }

inline unsigned grid_for(int64_t n, int threads) {
  int64_t blocks = (n + threads - 1) / threads;
  return static_cast<unsigned>(blocks < 65535 * 32 ? blocks : 65535 * 32);
}

}  // namespace cuda
}  // namespace lowrank
