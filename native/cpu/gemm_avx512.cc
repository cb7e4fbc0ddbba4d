// AVX-512 GEMM: 8×32 and 16×16 micro-kernels and vectorized packing.
//
// Micro-kernels: an MR × 16·NV tile of C in MR·NV zmm accumulators. Per k step: NV 16-wide loads
// of packed B, MR broadcasts of packed A, MR·NV FMAs. 16 independent FMA chains cover the FMA
// latency (4 cycles × 2 pipes needs at least 8) and leave registers to spare.
//
// Packing: when the panel's columns are contiguous (A transposed, B as stored) it is a masked
// copy; when its rows are (A as stored, B transposed) 16×16 blocks are transposed in registers.
#include "gemm_kernels.h"
#include "simd.h"

#ifdef LOWRANK_X86
#include <immintrin.h>

#include <algorithm>

// GCC 12 flags the undefined pass-through operand inside its own shuffle intrinsics.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace lowrank {
namespace cpu {
namespace {

// C[0:MR, 0:16·NV] from MR broadcasts of A and NV vectors of B per k step: MR·NV accumulators.
template <int MR, int NV>
LR_TARGET_AVX512 void micro(int64_t kc, const float* a, int64_t a_rs, int64_t a_cs, const float* b, int64_t b_rs,
                            float* c, int64_t ldc, float alpha, float beta) {
  // C's rows are touched only after the k loop: start fetching them now.
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + 16 * v), _MM_HINT_T0);
  __m512 acc[MR][NV];
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_setzero_ps();
  for (int64_t p = 0; p < kc; ++p, a += a_cs, b += b_rs) {
    __m512 bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = _mm512_loadu_ps(b + 16 * v);
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) _mm_prefetch(reinterpret_cast<const char*>(b + 8 * b_rs + 16 * v), _MM_HINT_T0);
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) {
      __m512 ai = _mm512_set1_ps(a[i * a_rs]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_fmadd_ps(ai, bv[v], acc[i][v]);
    }
  }
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

// Rows g..g+15 of one panel (`valid` of them hold data, lanes `stored` are written, the rest of
// those zero-padded), all kc columns.
LR_TARGET_AVX512 void pack_group(const float* src, int64_t rs, int64_t cs, int valid, int stored, int64_t kc, int w,
                                 float* dst) {
  const __mmask16 keep = lanes(valid), out = lanes(stored);
  if (rs == 1) {  // column p is contiguous: one masked copy per column
    for (int64_t p = 0; p < kc; ++p) _mm512_mask_storeu_ps(dst + p * w, out, _mm512_maskz_loadu_ps(keep, src + p * cs));
    return;
  }
  // Row r is contiguous along p (cs == 1): load 16 rows × 16 columns, transpose, store columns.
  for (int64_t p = 0; p < kc; p += 16) {
    const int cols = int(std::min<int64_t>(16, kc - p));
    const __mmask16 colmask = lanes(cols);
    __m512 r[16];
    for (int i = 0; i < 16; ++i) r[i] = i < valid ? _mm512_maskz_loadu_ps(colmask, src + i * rs + p) : _mm512_setzero_ps();
    transpose16(r);
    for (int j = 0; j < cols; ++j) _mm512_mask_storeu_ps(dst + (p + j) * w, out, r[j]);
  }
}

LR_TARGET_AVX512 void pack_avx512(const float* src, int64_t rs, int64_t cs, int64_t rows, int64_t kc, int w, float* dst) {
  for (int64_t r0 = 0; r0 < rows; r0 += w, dst += w * kc)
    for (int g = 0; g < w; g += 16) {
      const int valid = int(std::clamp<int64_t>(rows - r0 - g, 0, 16)), stored = std::min(16, w - g);
      pack_group(src + (r0 + g) * rs, rs, cs, valid, stored, kc, w, dst + g);
    }
}

}  // namespace

// Blocking for Zen 5 (48 KiB L1d, 1 MiB L2 per core): the kc×MR A micro-panel (8 or 16 KiB)
// stays in L1 while B micro-panels stream from the kc×nc block of B (512 KiB, half of L2); A
// blocks are up to mc×kc = 2 MiB (L3). 8×32 ran as fast as 14×32, 12×32, 8×48 and 6×64 here and
// fits more shapes exactly; 16×16 runs ~7% slower per flop but halves the work when n ≤ 16.
const GemmKernelSet* gemm_kernels_avx512() {
  static const GemmKernel k8x32{"avx512 8x32", 8, 32, 2048, 256, 512, 1.0f, micro<8, 2>, pack_avx512};
  static const GemmKernel k16x16{"avx512 16x16", 16, 16, 2048, 256, 512, 0.93f, micro<16, 1>, pack_avx512};
  static const GemmKernelSet set{2, {&k8x32, &k16x16}};
  return &set;
}

}  // namespace cpu
}  // namespace lowrank

#else

namespace lowrank {
namespace cpu {
const GemmKernelSet* gemm_kernels_avx512() { return nullptr; }
}  // namespace cpu
}  // namespace lowrank

#endif
