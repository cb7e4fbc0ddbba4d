// row_exp_sum (rows.h) at three SIMD levels, picked once at run time like the matmul kernels.
#include "rows.h"
#include "vexp.h"

namespace lowrank {
namespace cpu {
namespace {

float exp_sum_scalar(const float* x, int64_t n, float shift, float scale, float* y) {
  float sum = 0;
  for (int64_t j = 0; j < n; ++j) {
    float e = std::exp(x[j] - shift);
    sum += e;
    if (y) y[j] = scale * e;
  }
  return sum;
}

#ifdef LOWRANK_X86
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
#endif

float max_portable(const float* x, int64_t n) {
  float acc[kLanes];
  std::fill(acc, acc + kLanes, -__builtin_inff());
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int l = 0; l < kLanes; ++l) acc[l] = nan_max(x[j + l], acc[l]);
  for (int l = 0; j + l < n; ++l) acc[l] = nan_max(x[j + l], acc[l]);
  float m = acc[0];
  for (int l = 1; l < kLanes; ++l) m = nan_max(acc[l], m);
  return m;
}

#ifdef LOWRANK_X86
LR_TARGET_AVX512 float max_avx512(const float* x, int64_t n) {
  const __m512 ninf = _mm512_set1_ps(-__builtin_inff());
  __m512 acc = ninf;
  __mmask16 nan = 0;
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {  // plain loads: masked ones cost more on AMD
    const __m512 v = _mm512_loadu_ps(x + j);
    nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    acc = _mm512_max_ps(acc, v);
  }
  if (j < n) {
    const __m512 v = _mm512_mask_loadu_ps(ninf, __mmask16((1u << (n - j)) - 1), x + j);
    nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    acc = _mm512_max_ps(acc, v);
  }
  return nan ? __builtin_nanf("") : _mm512_reduce_max_ps(acc);
}
#endif

using MaxFn = float (*)(const float*, int64_t);

MaxFn pick_max() {
#ifdef LOWRANK_X86
  if (has_avx512()) return max_avx512;
#endif
  return max_portable;
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


float row_max(const float* x, int64_t n) {
  static const MaxFn fn = pick_max();
  return fn(x, n);
}

float row_exp_sum(const float* x, int64_t n, float shift, float scale, float* y) {
  static const ExpSumFn fn = pick_exp_sum();
  return fn(x, n, shift, scale, y);
}

}  // namespace cpu
}  // namespace lowrank
