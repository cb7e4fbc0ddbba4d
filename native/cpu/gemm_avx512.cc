// AVX-512 GEMM: a 14×32 micro-kernel and vectorized packing.
//
// Micro-kernel: a 14×32 tile of C in 28 zmm accumulators. Per k step: two 16-wide loads of packed
// B, 14 broadcasts of packed A, 28 FMAs. 28 accumulators + 2 B vectors + 1 broadcast = 31 of the
// 32 zmm registers, and 28 independent FMA chains hide the FMA latency (4 cycles × 2 pipes needs
// at least 8). (12×32, 8×48 and 6×64 measured the same on Zen 5; 14×32 loads the least per FMA.)
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

constexpr int MR = 14, NR = 32;

LR_TARGET_AVX512 void micro_14x32(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, float alpha,
                                  float beta) {
  // C's rows are touched only after the k loop: start fetching them now.
#pragma GCC unroll 14
  for (int i = 0; i < MR; ++i) {
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + 16), _MM_HINT_T0);
  }
  __m512 acc0[MR], acc1[MR];
#pragma GCC unroll 14
  for (int i = 0; i < MR; ++i) acc0[i] = acc1[i] = _mm512_setzero_ps();
  for (int64_t p = 0; p < kc; ++p) {
    __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
#pragma GCC unroll 14
    for (int i = 0; i < MR; ++i) {
      __m512 ai = _mm512_set1_ps(a[i]);
      acc0[i] = _mm512_fmadd_ps(ai, b0, acc0[i]);
      acc1[i] = _mm512_fmadd_ps(ai, b1, acc1[i]);
    }
    a += MR;
    b += NR;
  }
  __m512 va = _mm512_set1_ps(alpha);
  if (beta == 0) {
#pragma GCC unroll 14
    for (int i = 0; i < MR; ++i) {
      _mm512_storeu_ps(c + i * ldc, _mm512_mul_ps(va, acc0[i]));
      _mm512_storeu_ps(c + i * ldc + 16, _mm512_mul_ps(va, acc1[i]));
    }
  } else {
    __m512 vb = _mm512_set1_ps(beta);
#pragma GCC unroll 14
    for (int i = 0; i < MR; ++i) {
      float* ci = c + i * ldc;
      _mm512_storeu_ps(ci, _mm512_fmadd_ps(va, acc0[i], _mm512_mul_ps(vb, _mm512_loadu_ps(ci))));
      _mm512_storeu_ps(ci + 16, _mm512_fmadd_ps(va, acc1[i], _mm512_mul_ps(vb, _mm512_loadu_ps(ci + 16))));
    }
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

// Zen 5 (48 KiB L1d, 1 MiB L2 per core): the kc×MR A micro-panel (14 KiB) stays in L1 while B
// micro-panels stream from the kc×nc block of B (512 KiB, half of L2); A blocks are up to
// mc×kc = 2 MiB (L3).
const GemmKernel* gemm_kernel_avx512() {
  static const GemmKernel k{"avx512 14x32", MR, NR, 2058, 256, 512, micro_14x32, pack_avx512};
  return &k;
}

}  // namespace cpu
}  // namespace lowrank

#else

namespace lowrank {
namespace cpu {
const GemmKernel* gemm_kernel_avx512() { return nullptr; }
}  // namespace cpu
}  // namespace lowrank

#endif
