// The emulator's stand-in for native/cuda/common.cuh (see emu.h): the addon's CUDA op files run on
// the CPU with one stream, scratch buffers from malloc (filled with NaN, so a read of an unwritten
// element shows in the results) and launch checks that check nothing.
#pragma once
#include <cstdio>
#include <stdexcept>
#include <string>

#include "emu.h"

typedef int cudaStream_t;
inline std::pair<dim3, dim3> emu_dims(dim3 g, dim3 b, size_t, cudaStream_t) { return {g, b}; }
inline cudaError_t cudaMemsetAsync(void* p, int v, size_t n, cudaStream_t) { memset(p, v, n); return cudaSuccess; }
inline cudaError_t cudaMemcpyAsync(void* d, const void* s, size_t n, cudaMemcpyKind, cudaStream_t) { memcpy(d, s, n); return cudaSuccess; }
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
// One emulated thread runs at a time (emu.h), so an atomic is a plain read-modify-write.
template <typename T>
T atomicMin(T* p, T v) {
  const T old = *p;
  if (v < old) *p = v;
  return old;
}
using std::isfinite;
using std::isnan;

namespace lowrank {
namespace cuda {
#define LR_CUDA_CHECK(call) (void)(call)
#define LR_CUDA_LAUNCH_CHECK(name) (void)(name)
inline cudaStream_t current_stream() { return 0; }
template <typename T>
T* scratch(size_t n) {
  void* p = ::malloc(n * sizeof(T) + 1);
  memset(p, 0xff, n * sizeof(T));
  return static_cast<T*>(p);
}
inline void release(void* p) { ::free(p); }
inline unsigned grid_for(int64_t n, int threads) { return unsigned((n + threads - 1) / threads); }
}  // namespace cuda
}  // namespace lowrank
