// row_exp_sum, gelu and dropout (nn_rows.h) at three SIMD levels, picked once at run time like the
// gemm kernels.
//
// exp(x) = 2^n * exp(r) with n = round(x / ln 2) and r = x - n ln 2 (|r| <= ln2/2, ln 2 split in a
// high part exact in float and a low correction), exp(r) by Cephes' degree-7 polynomial, 2^n built
// in the exponent bits. Arguments below ln(FLT_MIN) give exactly 0 (so masked -inf scores vanish),
// above ln(FLT_MAX) give +inf, NaN stays NaN.
#include <cmath>

#include "../core/philox.h"
#include "nn_rows.h"
#include "simd.h"

#ifdef LOWRANK_X86
#include <immintrin.h>
// GCC 12 reports its own AVX-512 headers (the self-initialized _mm512_undefined_* values behind
// roundscale, cvtps and reduce_add) as reading uninitialized data: a false positive.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace lowrank {
namespace cpu {
namespace {

constexpr float kExpLo = -87.3365447505531f;  // ln(FLT_MIN): 2^n stays a normal float
constexpr float kExpHi = 88.3762626647949f;
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693359375f;
constexpr float kLn2Lo = -2.12194440e-4f;
constexpr float kP0 = 1.9875691500e-4f, kP1 = 1.3981999507e-3f, kP2 = 8.3334519073e-3f;
constexpr float kP3 = 4.1665795894e-2f, kP4 = 1.6666665459e-1f, kP5 = 5.0000001201e-1f;

float exp_sum_scalar(const float* x, int64_t n, float shift, float scale, float* y) {
  float sum = 0;
  for (int64_t j = 0; j < n; ++j) {
    float e = std::exp(x[j] - shift);
    sum += e;
    if (y) y[j] = scale * e;
  }
  return sum;
}

constexpr float kGeluK = 0.7978845608028654f;  // √(2/π)
constexpr float kGeluC = 0.044715f;

void gelu_scalar(const float* x, float* y, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const float v = x[j];
    y[j] = v / (1.0f + std::exp(-2.0f * kGeluK * (v + kGeluC * v * v * v)));
  }
}

void gelu_backward_scalar(const float* x, const float* g, float* gx, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const float v = x[j];
    const float s = 1.0f / (1.0f + std::exp(-2.0f * kGeluK * (v + kGeluC * v * v * v)));
    const float du = kGeluK * (1.0f + 3.0f * kGeluC * v * v);
    gx[j] = g[j] * (s + 2.0f * v * s * (1.0f - s) * du);
  }
}

#ifdef LOWRANK_X86
LR_TARGET_AVX512 inline __m512 exp512(__m512 x) {
  const __m512 lo = _mm512_set1_ps(kExpLo), hi = _mm512_set1_ps(kExpHi);
  __m512 xc = _mm512_min_ps(hi, _mm512_max_ps(lo, x));  // (const, x) order keeps NaN
  __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Hi), xc);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Lo), r);
  __m512 p = _mm512_set1_ps(kP0);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kP1));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kP2));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kP3));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kP4));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kP5));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  __m512i bits = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
  __m512 e = _mm512_mul_ps(p, _mm512_castsi512_ps(bits));
  e = _mm512_mask_mov_ps(e, _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ), _mm512_setzero_ps());
  return _mm512_mask_mov_ps(e, _mm512_cmp_ps_mask(x, hi, _CMP_GT_OQ), _mm512_set1_ps(__builtin_inff()));
}

LR_TARGET_AVX512 float exp_sum_avx512(const float* x, int64_t n, float shift, float scale, float* y) {
  const __m512 vshift = _mm512_set1_ps(shift), vscale = _mm512_set1_ps(scale);
  __m512 acc = _mm512_setzero_ps();
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 m = n - j >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - j)) - 1);
    __m512 e = exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + j), vshift));
    acc = _mm512_mask_add_ps(acc, m, acc, e);
    if (y) _mm512_mask_storeu_ps(y + j, m, _mm512_mul_ps(e, vscale));
  }
  return _mm512_reduce_add_ps(acc);
}

// s = sigmoid(2u) = 1 / (1 + exp(-2u)) for GELU; exp overflowing to +inf gives s = 0 (x·s = -0 for x -> -inf).
LR_TARGET_AVX512 inline __m512 gelu_sig512(__m512 v, __m512* du) {
  const __m512 k = _mm512_set1_ps(kGeluK), c = _mm512_set1_ps(kGeluC), one = _mm512_set1_ps(1.0f);
  const __m512 v2 = _mm512_mul_ps(v, v);
  const __m512 u = _mm512_mul_ps(k, _mm512_fmadd_ps(_mm512_mul_ps(c, v2), v, v));
  if (du) *du = _mm512_mul_ps(k, _mm512_fmadd_ps(_mm512_set1_ps(3.0f * kGeluC), v2, one));
  return _mm512_div_ps(one, _mm512_add_ps(one, exp512(_mm512_mul_ps(_mm512_set1_ps(-2.0f), u))));
}

LR_TARGET_AVX512 void gelu_avx512(const float* x, float* y, int64_t n) {
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 m = n - j >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - j)) - 1);
    const __m512 v = _mm512_maskz_loadu_ps(m, x + j);
    _mm512_mask_storeu_ps(y + j, m, _mm512_mul_ps(v, gelu_sig512(v, nullptr)));
  }
}

LR_TARGET_AVX512 void gelu_backward_avx512(const float* x, const float* g, float* gx, int64_t n) {
  const __m512 one = _mm512_set1_ps(1.0f), two = _mm512_set1_ps(2.0f);
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 m = n - j >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - j)) - 1);
    const __m512 v = _mm512_maskz_loadu_ps(m, x + j);
    __m512 du;
    const __m512 s = gelu_sig512(v, &du);
    // s + 2·v·s·(1 - s)·du
    const __m512 d = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_mul_ps(two, v), _mm512_mul_ps(s, _mm512_sub_ps(one, s))), du, s);
    _mm512_mask_storeu_ps(gx + j, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, g + j), d));
  }
}

LR_TARGET_AVX2 inline __m256 exp256(__m256 x) {
  const __m256 lo = _mm256_set1_ps(kExpLo), hi = _mm256_set1_ps(kExpHi);
  __m256 xc = _mm256_min_ps(hi, _mm256_max_ps(lo, x));
  __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Hi), xc);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Lo), r);
  __m256 p = _mm256_set1_ps(kP0);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP1));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP2));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP3));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP4));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP5));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  __m256 e = _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
  e = _mm256_blendv_ps(e, _mm256_setzero_ps(), _mm256_cmp_ps(x, lo, _CMP_LT_OQ));
  return _mm256_blendv_ps(e, _mm256_set1_ps(__builtin_inff()), _mm256_cmp_ps(x, hi, _CMP_GT_OQ));
}

LR_TARGET_AVX2 float exp_sum_avx2(const float* x, int64_t n, float shift, float scale, float* y) {
  const __m256 vshift = _mm256_set1_ps(shift), vscale = _mm256_set1_ps(scale);
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t j = 0; j < n; j += 8) {
    const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(int(std::min<int64_t>(n - j, 8))), lane);
    __m256 e = exp256(_mm256_sub_ps(_mm256_maskload_ps(x + j, m), vshift));
    acc = _mm256_add_ps(acc, _mm256_and_ps(e, _mm256_castsi256_ps(m)));
    if (y) _mm256_maskstore_ps(y + j, m, _mm256_mul_ps(e, vscale));
  }
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

LR_TARGET_AVX2 inline __m256 gelu_sig256(__m256 v, __m256* du) {
  const __m256 k = _mm256_set1_ps(kGeluK), c = _mm256_set1_ps(kGeluC), one = _mm256_set1_ps(1.0f);
  const __m256 v2 = _mm256_mul_ps(v, v);
  const __m256 u = _mm256_mul_ps(k, _mm256_fmadd_ps(_mm256_mul_ps(c, v2), v, v));
  if (du) *du = _mm256_mul_ps(k, _mm256_fmadd_ps(_mm256_set1_ps(3.0f * kGeluC), v2, one));
  return _mm256_div_ps(one, _mm256_add_ps(one, exp256(_mm256_mul_ps(_mm256_set1_ps(-2.0f), u))));
}

LR_TARGET_AVX2 void gelu_avx2(const float* x, float* y, int64_t n) {
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 v = _mm256_loadu_ps(x + j);
    _mm256_storeu_ps(y + j, _mm256_mul_ps(v, gelu_sig256(v, nullptr)));
  }
  gelu_scalar(x + j, y + j, n - j);
}

LR_TARGET_AVX2 void gelu_backward_avx2(const float* x, const float* g, float* gx, int64_t n) {
  const __m256 one = _mm256_set1_ps(1.0f), two = _mm256_set1_ps(2.0f);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 v = _mm256_loadu_ps(x + j);
    __m256 du;
    const __m256 s = gelu_sig256(v, &du);
    const __m256 d = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_mul_ps(two, v), _mm256_mul_ps(s, _mm256_sub_ps(one, s))), du, s);
    _mm256_storeu_ps(gx + j, _mm256_mul_ps(_mm256_loadu_ps(g + j), d));
  }
  gelu_backward_scalar(x + j, g + j, gx + j, n - j);
}
#endif

void dropout_scalar(const float* x, float* y, int64_t n, float p, float scale, uint64_t seed, uint64_t offset, uint64_t i0) {
  for (int64_t j = 0; j < n; ++j) y[j] = philox_keep(seed, offset, i0 + uint64_t(j), p) ? x[j] * scale : 0.0f;
}

#ifdef LOWRANK_X86
// The high 32 bits of a[l] * m for each 32-bit lane l (_mm512_mul_epu32 multiplies even lanes).
LR_TARGET_AVX512 inline __m512i mulhi_epu32(__m512i a, __m512i m) {
  __m512i even = _mm512_srli_epi64(_mm512_mul_epu32(a, m), 32);
  __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(a, 32), m);
  return _mm512_mask_blend_epi32(0xAAAA, even, odd);
}

// philox_keep for 16 consecutive counters at once, bit-identical to the scalar rule: the same
// Philox4x32-10 rounds on 16 lanes, lane 0's word turned into the same float and compared with p.
// Each iteration runs kBlocks independent 16-lane blocks through the rounds side by side: one
// block is a chain of 10 dependent multiply rounds, and interleaving them keeps the multipliers
// busy (measured on Zen 5, one thread: 1.07 ns an element with one block, 0.75 with four, 0.80
// with eight; full blocks use unmasked loads and stores, 0.77 -> 0.74).
LR_TARGET_AVX512 void dropout_avx512(const float* x, float* y, int64_t n, float p, float scale, uint64_t seed, uint64_t offset,
                                      uint64_t i0) {
  constexpr int kBlocks = 4;
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i m0 = _mm512_set1_epi32(int(0xD2511F53u)), m1 = _mm512_set1_epi32(int(0xCD9E8D57u));
  const __m512 vp = _mm512_set1_ps(p), vscale = _mm512_set1_ps(scale), unit = _mm512_set1_ps(1.0f / 16777216.0f);
  __m512i key0[10], key1[10];  // the round keys, the same for every block
  uint32_t k0 = uint32_t(seed), k1 = uint32_t(seed >> 32);
  for (int round = 0; round < 10; ++round, k0 += 0x9E3779B9u, k1 += 0xBB67AE85u) {
    key0[round] = _mm512_set1_epi32(int(k0));
    key1[round] = _mm512_set1_epi32(int(k1));
  }
  for (int64_t j = 0; j < n; j += 16 * kBlocks) {
    __m512i c0[kBlocks], c1[kBlocks], c2[kBlocks], c3[kBlocks];
    for (int b = 0; b < kBlocks; ++b) {
      const uint64_t base = offset + i0 + uint64_t(j + 16 * b);  // counter of lane 0; lanes add 0..15 with carry
      const __m512i lo = _mm512_set1_epi32(int(uint32_t(base)));
      c0[b] = _mm512_add_epi32(lo, lane);
      c1[b] = _mm512_set1_epi32(int(uint32_t(base >> 32)));
      c1[b] = _mm512_mask_add_epi32(c1[b], _mm512_cmplt_epu32_mask(c0[b], lo), c1[b], _mm512_set1_epi32(1));
      c2[b] = _mm512_setzero_si512();
      c3[b] = _mm512_setzero_si512();
    }
    for (int round = 0; round < 10; ++round) {
      for (int b = 0; b < kBlocks; ++b) {
        const __m512i hi0 = mulhi_epu32(c0[b], m0), lo0 = _mm512_mullo_epi32(c0[b], m0);
        const __m512i hi1 = mulhi_epu32(c2[b], m1), lo1 = _mm512_mullo_epi32(c2[b], m1);
        c0[b] = _mm512_ternarylogic_epi32(hi1, c1[b], key0[round], 0x96);  // hi1 ^ c1 ^ k0
        c1[b] = lo1;
        c2[b] = _mm512_ternarylogic_epi32(hi0, c3[b], key1[round], 0x96);  // hi0 ^ c3 ^ k1
        c3[b] = lo0;
      }
    }
    for (int b = 0; b < kBlocks && j + 16 * b < n; ++b) {
      const int64_t jb = j + 16 * b;
      const __m512 u = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(c0[b], 8)), unit);
      const __mmask16 keep = _mm512_cmp_ps_mask(u, vp, _CMP_GE_OQ);
      if (n - jb >= 16) {  // plain loads and stores: masked stores cost more on AMD
        _mm512_storeu_ps(y + jb, _mm512_maskz_mul_ps(keep, _mm512_loadu_ps(x + jb), vscale));
      } else {
        const __mmask16 m = __mmask16((1u << (n - jb)) - 1);
        _mm512_mask_storeu_ps(y + jb, m, _mm512_maskz_mul_ps(keep, _mm512_maskz_loadu_ps(m, x + jb), vscale));
      }
    }
  }
}
#endif

using DropoutFn = void (*)(const float*, float*, int64_t, float, float, uint64_t, uint64_t, uint64_t);

// AVX2 hosts use the scalar loop: without AVX-512's 16 lanes and masks the gain is smaller.
DropoutFn pick_dropout() {
#ifdef LOWRANK_X86
  if (has_avx512()) return dropout_avx512;
#endif
  return dropout_scalar;
}

using GeluFn = void (*)(const float*, float*, int64_t);
using GeluBackwardFn = void (*)(const float*, const float*, float*, int64_t);

GeluFn pick_gelu() {
#ifdef LOWRANK_X86
  if (has_avx512()) return gelu_avx512;
  if (has_avx2_fma()) return gelu_avx2;
#endif
  return gelu_scalar;
}

GeluBackwardFn pick_gelu_backward() {
#ifdef LOWRANK_X86
  if (has_avx512()) return gelu_backward_avx512;
  if (has_avx2_fma()) return gelu_backward_avx2;
#endif
  return gelu_backward_scalar;
}

using ExpSumFn = float (*)(const float*, int64_t, float, float, float*);

ExpSumFn pick_exp_sum() {
#ifdef LOWRANK_X86
  if (has_avx512()) return exp_sum_avx512;
  if (has_avx2_fma()) return exp_sum_avx2;
#endif
  return exp_sum_scalar;
}

}  // namespace

float row_exp_sum(const float* x, int64_t n, float shift, float scale, float* y) {
  static const ExpSumFn fn = pick_exp_sum();
  return fn(x, n, shift, scale, y);
}

void gelu_run(const float* x, float* y, int64_t n) {
  static const GeluFn fn = pick_gelu();
  fn(x, y, n);
}

void gelu_backward_run(const float* x, const float* g, float* gx, int64_t n) {
  static const GeluBackwardFn fn = pick_gelu_backward();
  fn(x, g, gx, n);
}

void dropout_run(const float* x, float* y, int64_t n, float p, float scale, uint64_t seed, uint64_t offset, uint64_t i0) {
  static const DropoutFn fn = pick_dropout();
  fn(x, y, n, p, scale, seed, offset, i0);
}

}  // namespace cpu
}  // namespace lowrank
