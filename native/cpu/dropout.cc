// Dropout on the CPU: the keep mask comes from the Philox stream (core/philox.h) element by element,
// AVX-512 where present (16 lanes of Philox at once), a scalar loop otherwise.
#include "../core/philox.h"
#include "../ops/dropout.h"
#include "parallel.h"
#include "simd.h"

#ifdef LOWRANK_X86
#include <immintrin.h>
#endif

namespace lowrank {
namespace cpu {
namespace {

// y = x · (scale or 0): a dropped NaN is NaN · 0 = NaN, as in PyTorch (x · mask), not a silent 0.
void dropout_scalar(const float* x, float* y, int64_t n, float p, float scale, uint64_t seed, uint64_t offset, uint64_t i0) {
  for (int64_t j = 0; j < n; ++j) y[j] = x[j] * (philox_keep(seed, offset, i0 + uint64_t(j), p) ? scale : 0.0f);
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
      // x · (scale or 0), as dropout_scalar: a dropped NaN stays NaN
      const __m512 factor = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(u, vp, _CMP_GE_OQ), vscale);
      if (n - jb >= 16) {  // plain loads and stores: masked stores cost more on AMD
        _mm512_storeu_ps(y + jb, _mm512_mul_ps(_mm512_loadu_ps(x + jb), factor));
      } else {
        const __mmask16 m = __mmask16((1u << (n - jb)) - 1);
        _mm512_mask_storeu_ps(y + jb, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + jb), factor));
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

}  // namespace

void dropout_run(const float* x, float* y, int64_t n, float p, float scale, uint64_t seed, uint64_t offset, uint64_t i0) {
  static const DropoutFn fn = pick_dropout();
  fn(x, y, n, p, scale, seed, offset, i0);
}

void dropout_f32(const float* x, float* y, int64_t n, float p, float scale, uint64_t seed, uint64_t offset) {
  parallel_for(n, kComputeGrain, [&](int64_t i0, int64_t i1) { dropout_run(x + i0, y + i0, i1 - i0, p, scale, seed, offset, uint64_t(i0)); });
}


}  // namespace cpu
}  // namespace lowrank
