// Filling, conversion, strided gathers and random streams on the CPU.
#include <algorithm>
#include <cstring>

#include "../ops/creation.h"
#include "../core/philox.h"
#include "bf16_load.h"
#include "parallel.h"

namespace lowrank {
namespace cpu {
namespace {
constexpr int64_t kGrain = 1 << 15;

template <typename F>
void for_each_index(int64_t n, F f) {
  parallel_for(n, kGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) f(i);
  });
}

void store(void* dst, DType t, int64_t i, double v) {
  switch (t) {
    case DType::F32: static_cast<float*>(dst)[i] = static_cast<float>(v); break;
    case DType::BF16: static_cast<uint16_t*>(dst)[i] = f32_to_bf16(static_cast<float>(v)); break;
    case DType::I32: static_cast<int32_t*>(dst)[i] = static_cast<int32_t>(v); break;
  }
}

float load_f32(const void* src, DType t, int64_t i) {
  switch (t) {
    case DType::F32: return static_cast<const float*>(src)[i];
    case DType::BF16: return bf16_to_f32(static_cast<const uint16_t*>(src)[i]);
    case DType::I32: return static_cast<float>(static_cast<const int32_t*>(src)[i]);
  }
  return 0;
}
}  // namespace

// The value is converted once and each chunk is a plain std::fill (vectorized, a memset for
// zero): converting per element through store() ran at a third of the memory bandwidth.
template <typename T>
void fill_as(void* dst, int64_t n, T v) {
  T* p = static_cast<T*>(dst);
  parallel_for(n, kStreamGrain, [&](int64_t b, int64_t e) { std::fill(p + b, p + e, v); });
}

void fill(void* dst, DType dtype, int64_t n, double value) {
  switch (dtype) {
    case DType::F32: return fill_as(dst, n, static_cast<float>(value));
    case DType::BF16: return fill_as(dst, n, f32_to_bf16(static_cast<float>(value)));
    case DType::I32: return fill_as(dst, n, static_cast<int32_t>(value));
  }
}

void arange(void* dst, DType dtype, int64_t n, double start, double step) {
  for_each_index(n, [&](int64_t i) { store(dst, dtype, i, start + static_cast<double>(i) * step); });
}

void cast(const void* src, DType src_dtype, void* dst, DType dst_dtype, int64_t n) {
  if (src_dtype == dst_dtype) {
    std::memcpy(dst, src, static_cast<size_t>(n) * dtype_size(src_dtype));
  } else if (src_dtype == DType::F32 && dst_dtype == DType::BF16) {
    // Weights at load (124M for GPT-2) and the KV cache's rounding: vectorized, not a switch per element.
    parallel_for(n, kStreamGrain, [&](int64_t b, int64_t e) {
      round_to_bf16(static_cast<const float*>(src) + b, static_cast<uint16_t*>(dst) + b, e - b);
    });
  } else if (src_dtype == DType::BF16 && dst_dtype == DType::F32) {
    for_each_index(n, [&](int64_t i) { static_cast<float*>(dst)[i] = bf16_to_f32(static_cast<const uint16_t*>(src)[i]); });
  } else if (src_dtype == DType::I32 && dst_dtype == DType::F32) {
    for_each_index(n, [&](int64_t i) { static_cast<float*>(dst)[i] = static_cast<float>(static_cast<const int32_t*>(src)[i]); });
  } else {
    for_each_index(n, [&](int64_t i) { store(dst, dst_dtype, i, load_f32(src, src_dtype, i)); });
  }
}

void copy_strided(const void* src, const int64_t* src_strides, void* dst, const int64_t* dst_strides,
                  size_t elem_size, int ndim, const int64_t* shape) {
  int64_t n = 1;
  for (int d = 0; d < ndim; ++d) n *= shape[d];
  if (n == 0) return;
  // Rows along the last dimension are copied with memcpy when contiguous on both sides.
  int64_t inner = ndim > 0 ? shape[ndim - 1] : 1;
  int64_t s_in = ndim > 0 ? src_strides[ndim - 1] : 1, d_in = ndim > 0 ? dst_strides[ndim - 1] : 1;
  int64_t rows = n / inner;
  const char* s = static_cast<const char*>(src);
  char* out = static_cast<char*>(dst);
  parallel_for(rows, std::max<int64_t>(1, kStreamGrain / std::max<int64_t>(1, inner)), [&](int64_t b, int64_t e) {
    for (int64_t row = b; row < e; ++row) {
      int64_t rem = row, so = 0, doff = 0;
      for (int d = ndim - 2; d >= 0; --d) {
        int64_t idx = rem % shape[d];
        so += idx * src_strides[d];
        doff += idx * dst_strides[d];
        rem /= shape[d];
      }
      if (s_in == 1 && d_in == 1) {
        std::memcpy(out + doff * elem_size, s + so * elem_size, static_cast<size_t>(inner) * elem_size);
      } else {
        for (int64_t j = 0; j < inner; ++j)
          std::memcpy(out + (doff + j * d_in) * elem_size, s + (so + j * s_in) * elem_size, elem_size);
      }
    }
  });
}

void random_uniform(float* dst, int64_t n, uint64_t seed, uint64_t offset, float low, float high) {
  for_each_index(n, [&](int64_t i) { dst[i] = philox_uniform(seed, offset, static_cast<uint64_t>(i), low, high); });
}

void random_normal(float* dst, int64_t n, uint64_t seed, uint64_t offset, float mean, float std) {
  for_each_index(n, [&](int64_t i) { dst[i] = philox_normal(seed, offset, static_cast<uint64_t>(i), mean, std); });
}

}  // namespace cpu
}  // namespace lowrank
