// Vector loads that widen bfloat16 (raw bits) to float32 in registers, beside the plain float32
// loads of the same shape, so one kernel template reads either element type (gemv.cc, the GEMM
// packing in matmul_avx512.cc / matmul_avx2.cc). bf16 is the top half of a float32, so widening
// is exact: zero-extend each 16-bit value to 32 bits and shift it left by 16.
#pragma once
#include <cstdint>

#include "../core/dtype.h"
#include "simd.h"

#ifdef LOWRANK_X86
#include <immintrin.h>
#endif

namespace lowrank {
namespace cpu {

inline float widen(float v) { return v; }
inline float widen(uint16_t v) { return bf16_to_f32(v); }

#ifdef LOWRANK_X86
// 16 elements; the masked forms read only the lanes in `m` (zeros elsewhere).
LR_TARGET_AVX512 inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
LR_TARGET_AVX512 inline __m512 load16(__mmask16 m, const float* p) { return _mm512_maskz_loadu_ps(m, p); }
LR_TARGET_AVX512 inline __m512 widen16(__m256i h) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); }
LR_TARGET_AVX512 inline __m512 load16(const uint16_t* p) { return widen16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
LR_TARGET_AVX512 inline __m512 load16(__mmask16 m, const uint16_t* p) { return widen16(_mm256_maskz_loadu_epi16(m, p)); }

// 8 elements; the masked forms read the lanes whose mask element has its top bit set (AVX2
// maskload; AVX2 has no 16-bit masked load, so bf16 goes through a small buffer).
LR_TARGET_AVX2 inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
LR_TARGET_AVX2 inline __m256 load8(__m256i m, const float* p) { return _mm256_maskload_ps(p, m); }
LR_TARGET_AVX2 inline __m256 widen8(__m128i h) { return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)); }
LR_TARGET_AVX2 inline __m256 load8(const uint16_t* p) { return widen8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
LR_TARGET_AVX2 inline __m256 load8(__m256i m, const uint16_t* p) {
  // The set lanes are a prefix 0..n-1 (as every caller builds them): no byte past p[n-1] is read.
  alignas(16) uint16_t buf[8] = {};
  const int n = __builtin_popcount(unsigned(_mm256_movemask_ps(_mm256_castsi256_ps(m))));
  for (int i = 0; i < n; ++i) buf[i] = p[i];
  return widen8(_mm_load_si128(reinterpret_cast<const __m128i*>(buf)));
}

// 32 bf16 (16 pairs) as the operand type of the AVX-512 BF16 instructions.
LR_TARGET_AVX512_BF16 inline __m512bh bh(__m512i v) { return (__m512bh)v; }
#endif

}  // namespace cpu
}  // namespace lowrank
