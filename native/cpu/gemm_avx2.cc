// AVX2+FMA GEMM micro-kernel: a 6×16 tile of C in 12 ymm accumulators (the BLIS Haswell shape).
// Per k step: two 8-wide loads of packed B, 6 broadcasts of packed A, 12 FMAs; 12 accumulators
// + 2 B vectors + 1 broadcast = 15 of the 16 ymm registers.
#include "gemm_kernels.h"
#include "simd.h"

#ifdef LOWRANK_X86
#include <immintrin.h>

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

}  // namespace

// The kc×MR A micro-panel (6 KiB) stays in L1; the kc×nc B block (256 KiB) fits the 256 KiB..1 MiB
// L2 of AVX2-era cores; A blocks up to mc×kc = 1 MiB.
const GemmKernelSet* gemm_kernels_avx2() {
  static const GemmKernel k{"avx2 6x16", MR, NR, 1020, 256, 256, 1.0f, micro_6x16, gemm_pack_portable};
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
