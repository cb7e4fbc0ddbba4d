// AVX2+FMA GEMM: a 6×16 micro-kernel and vectorized packing.
//
// Micro-kernel: a 6×16 tile of C in 12 ymm accumulators (the BLIS Haswell shape). Per k step: two
// 8-wide loads of packed B, 6 broadcasts of packed A, 12 FMAs; 12 accumulators + 2 B vectors + 1
// broadcast = 15 of the 16 ymm registers.
//
// Packing: a copy per column when the panel's columns are contiguous (A transposed, B as stored),
// 8×8 in-register transposes when its rows are (A as stored, B transposed).
#include "bf16_load.h"
#include "matmul_kernels.h"
#include "simd.h"

#ifdef LOWRANK_X86
#include <immintrin.h>

#include <algorithm>

namespace lowrank {
namespace cpu {
namespace {

constexpr int MR = 6, NR = 16;

LR_TARGET_AVX2 void micro_6x16(int64_t kc, const float* a, int64_t a_rs, int64_t a_cs, const float* b, int64_t b_rs,
                               float* c, int64_t ldc, float alpha, float beta) {
  __m256 acc0[MR], acc1[MR];
#pragma GCC unroll 6
  for (int i = 0; i < MR; ++i) acc0[i] = acc1[i] = _mm256_setzero_ps();
  for (int64_t p = 0; p < kc; ++p, a += a_cs, b += b_rs) {
    __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
      __m256 ai = _mm256_broadcast_ss(a + i * a_rs);
      acc0[i] = _mm256_fmadd_ps(ai, b0, acc0[i]);
      acc1[i] = _mm256_fmadd_ps(ai, b1, acc1[i]);
    }
  }
  __m256 va = _mm256_set1_ps(alpha);
  if (beta == 0) {
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
      _mm256_storeu_ps(c + i * ldc, _mm256_mul_ps(va, acc0[i]));
      _mm256_storeu_ps(c + i * ldc + 8, _mm256_mul_ps(va, acc1[i]));
    }
  } else {
    __m256 vb = _mm256_set1_ps(beta);
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
      float* ci = c + i * ldc;
      _mm256_storeu_ps(ci, _mm256_fmadd_ps(va, acc0[i], _mm256_mul_ps(vb, _mm256_loadu_ps(ci))));
      _mm256_storeu_ps(ci + 8, _mm256_fmadd_ps(va, acc1[i], _mm256_mul_ps(vb, _mm256_loadu_ps(ci + 8))));
    }
  }
}

// In-register transpose: r[j] becomes column j of the 8×8 matrix whose rows were r[0..7].
LR_TARGET_AVX2 inline void transpose8(__m256 r[8]) {
  __m256 t[8], u[8];
  for (int i = 0; i < 8; i += 2) {  // interleave pairs of rows
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {  // 4×4 blocks within each 128-bit lane
    u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
    u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
    u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  for (int i = 0; i < 4; ++i) {  // swap the off-diagonal 4×4 blocks
    r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
    r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
  }
}

// Lanes 0..n-1 of a mask for _mm256_maskload_ps.
LR_TARGET_AVX2 inline __m256i lanes(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// Stores lanes 0..n-1 of v (n ≤ 8) without touching dst[n..7] (masked stores are slow on AMD).
LR_TARGET_AVX2 inline void store_lanes(float* dst, __m256 v, int n) {
  if (n == 8) return _mm256_storeu_ps(dst, v);
  __m128 x = _mm256_castps256_ps128(v);
  if (n >= 4) {
    _mm_storeu_ps(dst, x);
    x = _mm256_extractf128_ps(v, 1);
    dst += 4;
    n -= 4;
  }
  if (n >= 2) {
    _mm_storel_pi(reinterpret_cast<__m64*>(dst), x);
    x = _mm_movehl_ps(x, x);
    dst += 2;
    n -= 2;
  }
  if (n == 1) _mm_store_ss(dst, x);
}

// Rows g..g+7 of one panel (`valid` of them hold data, lanes `stored` are written, the rest of
// those zero-padded), all kc columns. T: float, or bf16 widened, or float32 rounded to bf16 and
// widened, by load8 (bf16_load.h).
template <class T>
LR_TARGET_AVX2 void pack_group(const T* src, int64_t rs, int64_t cs, int valid, int stored, int64_t kc, int w,
                               float* dst) {
  if (rs == 1) {  // column p is contiguous: one (masked) copy per column
    const __m256i keep = lanes(valid);
    if (valid == 8)
      for (int64_t p = 0; p < kc; ++p) store_lanes(dst + p * w, load8(src + p * cs), stored);
    else
      for (int64_t p = 0; p < kc; ++p) store_lanes(dst + p * w, load8(keep, src + p * cs), stored);
    return;
  }
  // Row r is contiguous along p (cs == 1): load 8 rows × 8 columns, transpose, store columns.
  for (int64_t p = 0; p < kc; p += 8) {
    const int cols = int(std::min<int64_t>(8, kc - p));
    const __m256i colmask = lanes(cols);
    __m256 r[8];
    for (int i = 0; i < 8; ++i)
      r[i] = i >= valid ? _mm256_setzero_ps() : cols == 8 ? load8(src + i * rs + p) : load8(colmask, src + i * rs + p);
    transpose8(r);
    for (int j = 0; j < cols; ++j) store_lanes(dst + (p + j) * w, r[j], stored);
  }
}

template <class T>
LR_TARGET_AVX2 void pack_avx2(const T* src, int64_t rs, int64_t cs, int64_t rows, int64_t kc, int w, float* dst) {
  for (int64_t r0 = 0; r0 < rows; r0 += w, dst += w * kc)
    for (int g = 0; g < w; g += 8) {
      const int valid = int(std::clamp<int64_t>(rows - r0 - g, 0, 8)), stored = std::min(8, w - g);
      pack_group(src + (r0 + g) * rs, rs, cs, valid, stored, kc, w, dst + g);
    }
}

}  // namespace

// The kc×MR A micro-panel (6 KiB) stays in L1; the kc×nc B block (256 KiB) fits the 256 KiB..1 MiB
// L2 of AVX2-era cores; A blocks up to mc×kc = 1 MiB.
const GemmKernelSet* gemm_kernels_avx2() {
  static const GemmKernel k{"avx2 6x16", MR, NR, 1020, 256, 256, 256, 1.0f, micro_6x16, pack_avx2<float>, pack_avx2<uint16_t>,
                             pack_avx2<F32AsBf16>};
  static const GemmKernelSet set{1, {&k}};
  return &set;
}

}  // namespace cpu
}  // namespace lowrank

#else

namespace lowrank {
namespace cpu {
const GemmKernelSet* gemm_kernels_avx2() { return nullptr; }
}  // namespace cpu
}  // namespace lowrank

#endif
