// Vector loads that widen bfloat16 (raw bits) to float32 in registers, beside the plain float32
// loads of the same shape, so one kernel template reads either element type (gemv.cc, the GEMM
// packing in matmul_avx512.cc / matmul_avx2.cc). bf16 is the top half of a float32, so widening
// is exact: zero-extend each 16-bit value to 32 bits and shift it left by 16.
//
// A third source type, F32AsBf16, is float32 that a bf16 product reads rounded to bf16 (x times a
// frozen bf16 weight): its loads round each value as a cast would, then widen it, so the GEMM packs
// x straight from float32 instead of after a separate pass that writes a bf16 copy.
#pragma once
#include <cstdint>

#include "../core/dtype.h"
#include "simd.h"

#ifdef LOWRANK_X86
#include <immintrin.h>
#endif

namespace lowrank {
namespace cpu {

// A float32 operand of a bf16 product, read through this type (same size and layout as float).
// Each value is rounded to bf16 as it is loaded: to nearest even, NaN kept and quieted, denormals
// rounded like any value, exactly f32_to_bf16, so a product reading it is bit for bit the product
// of a bf16 copy made by a cast.
struct F32AsBf16 {
  float f;
};

inline float widen(float v) { return v; }
inline float widen(uint16_t v) { return bf16_to_f32(v); }
inline float widen(F32AsBf16 v) { return bf16_to_f32(f32_to_bf16(v.f)); }

#ifdef LOWRANK_X86
// 16 elements; the masked forms read only the lanes in `m` (zeros elsewhere).
LR_TARGET_AVX512 inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
LR_TARGET_AVX512 inline __m512 load16(__mmask16 m, const float* p) { return _mm512_maskz_loadu_ps(m, p); }
LR_TARGET_AVX512 inline __m512 widen16(__m256i h) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); }
LR_TARGET_AVX512 inline __m512 load16(const uint16_t* p) { return widen16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
LR_TARGET_AVX512 inline __m512 load16(__mmask16 m, const uint16_t* p) { return widen16(_mm256_maskz_loadu_epi16(m, p)); }
// f32_to_bf16 in each lane, widened back (its low 16 bits zero): x + 0x7fff + (bit 16 of x), cut
// to the top half; a NaN is not rounded (that could carry it to infinity) but quieted.
LR_TARGET_AVX512 inline __m512 round16(__m512 x) {
  const __m512i u = _mm512_castps_si512(x);
  const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  const __m512i rounded = _mm512_add_epi32(u, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7fff)));
  const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
  const __m512i v = _mm512_mask_or_epi32(rounded, nan, u, _mm512_set1_epi32(0x00400000));
  return _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32(int(0xffff0000u))));
}
LR_TARGET_AVX512 inline __m512 load16(const F32AsBf16* p) { return round16(_mm512_loadu_ps(&p->f)); }
LR_TARGET_AVX512 inline __m512 load16(__mmask16 m, const F32AsBf16* p) { return round16(_mm512_maskz_loadu_ps(m, &p->f)); }

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
// round16's arithmetic on 8 lanes (AVX2 has no unsigned compare; |x| as int32 is never negative).
LR_TARGET_AVX2 inline __m256 round8(__m256 x) {
  const __m256i u = _mm256_castps_si256(x);
  const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  const __m256i rounded = _mm256_add_epi32(u, _mm256_add_epi32(odd, _mm256_set1_epi32(0x7fff)));
  const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff)), _mm256_set1_epi32(0x7f800000));
  const __m256i v = _mm256_blendv_epi8(rounded, _mm256_or_si256(u, _mm256_set1_epi32(0x00400000)), nan);
  return _mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32(int(0xffff0000u))));
}
LR_TARGET_AVX2 inline __m256 load8(const F32AsBf16* p) { return round8(_mm256_loadu_ps(&p->f)); }
LR_TARGET_AVX2 inline __m256 load8(__m256i m, const F32AsBf16* p) { return round8(_mm256_maskload_ps(&p->f, m)); }

// 32 bf16 (16 pairs) as the operand type of the AVX-512 BF16 instructions.
LR_TARGET_AVX512_BF16 inline __m512bh bh(__m512i v) { return (__m512bh)v; }
#endif

}  // namespace cpu
}  // namespace lowrank
