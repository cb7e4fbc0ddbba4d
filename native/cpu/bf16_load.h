// Vector loads that widen bfloat16 (raw bits) to float32 in registers, beside the plain float32
// loads of the same shape, so one kernel template reads either element type (gemv.cc, the GEMM
// packing in matmul_avx512.cc / matmul_avx2.cc). bf16 is the top half of a float32, so widening
// is exact: zero-extend each 16-bit value to 32 bits and shift it left by 16.
//
// A third source type, F32AsBf16, is float32 that a bf16 product reads rounded to bf16 (x times a
// frozen bf16 weight): its loads round each value as a cast would, then widen it, so the GEMM packs
// x straight from float32 instead of after a separate pass that writes a bf16 copy.
//
// round_to_bf16 (below) is that rounding over a row, into bf16 bits or rounded float32: for a copy
// that several products read (attention.cc rounds q, k, v and dout once per head).
#pragma once
#include <cstdint>
#include <type_traits>

#include "../core/dtype.h"
#include "simd.h"

#ifdef LOWRANK_X86
#include <immintrin.h>
// GCC 12 reports its own AVX-512 headers (the self-initialized _mm512_undefined_* value behind
// srli in round16, instantiated by round_to_bf16's templates) as reading uninitialized data: a
// false positive.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
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

// f32_to_bf16 of each lane as 16-bit bf16 bits: round16's / round8's rounding (to nearest even,
// NaN quieted, denormals rounded like any value), the top halves packed.
LR_TARGET_AVX512 inline __m256i to_bf16_16(__m512 x) {
  return _mm512_cvtepi32_epi16(_mm512_srli_epi32(_mm512_castps_si512(round16(x)), 16));
}
LR_TARGET_AVX2 inline __m128i to_bf16_8(__m256 x) {
  const __m256i v = _mm256_srli_epi32(_mm256_castps_si256(round8(x)), 16);  // 0 ≤ v ≤ 0xffff: packus keeps it
  return _mm_packus_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
}

// Rows of float32 rounded to bf16 as a cast does, exactly f32_to_bf16 in every lane: into bf16
// bits (uint16_t) or into float32 that holds the rounded values. The _avx512 / _avx2 forms need
// those instruction sets; round_to_bf16 (below) picks one.
template <class T>
LR_TARGET_AVX512 inline void round_to_bf16_avx512(const float* src, T* dst, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - i)) - 1);
    const __m512 x = _mm512_maskz_loadu_ps(m, src + i);
    if constexpr (sizeof(T) == 2)
      _mm256_mask_storeu_epi16(dst + i, m, to_bf16_16(x));
    else
      _mm512_mask_storeu_ps(dst + i, m, round16(x));
  }
}
// The bf16-bits form with vcvtne2ps2bf16 (32 values an instruction, 2x round16's rate): it rounds to
// nearest even and quiets NaN as f32_to_bf16 does ((bits >> 16) | 0x40), but reads denormal inputs
// as zero, so a pair of vectors holding one goes through to_bf16_16 instead (checked against
// f32_to_bf16 for all 2^32 inputs on Zen 5).
LR_TARGET_AVX512_BF16 inline void round_to_bf16_avx512bf16(const float* src, uint16_t* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m512 a = _mm512_loadu_ps(src + i), b = _mm512_loadu_ps(src + i + 16);
    if (_mm512_fpclass_ps_mask(a, 0x20) | _mm512_fpclass_ps_mask(b, 0x20)) {  // 0x20: denormal
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), to_bf16_16(a));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i + 16), to_bf16_16(b));
    } else {
      _mm512_storeu_si512(dst + i, (__m512i)_mm512_cvtne2ps_pbh(b, a));
    }
  }
  if (i < n) round_to_bf16_avx512(src + i, dst + i, n - i);
}

#endif

// round_to_bf16's loop without vectors (any CPU, and the AVX2 form's tail).
template <class T>
inline void round_to_bf16_scalar(const float* src, T* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    if constexpr (sizeof(T) == 2)
      dst[i] = f32_to_bf16(src[i]);
    else
      dst[i] = bf16_to_f32(f32_to_bf16(src[i]));
  }
}

#ifdef LOWRANK_X86
template <class T>
LR_TARGET_AVX2 inline void round_to_bf16_avx2(const float* src, T* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_loadu_ps(src + i);
    if constexpr (sizeof(T) == 2)
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), to_bf16_8(x));
    else
      _mm256_storeu_ps(dst + i, round8(x));
  }
  round_to_bf16_scalar(src + i, dst + i, n - i);
}
#endif

// dst[i] = f32_to_bf16(src[i]) (bf16 bits) or its value as float32, i < n; dst may equal src
// (float32 form). AVX-512 BF16 (bits), AVX-512 or AVX2 where the CPU has them, a scalar loop
// otherwise; every form gives f32_to_bf16's bits.
template <class T>
inline void round_to_bf16(const float* src, T* dst, int64_t n) {
  static_assert(std::is_same_v<T, uint16_t> || std::is_same_v<T, float>);
#ifdef LOWRANK_X86
  static const int level = has_avx512_bf16() ? 3 : has_avx512() ? 2 : has_avx2_fma() ? 1 : 0;
  if constexpr (sizeof(T) == 2)
    if (level == 3) return round_to_bf16_avx512bf16(src, dst, n);
  if (level >= 2) return round_to_bf16_avx512(src, dst, n);
  if (level == 1) return round_to_bf16_avx2(src, dst, n);
#endif
  round_to_bf16_scalar(src, dst, n);
}

#ifdef LOWRANK_X86
// 32 bf16 (16 pairs) as the operand type of the AVX-512 BF16 instructions.
LR_TARGET_AVX512_BF16 inline __m512bh bh(__m512i v) { return (__m512bh)v; }
#endif

}  // namespace cpu
}  // namespace lowrank
