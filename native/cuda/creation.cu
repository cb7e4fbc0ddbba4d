// Filling, conversion, strided gathers and random streams on the GPU; each is checked against its
// CPU twin in native/cpu/creation.cc by test/gpu.
#include "../core/philox.h"
#include "../ops/creation.h"
#include "common.cuh"
#include "bf16x4.cuh"  // after common.cuh: the CPU emulator swaps that for its own uint2 and float4
#include "strided.cuh"

namespace lowrank {
namespace cuda {
namespace {
constexpr int kThreads = 256;

#define LR_GRID_STRIDE_LOOP(i, n) \
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n); i += (int64_t)blockDim.x * gridDim.x)

__device__ __forceinline__ void store(void* dst, DType t, int64_t i, double v) {
  switch (t) {
    case DType::F32: static_cast<float*>(dst)[i] = static_cast<float>(v); break;
    case DType::BF16: static_cast<uint16_t*>(dst)[i] = f32_to_bf16(static_cast<float>(v)); break;
    case DType::I32: static_cast<int32_t*>(dst)[i] = static_cast<int32_t>(v); break;
  }
}

__device__ __forceinline__ float load_f32(const void* src, DType t, int64_t i) {
  switch (t) {
    case DType::F32: return static_cast<const float*>(src)[i];
    case DType::BF16: return bf16_to_f32(static_cast<const uint16_t*>(src)[i]);
    case DType::I32: return static_cast<float>(static_cast<const int32_t*>(src)[i]);
  }
  return 0;
}

__global__ void fill_kernel(void* dst, DType t, int64_t n, double v) {
  LR_GRID_STRIDE_LOOP(i, n) store(dst, t, i, v);
}

__global__ void arange_kernel(void* dst, DType t, int64_t n, double start, double step) {
  LR_GRID_STRIDE_LOOP(i, n) store(dst, t, i, start + static_cast<double>(i) * step);
}

__global__ void cast_kernel(const void* src, DType st, void* dst, DType dt, int64_t n) {
  LR_GRID_STRIDE_LOOP(i, n) store(dst, dt, i, load_f32(src, st, i));
}

// The casts of mixed precision (activations to bf16 for a GEMM and back), without cast_kernel's
// per-element dtype switches and double; 4 elements per thread, one 16-byte float and one 8-byte
// bf16 access when vec (n's groups of 4 aligned: both pointers 16- and 8-byte aligned).
__global__ void cast_f32_to_bf16_kernel(const float* src, uint16_t* dst, int64_t n, bool vec) {
  LR_GRID_STRIDE_LOOP(q, (n + 3) / 4) {
    const int64_t i = 4 * q;
    if (vec && i + 4 <= n) {
      const float4 v = *reinterpret_cast<const float4*>(src + i);
      *reinterpret_cast<uint2*>(dst + i) = bf16x4_pack(v.x, v.y, v.z, v.w);
    } else {
      for (int64_t e = i; e < n && e < i + 4; ++e) dst[e] = f32_to_bf16(src[e]);
    }
  }
}
__global__ void cast_bf16_to_f32_kernel(const uint16_t* src, float* dst, int64_t n, bool vec) {
  LR_GRID_STRIDE_LOOP(q, (n + 3) / 4) {
    const int64_t i = 4 * q;
    if (vec && i + 4 <= n) {
      *reinterpret_cast<float4*>(dst + i) = bf16x4_unpack(*reinterpret_cast<const uint2*>(src + i));
    } else {
      for (int64_t e = i; e < n && e < i + 4; ++e) dst[e] = bf16_to_f32(src[e]);
    }
  }
}

// A copy of rows × cols elements (the shape of most strided copies once their dims are merged:
// a bias broadcast over rows, a transpose), without the general kernel's divisions per element.
template <typename T>
__global__ void copy_2d_kernel(const T* src, T* dst, int64_t rows, int64_t cols, int64_t s0, int64_t s1, int64_t d0, int64_t d1) {
  for (int64_t i = blockIdx.y; i < rows; i += gridDim.y)
    for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; j < cols; j += (int64_t)blockDim.x * gridDim.x)
      dst[i * d0 + j * d1] = src[i * s0 + j * s1];
}

// copy_2d_kernel where both sides' rows are unit-stride runs of 16-byte units (uint4): a bias
// broadcast, a contiguous copy, rows of a slice; s0, d0 and cols in units.
__global__ void copy_2d_vec_kernel(const uint4* src, uint4* dst, int64_t rows, int64_t cols, int64_t s0, int64_t d0) {
  for (int64_t i = blockIdx.y; i < rows; i += gridDim.y)
    for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; j < cols; j += (int64_t)blockDim.x * gridDim.x)
      dst[i * d0 + j] = src[i * s0 + j];
}

// Any other walk (strides[0]: the source's, strides[1]: the destination's).
template <typename T>
__global__ void copy_strided_kernel(const T* src, T* dst, int64_t n, StridedShape<2> a) {
  LR_GRID_STRIDE_LOOP(i, n) {
    int64_t rem = i, so = 0, doff = 0;
    for (int d = a.ndim - 1; d >= 0; --d) {
      int64_t idx = rem % a.shape[d];
      so += idx * a.strides[0][d];
      doff += idx * a.strides[1][d];
      rem /= a.shape[d];
    }
    dst[doff] = src[so];
  }
}

__global__ void uniform_kernel(float* dst, int64_t n, uint64_t seed, uint64_t offset, float low, float high) {
  LR_GRID_STRIDE_LOOP(i, n) dst[i] = philox_uniform(seed, offset, static_cast<uint64_t>(i), low, high);
}

__global__ void normal_kernel(float* dst, int64_t n, uint64_t seed, uint64_t offset, float mean, float std) {
  LR_GRID_STRIDE_LOOP(i, n) dst[i] = philox_normal(seed, offset, static_cast<uint64_t>(i), mean, std);
}
}  // namespace

void fill(void* dst, DType dtype, int64_t n, double value) {
  if (n <= 0) return;
  fill_kernel<<<grid_for(n, kThreads), kThreads, 0, current_stream()>>>(dst, dtype, n, value);
  LR_CUDA_LAUNCH_CHECK("fill");
}

void arange(void* dst, DType dtype, int64_t n, double start, double step) {
  if (n <= 0) return;
  arange_kernel<<<grid_for(n, kThreads), kThreads, 0, current_stream()>>>(dst, dtype, n, start, step);
  LR_CUDA_LAUNCH_CHECK("arange");
}

void cast(const void* src, DType src_dtype, void* dst, DType dst_dtype, int64_t n) {
  if (n <= 0) return;
  if (src_dtype == dst_dtype) {
    LR_CUDA_CHECK(cudaMemcpyAsync(dst, src, n * dtype_size(src_dtype), cudaMemcpyDeviceToDevice, current_stream()));
    return;
  }
  const unsigned grid = grid_for(n, kThreads), grid4 = grid_for((n + 3) / 4, kThreads);
  const bool vec = reinterpret_cast<uintptr_t>(src) % 16 == 0 && reinterpret_cast<uintptr_t>(dst) % 16 == 0;
  if (src_dtype == DType::F32 && dst_dtype == DType::BF16)
    cast_f32_to_bf16_kernel<<<grid4, kThreads, 0, current_stream()>>>(static_cast<const float*>(src), static_cast<uint16_t*>(dst), n, vec);
  else if (src_dtype == DType::BF16 && dst_dtype == DType::F32)
    cast_bf16_to_f32_kernel<<<grid4, kThreads, 0, current_stream()>>>(static_cast<const uint16_t*>(src), static_cast<float*>(dst), n, vec);
  else
    cast_kernel<<<grid, kThreads, 0, current_stream()>>>(src, src_dtype, dst, dst_dtype, n);
  LR_CUDA_LAUNCH_CHECK("cast");
}

void copy_strided(const void* src, const int64_t* src_strides, void* dst, const int64_t* dst_strides,
                  size_t elem_size, int ndim, const int64_t* shape) {
  int64_t n = 1;
  for (int d = 0; d < ndim; ++d) n *= shape[d];
  if (n <= 0) return;
  const StridedShape<2> s = merge_dims<2>(ndim, shape, {src_strides, dst_strides});
  const cudaStream_t stream = current_stream();
  // 16-byte units along the rows: unit column strides, every row start and length a multiple of 16 bytes
  const int64_t unit = 16 / int64_t(elem_size);
  const bool vec = s.ndim == 2 && s.strides[0][1] == 1 && s.strides[1][1] == 1 && s.shape[1] % unit == 0 &&
                   s.strides[0][0] % unit == 0 && s.strides[1][0] % unit == 0 && reinterpret_cast<uintptr_t>(src) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(dst) % 16 == 0;
  if (vec) {
    copy_2d_vec_kernel<<<grid_2d(s.shape[0], s.shape[1] / unit, kThreads), kThreads, 0, stream>>>(
        static_cast<const uint4*>(src), static_cast<uint4*>(dst), s.shape[0], s.shape[1] / unit, s.strides[0][0] / unit, s.strides[1][0] / unit);
  } else if (s.ndim == 2) {
    const dim3 grid = grid_2d(s.shape[0], s.shape[1], kThreads);
    if (elem_size == 2)
      copy_2d_kernel<<<grid, kThreads, 0, stream>>>(static_cast<const uint16_t*>(src), static_cast<uint16_t*>(dst), s.shape[0], s.shape[1],
                                                    s.strides[0][0], s.strides[0][1], s.strides[1][0], s.strides[1][1]);
    else
      copy_2d_kernel<<<grid, kThreads, 0, stream>>>(static_cast<const uint32_t*>(src), static_cast<uint32_t*>(dst), s.shape[0], s.shape[1],
                                                    s.strides[0][0], s.strides[0][1], s.strides[1][0], s.strides[1][1]);
  } else if (elem_size == 2) {
    copy_strided_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(static_cast<const uint16_t*>(src), static_cast<uint16_t*>(dst), n, s);
  } else {
    copy_strided_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(static_cast<const uint32_t*>(src), static_cast<uint32_t*>(dst), n, s);
  }
  LR_CUDA_LAUNCH_CHECK("copy_strided");
}

void random_uniform(float* dst, int64_t n, uint64_t seed, uint64_t offset, float low, float high) {
  if (n <= 0) return;
  uniform_kernel<<<grid_for(n, kThreads), kThreads, 0, current_stream()>>>(dst, n, seed, offset, low, high);
  LR_CUDA_LAUNCH_CHECK("random_uniform");
}

void random_normal(float* dst, int64_t n, uint64_t seed, uint64_t offset, float mean, float std) {
  if (n <= 0) return;
  normal_kernel<<<grid_for(n, kThreads), kThreads, 0, current_stream()>>>(dst, n, seed, offset, mean, std);
  LR_CUDA_LAUNCH_CHECK("random_normal");
}

}  // namespace cuda
}  // namespace lowrank
