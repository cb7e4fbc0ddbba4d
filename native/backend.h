// The backend interface: every op family has a CPU twin (namespace cpu, native/cpu/) and, in CUDA
// builds, a GPU twin with the same signature (namespace cuda, native/cuda/). This header holds the
// core (memory, devices); each op family declares its kernels in native/ops/<family>.h with
// LOWRANK_DECLARE_BACKEND, so families are added without touching this file. Pointers are raw
// element pointers on the backend's own device; shapes are int64 element counts. CUDA functions
// enqueue work on the device's stream and return without waiting.
// This header must stay free of Node-API and CUDA runtime headers: the .cu files include it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/dtype.h"

namespace lowrank {

// Up to this many dimensions in strided copies.
constexpr int kMaxDims = 8;

// Declares the same kernel signatures in namespace cpu and (in CUDA builds) namespace cuda.
#ifdef LOWRANK_CUDA
#define LOWRANK_DECLARE_BACKEND(OPS) \
  namespace lowrank {                \
  namespace cpu {                    \
  OPS                                \
  }                                  \
  namespace cuda {                   \
  OPS                                \
  }                                  \
  }
#else
#define LOWRANK_DECLARE_BACKEND(OPS) \
  namespace lowrank {                \
  namespace cpu {                    \
  OPS                                \
  }                                  \
  }
#endif

namespace cpu {
void* alloc(size_t bytes);
void free(void* ptr, size_t bytes);
std::string simd_level();  // "avx512bf16", "avx512", "avx2", or "scalar": what the kernels dispatch to here
int num_threads();
void set_num_threads(int n);
}  // namespace cpu

#ifdef LOWRANK_CUDA
namespace cuda {
void* alloc(int device, size_t bytes);
void free(int device, void* ptr);
void set_device(int device);  // makes `device` current on this host thread
void copy_host_to_device(int device, void* dst, const void* src, size_t bytes);
void copy_device_to_host(int device, void* dst, const void* src, size_t bytes);
void copy_device_to_device(int device, void* dst, const void* src, size_t bytes);
void synchronize(int device);
int device_count();
std::string device_name(int device);
std::string runtime_version();
size_t pool_reserved_bytes(int device);  // device memory the stream-ordered pool holds, used or not
std::string blas_version();  // cuBLAS, from matmul.cu
// Profiling marks (lib/profile.ts, LOWRANK_PROFILE=cuda): a CUDA event recorded on the device's
// stream, numbered in recording order from 0 until reset_marks(), which lets the numbers (and their
// events) be used again. mark_elapsed_ms waits for the later mark. JS thread only.
int record_mark(int device);
double mark_elapsed_ms(int from, int to);
void reset_marks();
}  // namespace cuda
#endif

}  // namespace lowrank
