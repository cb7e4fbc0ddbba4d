// AVX-512 GEMM: 8×32 and 16×16 micro-kernels and vectorized packing, for float32 words and, where
// the CPU has AVX-512 BF16, for bf16 pairs.
//
// Micro-kernels: an MR × 16·NV tile of C in MR·NV zmm accumulators. Per k step: NV 16-wide loads
// of B, MR broadcasts of A, MR·NV FMAs. 16 independent FMA chains cover the FMA latency (4 cycles
// × 2 pipes needs at least 8) and leave registers to spare. B streams from L2, so the kernel
// prefetches it 8 rows ahead; C is prefetched before the k loop. The bf16 kernels have the same
// shape with vdpbf16ps in place of the FMA: one instruction per 16 lanes does two k steps (the
// bf16 pair in each 32-bit word), at the FMA's issue rate on Zen 5 (2 per cycle; measured 7.5 G
// instructions/s for either on one core, so 2x the float32 flops), with latency 6 cycles instead
// of 4: 16 chains still cover 2 × 6.
//
// Packing: when the panel's columns are contiguous (A transposed, B as stored) it is a copy (bf16
// pairs: two source rows interleaved); when its rows are (A as stored, B transposed) 16×16 blocks
// of words are transposed in registers (bf16 pairs: a 32-bit word of a row already is one).
#include "bf16_load.h"
#include "matmul_kernels.h"
#include "simd.h"

#ifdef LOWRANK_X86
#include <immintrin.h>

#include <algorithm>

// GCC 12 flags the undefined pass-through operand inside its own shuffle intrinsics.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace lowrank {
namespace cpu {
namespace {

// C's rows are touched only after the k loop: start fetching them now.
template <int MR, int NV>
LR_TARGET_AVX512 inline void prefetch_c(const float* c, int64_t ldc) {
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + 16 * v), _MM_HINT_T0);
}

template <int MR, int NV>
LR_TARGET_AVX512 inline void zero_acc(__m512 (&acc)[MR][NV]) {
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_setzero_ps();
}

// B streams from L2: fetch its rows 8 k steps ahead.
template <int NV>
LR_TARGET_AVX512 inline void prefetch_b(const float* b, int64_t b_rs) {
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) _mm_prefetch(reinterpret_cast<const char*>(b + 8 * b_rs + 16 * v), _MM_HINT_T0);
}

// C = alpha · acc + beta · C (beta == 0: C is not read).
template <int MR, int NV>
LR_TARGET_AVX512 inline void store_c(__m512 (&acc)[MR][NV], float* c, int64_t ldc, float alpha, float beta) {
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      float* ci = c + i * ldc + 16 * v;
      __m512 out = _mm512_mul_ps(va, acc[i][v]);
      if (beta != 0) out = _mm512_fmadd_ps(vb, _mm512_loadu_ps(ci), out);
      _mm512_storeu_ps(ci, out);
    }
}

// C[0:MR, 0:16·NV] from MR broadcasts of A and NV vectors of B per k step: MR·NV accumulators.
// PACKED_A fixes A's strides at (1, MR) so the loop needs no registers for them.
template <int MR, int NV, bool PACKED_A>
LR_TARGET_AVX512 inline void micro_body(int64_t kc, const float* a, int64_t a_rs, int64_t a_cs, const float* b,
                                        int64_t b_rs, float* c, int64_t ldc, float alpha, float beta) {
  if (PACKED_A) a_rs = 1, a_cs = MR;
  prefetch_c<MR, NV>(c, ldc);
  __m512 acc[MR][NV];
  zero_acc(acc);
  for (int64_t p = 0; p < kc; ++p, a += a_cs, b += b_rs) {
    __m512 bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = _mm512_loadu_ps(b + 16 * v);
    prefetch_b<NV>(b, b_rs);
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) {
      __m512 ai = _mm512_set1_ps(a[i * a_rs]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_fmadd_ps(ai, bv[v], acc[i][v]);
    }
  }
  store_c(acc, c, ldc, alpha, beta);
}

template <int MR, int NV>
LR_TARGET_AVX512 void micro(int64_t kc, const float* a, int64_t a_rs, int64_t a_cs, const float* b, int64_t b_rs,
                            float* c, int64_t ldc, float alpha, float beta) {
  if (a_rs == 1 && a_cs == MR)
    micro_body<MR, NV, true>(kc, a, a_rs, a_cs, b, b_rs, c, ldc, alpha, beta);
  else
    micro_body<MR, NV, false>(kc, a, a_rs, a_cs, b, b_rs, c, ldc, alpha, beta);
}

// The same tile from packed bf16 pairs (A always packed: strides 1, MR words), kw pair steps.
// vdpbf16ps multiplies the 16 pairs of B by a broadcast pair of A and adds both products into each
// float32 lane. Products of bf16 are exact in float32; the instruction ignores MXCSR: it rounds
// each of its two additions to nearest even and flushes denormal inputs and results (below
// 2^-126) to zero, as gemv.cc's bf16 kernels do, which no weight or activation comes near. The sums
// are float32, as in the widening kernels, in another order (each pair summed first).
template <int MR, int NV>
LR_TARGET_AVX512_BF16 void micro_bf16(int64_t kw, const float* a, int64_t, int64_t, const float* b, int64_t b_rs, float* c,
                                      int64_t ldc, float alpha, float beta) {
  prefetch_c<MR, NV>(c, ldc);
  __m512 acc[MR][NV];
  zero_acc(acc);
  for (int64_t q = 0; q < kw; ++q, a += MR, b += b_rs) {
    __m512bh bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = bh(_mm512_castps_si512(_mm512_loadu_ps(b + 16 * v)));
    prefetch_b<NV>(b, b_rs);
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) {
      const __m512bh ai = bh(_mm512_castps_si512(_mm512_set1_ps(a[i])));  // a bit pattern, not a float
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_dpbf16_ps(acc[i][v], ai, bv[v]);
    }
  }
  store_c(acc, c, ldc, alpha, beta);
}

// In-register transpose: r[j] becomes column j of the 16×16 matrix whose rows were r[0..15].
LR_TARGET_AVX512 inline void transpose16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 16; i += 2) {  // interleave pairs of rows
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {  // 4×4 blocks within each 128-bit lane
    r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
    r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
    r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  for (int i = 0; i < 4; ++i) {  // 128-bit lanes across pairs of 4-row groups
    t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
    t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xDD);
    t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
    t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xDD);
  }
  for (int i = 0; i < 8; ++i) {  // and across the two halves
    r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
    r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xDD);
  }
}

inline __mmask16 lanes(int64_t n) { return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1); }

// Packed words come in two kinds (matmul_kernels.h): KW = 1, an element of T as float32 (bf16
// widened, float32 of a bf16 product rounded and widened: load16, bf16_load.h); KW = 2, a pair of
// bf16 along k, k = 2q in the low half, and a k past kc reads as zero (odd kc). These two loads
// are all the packing below knows of the kinds.

// 32 consecutive bf16 (16 pairs), those from n on zero: one load.
LR_TARGET_AVX512 inline __m512 pairs16(const uint16_t* p, int64_t n) {
  if (n >= 32) return _mm512_castsi512_ps(_mm512_loadu_si512(p));
  return _mm512_castsi512_ps(_mm512_maskz_loadu_epi16(__mmask32((uint64_t(1) << n) - 1), p));
}

// The same from float32 rounded to bf16: two vectors rounded and widened, then one two-source
// word permute gathers their top halves (the bf16) in order.
LR_TARGET_AVX512 inline __m512 pairs16(const F32AsBf16* p, int64_t n) {
  // Word t of the result is word 2t + 1 of the 64 in (lo, hi): the top half of value t.
  alignas(64) static constexpr uint16_t kTops[32] = {1,  3,  5,  7,  9,  11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31,
                                                     33, 35, 37, 39, 41, 43, 45, 47, 49, 51, 53, 55, 57, 59, 61, 63};
  const __m512 lo = n >= 16 ? load16(p) : load16(lanes(n), p);
  const __m512 hi = n >= 32 ? load16(p + 16) : load16(lanes(std::max<int64_t>(n - 16, 0)), p + 16);
  return _mm512_castsi512_ps(_mm512_permutex2var_epi16(_mm512_castps_si512(lo), _mm512_load_si512(kTops), _mm512_castps_si512(hi)));
}

// Words q..q+15 along a row whose k runs contiguously (element k at row[k]), k < kc.
template <int KW, class T>
LR_TARGET_AVX512 inline __m512 row_words(const T* row, int64_t q, int64_t kc) {
  const int64_t n = kc - KW * q;  // elements left in the row
  if constexpr (KW == 1) {
    return n >= 16 ? load16(row + q) : load16(lanes(n), row + q);
  } else {
    return pairs16(row + 2 * q, n);
  }
}

// Word q of 16 panel rows whose elements at one k lie side by side (element (r, k) at
// s[r + k*cs]), rows in `keep`, k < kc.
template <int KW, class T>
LR_TARGET_AVX512 inline __m512 column_words(const T* s, int64_t cs, int64_t q, int64_t kc, __mmask16 keep) {
  if constexpr (KW == 1) {
    return keep == 0xFFFF ? load16(s + q * cs) : load16(keep, s + q * cs);
  } else {
    // A widened value holds its bf16 in the top half: k = 2q's moves down to the low half.
    const __m512i lo = _mm512_srli_epi32(_mm512_castps_si512(load16(keep, s + 2 * q * cs)), 16);
    const __m512i hi = 2 * q + 1 < kc ? _mm512_castps_si512(load16(keep, s + (2 * q + 1) * cs)) : _mm512_setzero_si512();
    return _mm512_castsi512_ps(_mm512_or_si512(lo, hi));
  }
}

// Panel columns contiguous (rs == 1): words q0..q0+15 of the source (each `rows` wide, read front
// to back, their rows stay in L1) are copied panel by panel, so each panel gets a contiguous run
// of stores (one source row scattered over all panels at once would hit the same L1 set in every
// panel, as panels lie kw·w words apart). Full vectors use plain moves, masked ones are slower.
template <int KW, class T>
LR_TARGET_AVX512 void pack_columns(const T* src, int64_t cs, int64_t rows, int64_t kc, int w, float* dst) {
  const int64_t kw = (kc + KW - 1) / KW;
  for (int64_t q0 = 0; q0 < kw; q0 += 16) {
    const int64_t q1 = std::min<int64_t>(kw, q0 + 16);
    float* d = dst;
    for (int64_t r0 = 0; r0 < rows; r0 += w, d += w * kw)
      for (int g = 0; g < w; g += 16) {
        const __mmask16 keep = lanes(std::clamp<int64_t>(rows - r0 - g, 0, 16)), out = lanes(std::min(16, w - g));
        const T* s = src + r0 + g;
        if ((keep & out) == 0xFFFF)
          for (int64_t q = q0; q < q1; ++q) _mm512_storeu_ps(d + q * w + g, column_words<KW>(s, cs, q, kc, keep));
        else
          for (int64_t q = q0; q < q1; ++q) _mm512_mask_storeu_ps(d + q * w + g, out, column_words<KW>(s, cs, q, kc, keep));
      }
  }
}

// Panel rows contiguous (cs == 1): 16×16 blocks of words are loaded, transposed in registers and
// stored as panel columns; rows past `rows` are zeros. Panels 8 rows tall take two word blocks per
// transpose (rows 0..7 of words q.. and q+16..), so no lane is wasted and every store is whole.
template <int KW, class T>
LR_TARGET_AVX512 void pack_rows(const T* src, int64_t rs, int64_t rows, int64_t kc, int w, float* dst) {
  const int64_t kw = (kc + KW - 1) / KW;
  for (int64_t r0 = 0; r0 < rows; r0 += w, dst += w * kw)
    for (int g = 0; g < w; g += 16) {
      const int64_t valid = std::clamp<int64_t>(rows - r0 - g, 0, 16);
      const int height = std::min(16, w - g);
      const T* s = src + (r0 + g) * rs;
      __m512 r[16];
      int64_t q = 0;
      if (height == 8)
        for (; q + 32 <= kw; q += 32) {
          for (int i = 0; i < 8; ++i) {
            r[i] = i < valid ? row_words<KW>(s + i * rs, q, kc) : _mm512_setzero_ps();
            r[i + 8] = i < valid ? row_words<KW>(s + i * rs, q + 16, kc) : _mm512_setzero_ps();
          }
          transpose16(r);
          for (int j = 0; j < 16; ++j) {
            _mm256_storeu_ps(dst + (q + j) * w + g, _mm512_castps512_ps256(r[j]));
            _mm256_storeu_ps(dst + (q + 16 + j) * w + g, _mm512_extractf32x8_ps(r[j], 1));
          }
        }
      const __mmask16 out = lanes(height);
      for (; q < kw; q += 16) {
        const int cols = int(std::min<int64_t>(16, kw - q));
        for (int i = 0; i < 16; ++i) r[i] = i < valid ? row_words<KW>(s + i * rs, q, kc) : _mm512_setzero_ps();
        transpose16(r);
        for (int j = 0; j < cols; ++j) {
          if (height == 16)
            _mm512_storeu_ps(dst + (q + j) * w + g, r[j]);
          else
            _mm512_mask_storeu_ps(dst + (q + j) * w + g, out, r[j]);
        }
      }
    }
}

// The driver's views always have a unit stride on one side (see View in matmul.cc).
template <int KW, class T>
LR_TARGET_AVX512 void pack_avx512(const T* src, int64_t rs, int64_t cs, int64_t rows, int64_t kc, int w, float* dst) {
  if (rs == 1)
    pack_columns<KW>(src, cs, rows, kc, w, dst);
  else
    pack_rows<KW>(src, rs, rows, kc, w, dst);
}

}  // namespace

// Blocking for Zen 5 (48 KiB L1d, 1 MiB L2 per core): the kc×MR A micro-panel (8 or 16 KiB)
// stays in L1 while B micro-panels stream from the kc×nc block of B (512 KiB, half of L2); A
// blocks are up to mc×kc = 2 MiB (L3). 8×32 ran as fast as 14×32, 12×32, 8×48 and 6×64 here and
// fits more shapes exactly; 16×16 runs ~7% slower per flop but halves the work when n ≤ 16.
// For small m, kc = 768 (8×32) / 384 (16×16): the A micro-panel fills 24 KiB, half of L1.
const GemmKernelSet* gemm_kernels_avx512() {
  static const GemmKernel k8x32{"avx512 8x32", 8, 32, 2048, 256, 512, 768, 1.0f, micro<8, 2>, pack_avx512<1, float>,
                                pack_avx512<1, uint16_t>, pack_avx512<1, F32AsBf16>};
  static const GemmKernel k16x16{"avx512 16x16", 16, 16, 2048, 256, 512, 384, 0.93f, micro<16, 1>, pack_avx512<1, float>,
                                 pack_avx512<1, uint16_t>, pack_avx512<1, F32AsBf16>};
  static const GemmKernelSet set{2, {&k8x32, &k16x16}};
  return &set;
}

// bf16 pairs: the same tiles and bytes per block as above, so twice the k per block (mc, kc, nc
// and kc_small_m count k values, two to a word). At m = 256, kc_small_m 768..3072 and a 12×32
// tile measured alike within this VM's noise; 16×16's relative speed is float32's, not re-measured.
const GemmKernelSet* gemm_kernels_avx512bf16() {
  static const GemmKernel k8x32{"avx512bf16 8x32", 8, 32, 2048, 512, 512, 1536, 1.0f, micro_bf16<8, 2>, nullptr,
                                pack_avx512<2, uint16_t>, pack_avx512<2, F32AsBf16>, 2};
  static const GemmKernel k16x16{"avx512bf16 16x16", 16, 16, 2048, 512, 512, 768, 0.93f, micro_bf16<16, 1>, nullptr,
                                 pack_avx512<2, uint16_t>, pack_avx512<2, F32AsBf16>, 2};
  static const GemmKernelSet set{2, {&k8x32, &k16x16}};
  return &set;
}

}  // namespace cpu
}  // namespace lowrank

#else

namespace lowrank {
namespace cpu {
const GemmKernelSet* gemm_kernels_avx512() { return nullptr; }
const GemmKernelSet* gemm_kernels_avx512bf16() { return nullptr; }
}  // namespace cpu
}  // namespace lowrank

#endif
