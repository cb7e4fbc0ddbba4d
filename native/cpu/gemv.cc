// CPU fp32 matrix-vector product: gemm_f32's path for m == 1, the shape of every weight product
// when decoding one token. A GEMV does two flops per weight it reads, so it runs at memory speed
// or not at all: the GEMM driver's packing, its MR-tall tiles (MR - 1 rows of zero padding) and
// its strided walk over kc×NR panels of B all cost bandwidth here. Instead each weight is read
// once, in the order it lies in memory, each thread streaming its own contiguous slab:
//
//   op(B)'s rows contiguous (B as stored, GPT-2's Conv1D x·W):  y += Σ_p x[p] · B[p, :]
//     four rows at a time into an accumulator block that stays in L1; threads split k;
//   op(B)'s columns contiguous (B transposed, nn.Linear's x·Wᵀ, the lm_head): y[j] = x · B[:, j]
//     four dot products at a time, each along one contiguous row of the weight; threads split n.
#include <algorithm>
#include <vector>

#include "../backend.h"
#include "matmul_kernels.h"
#include "parallel.h"
#include "simd.h"

#ifdef LOWRANK_X86
#include <immintrin.h>
#endif

namespace lowrank {
namespace cpu {
namespace {

// Columns of one accumulator block: 16 KB, in L1 beside the row segments it meets. Up to this n
// (GPT-2's 3C = 2304, 4C = 3072) the row-streaming form reads whole rows, so each thread's slab
// of the weight is one contiguous stream.
constexpr int64_t kBlock = 4096;

// Below this many weights (~1 MB) one thread streams them before a woken worker would help.
constexpr int64_t kGemvParallelMin = int64_t(1) << 18;

void store(float* y, const float* acc, int64_t w, float alpha, float beta) {
  for (int64_t j = 0; j < w; ++j) y[j] = alpha * acc[j] + (beta == 0 ? 0.0f : beta * y[j]);
}

// Plain loops the compiler vectorizes for whatever target includes them: the portable kernels
// (baseline SSE2, NEON) and, compiled again with AVX2 + FMA below, the AVX2 ones.
#if defined(__GNUC__) || defined(__clang__)
#define LR_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define LR_ALWAYS_INLINE inline
#endif

// acc[0:w] += Σ_p x[p] · b[p*ld + 0:w], p over [0, k).
LR_ALWAYS_INLINE void rows_body(const float* x, const float* b, int64_t ld, int64_t k, int64_t w, float* acc) {
  int64_t p = 0;
  for (; p + 4 <= k; p += 4) {
    const float x0 = x[p], x1 = x[p + 1], x2 = x[p + 2], x3 = x[p + 3];
    const float *r0 = b + p * ld, *r1 = r0 + ld, *r2 = r1 + ld, *r3 = r2 + ld;
    for (int64_t j = 0; j < w; ++j) acc[j] += x0 * r0[j] + x1 * r1[j] + x2 * r2[j] + x3 * r3[j];
  }
  for (; p < k; ++p)
    for (int64_t j = 0; j < w; ++j) acc[j] += x[p] * b[p * ld + j];
}

// out[j] = x · b[j*ld + 0:k] for j in [0, cols).
LR_ALWAYS_INLINE void dots_body(const float* x, const float* b, int64_t ld, int64_t k, int64_t cols, float* out) {
  for (int64_t j = 0; j < cols; ++j) {
    float acc[16] = {};
    const float* c = b + j * ld;
    int64_t p = 0;
    for (; p + 16 <= k; p += 16)
      for (int l = 0; l < 16; ++l) acc[l] += x[p + l] * c[p + l];
    for (int l = 0; p + l < k; ++l) acc[l] += x[p + l] * c[p + l];
    float s = 0;
    for (float v : acc) s += v;
    out[j] = s;
  }
}

void rows_portable(const float* x, const float* b, int64_t ld, int64_t k, int64_t w, float* acc) { rows_body(x, b, ld, k, w, acc); }
void dots_portable(const float* x, const float* b, int64_t ld, int64_t k, int64_t cols, float* out) { dots_body(x, b, ld, k, cols, out); }

#ifdef LOWRANK_X86
LR_TARGET_AVX2 void rows_avx2(const float* x, const float* b, int64_t ld, int64_t k, int64_t w, float* acc) { rows_body(x, b, ld, k, w, acc); }
LR_TARGET_AVX2 void dots_avx2(const float* x, const float* b, int64_t ld, int64_t k, int64_t cols, float* out) { dots_body(x, b, ld, k, cols, out); }

LR_TARGET_AVX512 void rows_avx512(const float* x, const float* b, int64_t ld, int64_t k, int64_t w, float* acc) {
  const __mmask16 tail = __mmask16((1u << (w % 16)) - 1);
  int64_t p = 0;
  for (; p + 4 <= k; p += 4) {
    const __m512 x0 = _mm512_set1_ps(x[p]), x1 = _mm512_set1_ps(x[p + 1]);
    const __m512 x2 = _mm512_set1_ps(x[p + 2]), x3 = _mm512_set1_ps(x[p + 3]);
    const float *r0 = b + p * ld, *r1 = r0 + ld, *r2 = r1 + ld, *r3 = r2 + ld;
    int64_t j = 0;
    for (; j + 16 <= w; j += 16) {
      __m512 a = _mm512_loadu_ps(acc + j);
      a = _mm512_fmadd_ps(x0, _mm512_loadu_ps(r0 + j), a);
      a = _mm512_fmadd_ps(x1, _mm512_loadu_ps(r1 + j), a);
      a = _mm512_fmadd_ps(x2, _mm512_loadu_ps(r2 + j), a);
      a = _mm512_fmadd_ps(x3, _mm512_loadu_ps(r3 + j), a);
      _mm512_storeu_ps(acc + j, a);
    }
    if (tail) {
      __m512 a = _mm512_maskz_loadu_ps(tail, acc + j);
      a = _mm512_fmadd_ps(x0, _mm512_maskz_loadu_ps(tail, r0 + j), a);
      a = _mm512_fmadd_ps(x1, _mm512_maskz_loadu_ps(tail, r1 + j), a);
      a = _mm512_fmadd_ps(x2, _mm512_maskz_loadu_ps(tail, r2 + j), a);
      a = _mm512_fmadd_ps(x3, _mm512_maskz_loadu_ps(tail, r3 + j), a);
      _mm512_mask_storeu_ps(acc + j, tail, a);
    }
  }
  for (; p < k; ++p)
    for (int64_t j = 0; j < w; ++j) acc[j] += x[p] * b[p * ld + j];
}

LR_TARGET_AVX512 void dots_avx512(const float* x, const float* b, int64_t ld, int64_t k, int64_t cols, float* out) {
  const __mmask16 tail = __mmask16((1u << (k % 16)) - 1);
  const int64_t k16 = k / 16 * 16;
  int64_t j = 0;
  for (; j + 4 <= cols; j += 4) {
    const float *c0 = b + j * ld, *c1 = c0 + ld, *c2 = c1 + ld, *c3 = c2 + ld;
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    for (int64_t p = 0; p < k16; p += 16) {
      const __m512 xv = _mm512_loadu_ps(x + p);
      s0 = _mm512_fmadd_ps(xv, _mm512_loadu_ps(c0 + p), s0);
      s1 = _mm512_fmadd_ps(xv, _mm512_loadu_ps(c1 + p), s1);
      s2 = _mm512_fmadd_ps(xv, _mm512_loadu_ps(c2 + p), s2);
      s3 = _mm512_fmadd_ps(xv, _mm512_loadu_ps(c3 + p), s3);
    }
    if (tail) {
      const __m512 xv = _mm512_maskz_loadu_ps(tail, x + k16);
      s0 = _mm512_fmadd_ps(xv, _mm512_maskz_loadu_ps(tail, c0 + k16), s0);
      s1 = _mm512_fmadd_ps(xv, _mm512_maskz_loadu_ps(tail, c1 + k16), s1);
      s2 = _mm512_fmadd_ps(xv, _mm512_maskz_loadu_ps(tail, c2 + k16), s2);
      s3 = _mm512_fmadd_ps(xv, _mm512_maskz_loadu_ps(tail, c3 + k16), s3);
    }
    out[j] = _mm512_reduce_add_ps(s0);
    out[j + 1] = _mm512_reduce_add_ps(s1);
    out[j + 2] = _mm512_reduce_add_ps(s2);
    out[j + 3] = _mm512_reduce_add_ps(s3);
  }
  if (j < cols) dots_portable(x, b + j * ld, ld, k, cols - j, out + j);
}
#endif

using RowsFn = void (*)(const float*, const float*, int64_t, int64_t, int64_t, float*);
using DotsFn = void (*)(const float*, const float*, int64_t, int64_t, int64_t, float*);

// Picked once, at the level LOWRANK_SIMD allows (simd.cc).
RowsFn rows_kernel() {
#ifdef LOWRANK_X86
  static const RowsFn f = has_avx512() ? rows_avx512 : has_avx2_fma() ? rows_avx2 : rows_portable;
  return f;
#else
  return rows_portable;
#endif
}
DotsFn dots_kernel() {
#ifdef LOWRANK_X86
  static const DotsFn f = has_avx512() ? dots_avx512 : has_avx2_fma() ? dots_avx2 : dots_portable;
  return f;
#else
  return dots_portable;
#endif
}

// x when op(A)'s row is strided (A transposed): gathered into a contiguous copy.
const float* contiguous_x(const float* a, int64_t a_cs, int64_t p0, int64_t p1, std::vector<float>& buf) {
  if (a_cs == 1) return a;
  buf.resize(size_t(p1));
  for (int64_t p = p0; p < p1; ++p) buf[size_t(p)] = a[p * a_cs];
  return buf.data();
}

// acc[0:n] += Σ_p x[p] · op(B)[p, 0:n] over p in [p0, p1), op(B)'s rows contiguous.
void rows_slab(const float* x, const float* b, int64_t ld, int64_t p0, int64_t p1, int64_t n, float* acc) {
  for (int64_t j0 = 0; j0 < n; j0 += kBlock)
    rows_kernel()(x + p0, b + p0 * ld + j0, ld, p1 - p0, std::min(kBlock, n - j0), acc + j0);
}

}  // namespace

void gemv_f32(int64_t n, int64_t k, float alpha, const float* a, int64_t a_cs, int64_t batch_stride_a, const float* b,
              int64_t b_rs, int64_t b_cs, int64_t batch_stride_b, float beta, float* c, int64_t batch_stride_c, int64_t batch) {
  const bool parallel = n * k * batch >= kGemvParallelMin;
  if (b_cs == 1) {
    // Threads split k: each streams a contiguous slab of whole rows into its own n partial sums
    // (the weight is read front to back, as it lies), then the partials are added.
    const int64_t nt = parallel ? num_threads() : 1, quads = (k + 3) / 4;
    static thread_local std::vector<float> partial;
    partial.assign(size_t(nt * batch * n), 0.0f);
    float* const sums = partial.data();  // the lambda runs on pool threads: not their thread_local
    auto run = [&](int t, int nts) {
      const int64_t p0 = std::min(k, quads * t / nts * 4), p1 = std::min(k, quads * (t + 1) / nts * 4);
      std::vector<float> gathered;
      for (int64_t bi = 0; bi < batch && p0 < p1; ++bi) {
        const float* x = contiguous_x(a + bi * batch_stride_a, a_cs, p0, p1, gathered);
        rows_slab(x, b + bi * batch_stride_b, b_rs, p0, p1, n, sums + (t * batch + bi) * n);
      }
    };
    if (nt > 1)
      parallel_threads(run);
    else
      run(0, 1);
    for (int64_t bi = 0; bi < batch; ++bi) {
      float* acc = sums + bi * n;
      for (int64_t t = 1; t < nt; ++t)
        for (int64_t j = 0; j < n; ++j) acc[j] += sums[(t * batch + bi) * n + j];
      store(c + bi * batch_stride_c, acc, n, alpha, beta);
    }
    return;
  }
  // op(B)'s columns contiguous: threads split n in whole cache lines of y (16 floats), each
  // streaming its own slab of the weight's rows.
  const int64_t lines = (n + 15) / 16;
  auto run = [&](int t, int nts) {
    const int64_t j0 = std::min(n, lines * t / nts * 16), j1 = std::min(n, lines * (t + 1) / nts * 16);
    alignas(64) float acc[kBlock];
    std::vector<float> gathered;
    for (int64_t bi = 0; bi < batch && j0 < j1; ++bi) {
      const float* x = contiguous_x(a + bi * batch_stride_a, a_cs, 0, k, gathered);
      for (int64_t jb = j0; jb < j1; jb += kBlock) {
        const int64_t w = std::min(kBlock, j1 - jb);
        dots_kernel()(x, b + bi * batch_stride_b + jb * b_cs, b_cs, k, w, acc);
        store(c + bi * batch_stride_c + jb, acc, w, alpha, beta);
      }
    }
  };
  if (parallel && lines >= 2)
    parallel_threads(run);
  else
    run(0, 1);
}

}  // namespace cpu
}  // namespace lowrank
