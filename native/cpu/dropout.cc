// Dropout on the CPU: the keep mask comes from the Philox stream (core/philox.h) element by element,
// AVX-512 where present (16 lanes of Philox at once), a scalar loop otherwise.
#include <algorithm>
#include <vector>

#include "../core/philox.h"
#include "../ops/dropout.h"
#include "parallel.h"
#include "rows.h"
#include "simd.h"

#ifdef LOWRANK_X86
#include <immintrin.h>

// GCC 12 flags the undefined pass-through operand inside its own masked-load intrinsics.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace lowrank {
namespace cpu {
namespace {

// y = x · (scale or 0): a dropped NaN is NaN · 0 = NaN, as in PyTorch (x · mask), not a silent 0.
// With x2 (not null), y2 = x2 · the same factor.
void dropout_scalar(const float* x, float* y, const float* x2, float* y2, int64_t n, float p, float scale, uint64_t seed,
                    uint64_t offset, uint64_t i0) {
  for (int64_t j = 0; j < n; ++j) {
    const float factor = philox_keep(seed, offset, i0 + uint64_t(j), p) ? scale : 0.0f;
    y[j] = x[j] * factor;
    if (x2) y2[j] = x2[j] * factor;
  }
}

#ifdef LOWRANK_X86
// The high 32 bits of a[l] * m for each 32-bit lane l (_mm512_mul_epu32 multiplies even lanes).
LR_TARGET_AVX512 inline __m512i mulhi_epu32(__m512i a, __m512i m) {
  __m512i even = _mm512_srli_epi64(_mm512_mul_epu32(a, m), 32);
  __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(a, 32), m);
  return _mm512_mask_blend_epi32(0xAAAA, even, odd);
}

// philox_keep for groups of 64 elements at once, bit-identical to the scalar rule: a group's 16
// counters run through Philox4x32-10 on 16 lanes, and word w of lane l decides element 16·w + l
// of the group (see philox_keep). Groups are aligned to the stream (element j = offset + i0 + j'
// is in group j / 64), so a run that starts or ends inside a group masks off the group's lanes
// outside the run (masked loads and stores never touch them). Each iteration runs BLOCKS groups
// through the rounds side by side: one group is a chain of 10 dependent multiply rounds, and
// interleaving them keeps the multipliers busy. Measured on Zen 5, one thread: 0.74 ns an element
// when each element took a whole Philox block (one word of four), ~0.2 with all four words.
// PAIR: the same factors also scale x2 into y2.
template <int BLOCKS, bool PAIR>
LR_TARGET_AVX512 inline void dropout_groups(const float* x, float* y, const float* x2, float* y2, uint64_t j0, uint64_t j1,
                                            uint64_t g, float p, float scale, const __m512i key0[10], const __m512i key1[10]) {
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i m0 = _mm512_set1_epi32(int(0xD2511F53u)), m1 = _mm512_set1_epi32(int(0xCD9E8D57u));
  const __m512 vp = _mm512_set1_ps(p), vscale = _mm512_set1_ps(scale), unit = _mm512_set1_ps(1.0f / 16777216.0f);
  __m512i c[BLOCKS][4];
  for (int b = 0; b < BLOCKS; ++b) {
    const uint64_t counter = (g + uint64_t(b)) << 4;  // lane 0's; a multiple of 16, so lanes never carry
    c[b][0] = _mm512_or_si512(_mm512_set1_epi32(int(uint32_t(counter))), lane);
    c[b][1] = _mm512_set1_epi32(int(uint32_t(counter >> 32)));
    c[b][2] = _mm512_set1_epi32(1);
    c[b][3] = _mm512_setzero_si512();
  }
  for (int round = 0; round < 10; ++round) {
    for (int b = 0; b < BLOCKS; ++b) {
      const __m512i hi0 = mulhi_epu32(c[b][0], m0), lo0 = _mm512_mullo_epi32(c[b][0], m0);
      const __m512i hi1 = mulhi_epu32(c[b][2], m1), lo1 = _mm512_mullo_epi32(c[b][2], m1);
      c[b][0] = _mm512_ternarylogic_epi32(hi1, c[b][1], key0[round], 0x96);  // hi1 ^ c1 ^ k0
      c[b][1] = lo1;
      c[b][2] = _mm512_ternarylogic_epi32(hi0, c[b][3], key1[round], 0x96);  // hi0 ^ c3 ^ k1
      c[b][3] = lo0;
    }
  }
  for (int b = 0; b < BLOCKS; ++b)
    for (int w = 0; w < 4; ++w) {
      const uint64_t start = ((g + uint64_t(b)) << 6) + 16 * uint64_t(w);  // stream position of lane 0
      if (start >= j1 || start + 16 <= j0) continue;
      const __m512 u = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(c[b][w], 8)), unit);
      // x · (scale or 0), as dropout_scalar: a dropped NaN stays NaN
      const __m512 factor = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(u, vp, _CMP_GE_OQ), vscale);
      const int64_t at = int64_t(start - j0);  // index into x and y; negative in a run's first group
      if (start >= j0 && start + 16 <= j1) {   // plain loads and stores: masked ones cost more on AMD
        _mm512_storeu_ps(y + at, _mm512_mul_ps(_mm512_loadu_ps(x + at), factor));
        if (PAIR) _mm512_storeu_ps(y2 + at, _mm512_mul_ps(_mm512_loadu_ps(x2 + at), factor));
      } else {
        const int lo = start < j0 ? int(j0 - start) : 0, hi = start + 16 > j1 ? int(j1 - start) : 16;
        const __mmask16 m = __mmask16(((1u << hi) - 1) & ~((1u << lo) - 1));
        _mm512_mask_storeu_ps(y + at, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + at), factor));
        if (PAIR) _mm512_mask_storeu_ps(y2 + at, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x2 + at), factor));
      }
    }
}

template <bool PAIR>
LR_TARGET_AVX512 void dropout_avx512_runs(const float* x, float* y, const float* x2, float* y2, int64_t n, float p, float scale,
                                           uint64_t seed, uint64_t offset, uint64_t i0) {
  constexpr int kBlocks = 4;  // groups in flight (1.07 ns an element with one, 0.75 with four, 0.80 with eight)
  __m512i key0[10], key1[10];  // the round keys, the same for every group
  uint32_t k0 = uint32_t(seed), k1 = uint32_t(seed >> 32);
  for (int round = 0; round < 10; ++round, k0 += 0x9E3779B9u, k1 += 0xBB67AE85u) {
    key0[round] = _mm512_set1_epi32(int(k0));
    key1[round] = _mm512_set1_epi32(int(k1));
  }
  const uint64_t j0 = offset + i0, j1 = j0 + uint64_t(n);  // the run's stream positions
  uint64_t g = j0 >> 6;
  const uint64_t g_end = (j1 + 63) >> 6;
  for (; g + kBlocks <= g_end; g += kBlocks) dropout_groups<kBlocks, PAIR>(x, y, x2, y2, j0, j1, g, p, scale, key0, key1);
  for (; g < g_end; ++g) dropout_groups<1, PAIR>(x, y, x2, y2, j0, j1, g, p, scale, key0, key1);
}

LR_TARGET_AVX512 void dropout_avx512(const float* x, float* y, const float* x2, float* y2, int64_t n, float p, float scale,
                                      uint64_t seed, uint64_t offset, uint64_t i0) {
  if (x2)
    dropout_avx512_runs<true>(x, y, x2, y2, n, p, scale, seed, offset, i0);
  else
    dropout_avx512_runs<false>(x, y, x2, y2, n, p, scale, seed, offset, i0);
}
#endif

using DropoutFn = void (*)(const float*, float*, const float*, float*, int64_t, float, float, uint64_t, uint64_t, uint64_t);

// AVX2 hosts use the scalar loop: without AVX-512's 16 lanes and masks the gain is smaller.
DropoutFn pick_dropout() {
#ifdef LOWRANK_X86
  if (has_avx512()) return dropout_avx512;
#endif
  return dropout_scalar;
}

}  // namespace

void dropout_run(const float* x, float* y, int64_t n, float p, float scale, uint64_t seed, uint64_t offset, uint64_t i0) {
  dropout_run2(x, y, nullptr, nullptr, n, p, scale, seed, offset, i0);
}

void dropout_run2(const float* x, float* y, const float* x2, float* y2, int64_t n, float p, float scale, uint64_t seed,
                  uint64_t offset, uint64_t i0) {
  static const DropoutFn fn = pick_dropout();
  fn(x, y, x2, y2, n, p, scale, seed, offset, i0);
}

constexpr int64_t kDropoutSpan = 2048;  // elements per residual step: 8 KB of products, kept in L1

void dropout_f32(const float* x, float* y, int64_t n, float p, float scale, uint64_t seed, uint64_t offset, const float* residual) {
  parallel_for(n, kComputeGrain, [&](int64_t i0, int64_t i1) {
    if (!residual) {
      dropout_run(x + i0, y + i0, i1 - i0, p, scale, seed, offset, uint64_t(i0));
      return;
    }
    // The product into a buffer the size of a chunk, then the sum while both are in L1 (y may be residual).
    thread_local std::vector<float> dropped;
    for (int64_t j0 = i0; j0 < i1; j0 += kDropoutSpan) {
      const int64_t m = std::min(kDropoutSpan, i1 - j0);
      dropped.resize(size_t(m));
      dropout_run(x + j0, dropped.data(), m, p, scale, seed, offset, uint64_t(j0));
      for (int64_t j = 0; j < m; ++j) y[j0 + j] = residual[j0 + j] + dropped[size_t(j)];
    }
  });
}


}  // namespace cpu
}  // namespace lowrank
