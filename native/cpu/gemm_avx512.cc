// AVX-512 GEMM micro-kernel: a 14×32 tile of C in 28 zmm accumulators.
// Per k step: two 16-wide loads of packed B, 14 broadcasts of packed A, 28 FMAs. 28 accumulators
// + 2 B vectors + 1 broadcast = 31 of the 32 zmm registers, and 28 independent FMA chains hide the
// FMA latency (4 cycles × 2 pipes needs at least 8).
#include "gemm_kernels.h"
#include "simd.h"

#ifdef LOWRANK_X86
#include <immintrin.h>

namespace lowrank {
namespace cpu {
namespace {

constexpr int MR = 14, NR = 32;

LR_TARGET_AVX512 void micro_14x32(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, float alpha,
                                  float beta) {
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

}  // namespace

// Zen 5 (48 KiB L1d, 1 MiB L2 per core): kc×NR of B = 32 KiB stays in L1 while A panels stream;
// mc×kc of A = 448 KiB fills half of L2; nc bounds the packed B block.
const GemmKernel* gemm_kernel_avx512() {
  static const GemmKernel k{"avx512 14x32", MR, NR, 448, 256, 4096, micro_14x32};
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
