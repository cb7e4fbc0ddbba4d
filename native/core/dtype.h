// Element types and the bf16 conversion shared by every backend.
// Kept free of Node-API and CUDA runtime headers so .cu files and plain C++ both include it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "enums.h"

#if defined(__CUDACC__)
#define LR_HD __host__ __device__ __forceinline__
#else
#define LR_HD inline
#endif

namespace lowrank {

#define LOWRANK_DTYPES(X) X(F32) X(BF16) X(I32)
enum class DType : int32_t { LOWRANK_DTYPES(LR_ENUM_MEMBER) };
constexpr int kDTypeCount = 0 LOWRANK_DTYPES(LR_ENUM_PLUS_ONE);

LR_HD size_t dtype_size(DType t) { return t == DType::BF16 ? 2 : 4; }

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "float32";
    case DType::BF16: return "bfloat16";
    case DType::I32: return "int32";
  }
  return "?";
}

LR_HD uint32_t f32_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}

LR_HD float bits_f32(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

// float32 -> bfloat16 with round-to-nearest-even; NaN stays a (quiet) NaN of the same sign.
LR_HD uint16_t f32_to_bf16(float f) {
  uint32_t u = f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);
  uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>((u + rounding) >> 16);
}

LR_HD float bf16_to_f32(uint16_t h) { return bits_f32(static_cast<uint32_t>(h) << 16); }

}  // namespace lowrank
