// The backend interface: every op family has a CPU twin (namespace cpu, native/cpu/) and, in CUDA
// builds, a GPU twin with the same signature (namespace cuda, native/cuda/). This header holds the
// core (memory, creation); each op family declares its kernels in native/ops/<family>.h with
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

#define LOWRANK_BACKEND_OPS                                                                        \
  /* dst[i] = value, i < n */                                                                      \
  void fill(void* dst, DType dtype, int64_t n, double value);                                      \
  /* dst[i] = start + i * step */                                                                  \
  void arange(void* dst, DType dtype, int64_t n, double start, double step);                       \
  /* element-wise conversion (float32 <-> bfloat16 rounds to nearest even; float -> int32 truncates) */ \
  void cast(const void* src, DType src_dtype, void* dst, DType dst_dtype, int64_t n);              \
  /* copies a strided view of `src` into a strided view of `dst` (strides in elements) */         \
  void copy_strided(const void* src, const int64_t* src_strides, void* dst, const int64_t* dst_strides, \
                    size_t elem_size, int ndim, const int64_t* shape);                             \
  /* Philox streams, see core/philox.h */                                                          \
  void random_uniform(float* dst, int64_t n, uint64_t seed, uint64_t offset, float low, float high); \
  void random_normal(float* dst, int64_t n, uint64_t seed, uint64_t offset, float mean, float std);

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
LOWRANK_BACKEND_OPS
std::string simd_level();  // "avx512", "avx2", or "scalar": what the kernels dispatch to here
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
std::string blas_version();  // cuBLAS, from cublas.cu
LOWRANK_BACKEND_OPS
}  // namespace cuda
#endif

}  // namespace lowrank
