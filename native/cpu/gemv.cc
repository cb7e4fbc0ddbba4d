// CPU matrix-vector product: the GEMM's path for m == 1 (gemm_f32, gemm_bf16, gemm_f32_bf16), the
// shape of every weight product when decoding one token. A GEMV does two flops per weight it
// reads, so it runs at memory speed or not at all: the GEMM driver's packing, its MR-tall tiles
// (MR - 1 rows of zero padding) and its strided walk over kc×NR panels of B all cost bandwidth
// here. Instead each weight is read once, in the order it lies in memory, each thread streaming
// its own contiguous slab:
//
//   op(B)'s rows contiguous (B as stored, GPT-2's Conv1D x·W):  y += Σ_p x[p] · B[p, :]
//     four rows at a time into an accumulator block that stays in L1; threads split k;
//   op(B)'s columns contiguous (B transposed, nn.Linear's x·Wᵀ, the lm_head): y[j] = x · B[:, j]
//     four dot products at a time, each along one contiguous row of the weight; threads split n.
//
// bf16 operands (frozen bf16 weights, x rounded to bf16 as autocast does) are read as bf16, half
// the bytes, and converted in registers: vdpbf16ps where the CPU has AVX-512 BF16, else widened
// (shift left by 16) and multiplied in float32. Products of bf16 values are exact in float32 and
// the sums are float32, as in gemm_f32 on widened copies; only the order of the sums differs.
// A float32 x of a bf16 product (gemm_f32_bf16) is rounded to bf16 where it is gathered into a
// contiguous copy (k values, against the n·k of the weight), then read as a bf16 x would be.
#include <algorithm>
#include <type_traits>
#include <vector>

#include "../backend.h"
#include "bf16_load.h"
#include "matmul_kernels.h"
#include "parallel.h"
#include "simd.h"

#ifdef LOWRANK_X86
#include <immintrin.h>
// GCC 12 flags the undefined pass-through operand inside its own reduction intrinsics.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
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
// (baseline SSE2, NEON) and, compiled again with AVX2 + FMA below, the AVX2 ones. T is float or
// bf16 (raw bits, widened exactly by widen()); sums are float32 either way.
#if defined(__GNUC__) || defined(__clang__)
#define LR_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define LR_ALWAYS_INLINE inline
#endif

// acc[0:w] += Σ_p x[p] · b[p*ld + 0:w], p over [0, k).
template <class T>
LR_ALWAYS_INLINE void rows_body(const T* x, const T* b, int64_t ld, int64_t k, int64_t w, float* acc) {
  int64_t p = 0;
  for (; p + 4 <= k; p += 4) {
    const float x0 = widen(x[p]), x1 = widen(x[p + 1]), x2 = widen(x[p + 2]), x3 = widen(x[p + 3]);
    const T *r0 = b + p * ld, *r1 = r0 + ld, *r2 = r1 + ld, *r3 = r2 + ld;
    for (int64_t j = 0; j < w; ++j) acc[j] += x0 * widen(r0[j]) + x1 * widen(r1[j]) + x2 * widen(r2[j]) + x3 * widen(r3[j]);
  }
  for (; p < k; ++p)
    for (int64_t j = 0; j < w; ++j) acc[j] += widen(x[p]) * widen(b[p * ld + j]);
}

// out[j] = x · b[j*ld + 0:k] for j in [0, cols).
template <class T>
LR_ALWAYS_INLINE void dots_body(const T* x, const T* b, int64_t ld, int64_t k, int64_t cols, float* out) {
  for (int64_t j = 0; j < cols; ++j) {
    float acc[16] = {};
    const T* c = b + j * ld;
    int64_t p = 0;
    for (; p + 16 <= k; p += 16)
      for (int l = 0; l < 16; ++l) acc[l] += widen(x[p + l]) * widen(c[p + l]);
    for (int l = 0; p + l < k; ++l) acc[l] += widen(x[p + l]) * widen(c[p + l]);
    float s = 0;
    for (float v : acc) s += v;
    out[j] = s;
  }
}

template <class T>
void rows_portable(const T* x, const T* b, int64_t ld, int64_t k, int64_t w, float* acc) { rows_body(x, b, ld, k, w, acc); }
template <class T>
void dots_portable(const T* x, const T* b, int64_t ld, int64_t k, int64_t cols, float* out) { dots_body(x, b, ld, k, cols, out); }

#ifdef LOWRANK_X86
template <class T>
LR_TARGET_AVX2 void rows_avx2(const T* x, const T* b, int64_t ld, int64_t k, int64_t w, float* acc) { rows_body(x, b, ld, k, w, acc); }
template <class T>
LR_TARGET_AVX2 void dots_avx2(const T* x, const T* b, int64_t ld, int64_t k, int64_t cols, float* out) { dots_body(x, b, ld, k, cols, out); }

// load16 (bf16_load.h) reads 16 floats, or 16 bf16 widened in registers.
//
// bf16 weights are consumed twice as fast per byte as float32 ones, and the hardware prefetchers
// alone fell behind (one core streamed 18-27 GB/s of bf16 where it streamed 23-33 of float32), so
// the bf16 kernels also prefetch the rows of the next pass (the next 4 columns in the dots form)
// into L2. The float32 kernels are left to the hardware prefetchers, which kept up with them.
template <class T>
constexpr bool kPrefetch = std::is_same_v<T, uint16_t>;

template <class T>
LR_TARGET_AVX512 void rows_avx512(const T* x, const T* b, int64_t ld, int64_t k, int64_t w, float* acc) {
  const __mmask16 tail = __mmask16((1u << (w % 16)) - 1);
  int64_t p = 0;
  for (; p + 4 <= k; p += 4) {
    const __m512 x0 = _mm512_set1_ps(widen(x[p])), x1 = _mm512_set1_ps(widen(x[p + 1]));
    const __m512 x2 = _mm512_set1_ps(widen(x[p + 2])), x3 = _mm512_set1_ps(widen(x[p + 3]));
    const T *r0 = b + p * ld, *r1 = r0 + ld, *r2 = r1 + ld, *r3 = r2 + ld;
    int64_t j = 0;
    for (; j + 16 <= w; j += 16) {
      if constexpr (kPrefetch<T>)
        for (const T* r : {r0, r1, r2, r3}) _mm_prefetch(reinterpret_cast<const char*>(r + 4 * ld + j), _MM_HINT_T1);
      __m512 a = _mm512_loadu_ps(acc + j);
      a = _mm512_fmadd_ps(x0, load16(r0 + j), a);
      a = _mm512_fmadd_ps(x1, load16(r1 + j), a);
      a = _mm512_fmadd_ps(x2, load16(r2 + j), a);
      a = _mm512_fmadd_ps(x3, load16(r3 + j), a);
      _mm512_storeu_ps(acc + j, a);
    }
    if (tail) {
      __m512 a = _mm512_maskz_loadu_ps(tail, acc + j);
      a = _mm512_fmadd_ps(x0, load16(tail, r0 + j), a);
      a = _mm512_fmadd_ps(x1, load16(tail, r1 + j), a);
      a = _mm512_fmadd_ps(x2, load16(tail, r2 + j), a);
      a = _mm512_fmadd_ps(x3, load16(tail, r3 + j), a);
      _mm512_mask_storeu_ps(acc + j, tail, a);
    }
  }
  for (; p < k; ++p)
    for (int64_t j = 0; j < w; ++j) acc[j] += widen(x[p]) * widen(b[p * ld + j]);
}

template <class T>
LR_TARGET_AVX512 void dots_avx512(const T* x, const T* b, int64_t ld, int64_t k, int64_t cols, float* out) {
  const __mmask16 tail = __mmask16((1u << (k % 16)) - 1);
  const int64_t k16 = k / 16 * 16;
  int64_t j = 0;
  for (; j + 4 <= cols; j += 4) {
    const T *c0 = b + j * ld, *c1 = c0 + ld, *c2 = c1 + ld, *c3 = c2 + ld;
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    for (int64_t p = 0; p < k16; p += 16) {
      if constexpr (kPrefetch<T>)
        for (const T* c : {c0, c1, c2, c3}) _mm_prefetch(reinterpret_cast<const char*>(c + 4 * ld + p), _MM_HINT_T1);
      const __m512 xv = load16(x + p);
      s0 = _mm512_fmadd_ps(xv, load16(c0 + p), s0);
      s1 = _mm512_fmadd_ps(xv, load16(c1 + p), s1);
      s2 = _mm512_fmadd_ps(xv, load16(c2 + p), s2);
      s3 = _mm512_fmadd_ps(xv, load16(c3 + p), s3);
    }
    if (tail) {
      const __m512 xv = load16(tail, x + k16);
      s0 = _mm512_fmadd_ps(xv, load16(tail, c0 + k16), s0);
      s1 = _mm512_fmadd_ps(xv, load16(tail, c1 + k16), s1);
      s2 = _mm512_fmadd_ps(xv, load16(tail, c2 + k16), s2);
      s3 = _mm512_fmadd_ps(xv, load16(tail, c3 + k16), s3);
    }
    out[j] = _mm512_reduce_add_ps(s0);
    out[j + 1] = _mm512_reduce_add_ps(s1);
    out[j + 2] = _mm512_reduce_add_ps(s2);
    out[j + 3] = _mm512_reduce_add_ps(s3);
  }
  if (j < cols) dots_portable(x, b + j * ld, ld, k, cols - j, out + j);
}

// AVX-512 BF16: vdpbf16ps multiplies 16 pairs of bf16 by 16 pairs and adds each pair's two
// products into one float32 lane (products of bf16 are exact in float32; inputs and results
// below 2^-126 are flushed to zero, which no weight or activation of a model comes near). bh()
// (bf16_load.h) gives 32 bf16 loaded as integers the instruction's operand type.

// Rows form: the pairs must run along k, but a row of op(B) runs along n, so rows p and p+1 are
// interleaved in registers into (B[p, j], B[p+1, j]) pairs and multiplied by the broadcast pair
// (x[p], x[p+1]); four rows per pass over acc, as in the float32 kernel; rows past k are zeros.
// Whole 32-column groups interleave with vpunpck{l,h}wd, which works within 128-bit lanes: the
// low half gets columns {0-3, 8-11, 16-19, 24-27} of the group, the high half the others. acc is
// kept in that order for the whole call (reordered once on entry and once on exit), so the inner
// loop has no cross-lane shuffle. The last w % 32 columns go through vpermt2w, which interleaves
// across lanes into natural order, with masks.
LR_TARGET_AVX512_BF16 inline void group_to_unpack_order(float* a) {
  const __m512 a0 = _mm512_loadu_ps(a), a1 = _mm512_loadu_ps(a + 16);
  _mm512_storeu_ps(a, _mm512_shuffle_f32x4(a0, a1, 0x88));       // 128-bit lanes a0.0 a0.2 a1.0 a1.2
  _mm512_storeu_ps(a + 16, _mm512_shuffle_f32x4(a0, a1, 0xDD));  // a0.1 a0.3 a1.1 a1.3
}
LR_TARGET_AVX512_BF16 inline void group_to_natural_order(float* a) {
  const __m512 u0 = _mm512_loadu_ps(a), u1 = _mm512_loadu_ps(a + 16);
  const __m512 lo = _mm512_shuffle_f32x4(u0, u1, 0x44);  // u0.0 u0.1 u1.0 u1.1
  const __m512 hi = _mm512_shuffle_f32x4(u0, u1, 0xEE);  // u0.2 u0.3 u1.2 u1.3
  _mm512_storeu_ps(a, _mm512_shuffle_f32x4(lo, lo, 0xD8));  // u0.0 u1.0 u0.1 u1.1
  _mm512_storeu_ps(a + 16, _mm512_shuffle_f32x4(hi, hi, 0xD8));
}

// One pass of up to four rows (x01, x23: the broadcast x pairs) over the whole 32-column groups
// of acc, which holds them in unpack order. ALL4: four rows, else rows 1..3 and zeros.
template <bool ALL4>
LR_TARGET_AVX512_BF16 inline void rows_bf16_groups(const uint16_t* const r[4], int rows, int64_t ld, int64_t w32, __m512bh x01,
                                                   __m512bh x23, float* acc) {
  for (int64_t j = 0; j < w32; j += 32) {
    __m512i v[4];
    for (int i = 0; i < 4; ++i) v[i] = ALL4 || i < rows ? _mm512_loadu_si512(r[i] + j) : _mm512_setzero_si512();
    if (ALL4)
      for (int i = 0; i < 4; ++i) _mm_prefetch(reinterpret_cast<const char*>(r[i] + 4 * ld + j), _MM_HINT_T1);
    __m512 u0 = _mm512_loadu_ps(acc + j), u1 = _mm512_loadu_ps(acc + j + 16);
    u0 = _mm512_dpbf16_ps(u0, bh(_mm512_unpacklo_epi16(v[0], v[1])), x01);
    u1 = _mm512_dpbf16_ps(u1, bh(_mm512_unpackhi_epi16(v[0], v[1])), x01);
    u0 = _mm512_dpbf16_ps(u0, bh(_mm512_unpacklo_epi16(v[2], v[3])), x23);
    u1 = _mm512_dpbf16_ps(u1, bh(_mm512_unpackhi_epi16(v[2], v[3])), x23);
    _mm512_storeu_ps(acc + j, u0);
    _mm512_storeu_ps(acc + j + 16, u1);
  }
}

LR_TARGET_AVX512_BF16 void rows_avx512bf16(const uint16_t* x, const uint16_t* b, int64_t ld, int64_t k, int64_t w, float* acc) {
  const int64_t w32 = w / 32 * 32;
  const __mmask32 tail = __mmask32((uint64_t(1) << (w % 32)) - 1);
  const __mmask16 t0 = __mmask16(tail), t1 = __mmask16(tail >> 16);
  // vpermt2w indices for the tail: word 2i takes column i of the first row, word 2i + 1 column i
  // of the second; columns 0..15 of the 32 (lo) and 16..31 (hi).
  alignas(64) uint16_t lo_idx[32], hi_idx[32];
  for (int i = 0; i < 16; ++i) {
    lo_idx[2 * i] = uint16_t(i), lo_idx[2 * i + 1] = uint16_t(32 + i);
    hi_idx[2 * i] = uint16_t(16 + i), hi_idx[2 * i + 1] = uint16_t(48 + i);
  }
  const __m512i lo = _mm512_load_si512(lo_idx), hi = _mm512_load_si512(hi_idx);
  for (int64_t j = 0; j < w32; j += 32) group_to_unpack_order(acc + j);
  for (int64_t p = 0; p < k; p += 4) {
    const int rows = int(std::min<int64_t>(4, k - p));
    uint32_t xs[4] = {};
    for (int i = 0; i < rows; ++i) xs[i] = x[p + i];
    const __m512bh x01 = bh(_mm512_set1_epi32(int(xs[0] | xs[1] << 16))), x23 = bh(_mm512_set1_epi32(int(xs[2] | xs[3] << 16)));
    const uint16_t* r[4];
    for (int i = 0; i < 4; ++i) r[i] = b + (p + std::min(i, rows - 1)) * ld;
    if (rows == 4)
      rows_bf16_groups<true>(r, rows, ld, w32, x01, x23, acc);
    else  // the last 1..3 rows of the slab
      rows_bf16_groups<false>(r, rows, ld, w32, x01, x23, acc);
    if (tail) {
      const int64_t j = w32;
      __m512i v[4];
      for (int i = 0; i < 4; ++i) v[i] = i < rows ? _mm512_maskz_loadu_epi16(tail, r[i] + j) : _mm512_setzero_si512();
      __m512 a0 = _mm512_maskz_loadu_ps(t0, acc + j), a1 = _mm512_maskz_loadu_ps(t1, acc + j + 16);
      a0 = _mm512_dpbf16_ps(a0, bh(_mm512_permutex2var_epi16(v[0], lo, v[1])), x01);
      a1 = _mm512_dpbf16_ps(a1, bh(_mm512_permutex2var_epi16(v[0], hi, v[1])), x01);
      a0 = _mm512_dpbf16_ps(a0, bh(_mm512_permutex2var_epi16(v[2], lo, v[3])), x23);
      a1 = _mm512_dpbf16_ps(a1, bh(_mm512_permutex2var_epi16(v[2], hi, v[3])), x23);
      _mm512_mask_storeu_ps(acc + j, t0, a0);
      _mm512_mask_storeu_ps(acc + j + 16, t1, a1);
    }
  }
  for (int64_t j = 0; j < w32; j += 32) group_to_natural_order(acc + j);
}

// Dots form: a column of op(B) is contiguous along k, so 32 bf16 of x and of each column are
// already the pairs vdpbf16ps takes. C columns at a time (4, then 1 for the rest).
template <int C>
LR_TARGET_AVX512_BF16 inline void dots_bf16_group(const uint16_t* x, const uint16_t* b, int64_t ld, int64_t k, float* out) {
  const int64_t k32 = k / 32 * 32;
  const __mmask32 tail = __mmask32((uint64_t(1) << (k % 32)) - 1);
  __m512 s[C];
  for (int c = 0; c < C; ++c) s[c] = _mm512_setzero_ps();
  for (int64_t p = 0; p < k32; p += 32) {
    const __m512i xv = _mm512_loadu_si512(x + p);
    for (int c = 0; c < C; ++c) s[c] = _mm512_dpbf16_ps(s[c], bh(_mm512_loadu_si512(b + c * ld + p)), bh(xv));
    for (int c = 0; c < C; ++c) _mm_prefetch(reinterpret_cast<const char*>(b + (C + c) * ld + p), _MM_HINT_T1);
  }
  if (tail) {
    const __m512i xv = _mm512_maskz_loadu_epi16(tail, x + k32);
    for (int c = 0; c < C; ++c) s[c] = _mm512_dpbf16_ps(s[c], bh(_mm512_maskz_loadu_epi16(tail, b + c * ld + k32)), bh(xv));
  }
  for (int c = 0; c < C; ++c) out[c] = _mm512_reduce_add_ps(s[c]);
}

LR_TARGET_AVX512_BF16 void dots_avx512bf16(const uint16_t* x, const uint16_t* b, int64_t ld, int64_t k, int64_t cols, float* out) {
  int64_t j = 0;
  for (; j + 4 <= cols; j += 4) dots_bf16_group<4>(x, b + j * ld, ld, k, out + j);
  for (; j < cols; ++j) dots_bf16_group<1>(x, b + j * ld, ld, k, out + j);
}
#endif

template <class T>
using RowsFn = void (*)(const T*, const T*, int64_t, int64_t, int64_t, float*);
template <class T>
using DotsFn = void (*)(const T*, const T*, int64_t, int64_t, int64_t, float*);

// Picked once per element type, at the level LOWRANK_SIMD allows (simd.cc).
template <class T>
RowsFn<T> rows_kernel() {
#ifdef LOWRANK_X86
  static const RowsFn<T> f = [] {
    if constexpr (std::is_same_v<T, uint16_t>)
      if (has_avx512_bf16()) return RowsFn<T>(rows_avx512bf16);
    return has_avx512() ? RowsFn<T>(rows_avx512<T>) : has_avx2_fma() ? RowsFn<T>(rows_avx2<T>) : RowsFn<T>(rows_portable<T>);
  }();
  return f;
#else
  return rows_portable<T>;
#endif
}
template <class T>
DotsFn<T> dots_kernel() {
#ifdef LOWRANK_X86
  static const DotsFn<T> f = [] {
    if constexpr (std::is_same_v<T, uint16_t>)
      if (has_avx512_bf16()) return DotsFn<T>(dots_avx512bf16);
    return has_avx512() ? DotsFn<T>(dots_avx512<T>) : has_avx2_fma() ? DotsFn<T>(dots_avx2<T>) : DotsFn<T>(dots_portable<T>);
  }();
  return f;
#else
  return dots_portable<T>;
#endif
}

// x[p0:p1] as the kernels read it (T, B's element type): in place when op(A)'s row is contiguous
// and already T; else gathered into a contiguous copy (A transposed), rounded to bf16 on the way
// when x is float32 of a bf16 product.
template <class TA, class T>
const T* contiguous_x(const TA* a, int64_t a_cs, int64_t p0, int64_t p1, std::vector<T>& buf) {
  if constexpr (std::is_same_v<TA, T>)
    if (a_cs == 1) return a;
  buf.resize(size_t(p1));
  for (int64_t p = p0; p < p1; ++p) {
    if constexpr (std::is_same_v<TA, T>)
      buf[size_t(p)] = a[p * a_cs];
    else
      buf[size_t(p)] = f32_to_bf16(a[p * a_cs].f);
  }
  return buf.data();
}

// acc[0:n] += Σ_p x[p] · op(B)[p, 0:n] over p in [p0, p1), op(B)'s rows contiguous.
template <class T>
void rows_slab(const T* x, const T* b, int64_t ld, int64_t p0, int64_t p1, int64_t n, float* acc) {
  for (int64_t j0 = 0; j0 < n; j0 += kBlock)
    rows_kernel<T>()(x + p0, b + p0 * ld + j0, ld, p1 - p0, std::min(kBlock, n - j0), acc + j0);
}

}  // namespace

// One walk for every operand type: T, B's element type, is what the kernels read (x included).
template <class TA, class T>
void gemv(int64_t n, int64_t k, float alpha, const TA* a, int64_t a_cs, int64_t batch_stride_a, const T* b, int64_t b_rs,
          int64_t b_cs, int64_t batch_stride_b, float beta, float* c, int64_t batch_stride_c, int64_t batch) {
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
      std::vector<T> gathered;
      for (int64_t bi = 0; bi < batch && p0 < p1; ++bi) {
        const T* x = contiguous_x(a + bi * batch_stride_a, a_cs, p0, p1, gathered);
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
    std::vector<T> gathered;
    for (int64_t bi = 0; bi < batch && j0 < j1; ++bi) {
      const T* x = contiguous_x(a + bi * batch_stride_a, a_cs, 0, k, gathered);
      for (int64_t jb = j0; jb < j1; jb += kBlock) {
        const int64_t w = std::min(kBlock, j1 - jb);
        dots_kernel<T>()(x, b + bi * batch_stride_b + jb * b_cs, b_cs, k, w, acc);
        store(c + bi * batch_stride_c + jb, acc, w, alpha, beta);
      }
    }
  };
  if (parallel && lines >= 2)
    parallel_threads(run);
  else
    run(0, 1);
}

template void gemv(int64_t, int64_t, float, const float*, int64_t, int64_t, const float*, int64_t, int64_t, int64_t, float, float*,
                   int64_t, int64_t);
template void gemv(int64_t, int64_t, float, const uint16_t*, int64_t, int64_t, const uint16_t*, int64_t, int64_t, int64_t, float,
                   float*, int64_t, int64_t);
template void gemv(int64_t, int64_t, float, const F32AsBf16*, int64_t, int64_t, const uint16_t*, int64_t, int64_t, int64_t, float,
                   float*, int64_t, int64_t);

}  // namespace cpu
}  // namespace lowrank
