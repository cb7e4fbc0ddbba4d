// Flash attention, forward and backward, developed standalone (as llm.c's dev/cuda does) before it
// goes into native/cuda. One file: a float64 CPU reference, a simple GPU kernel per direction for
// checking, tensor-core (mma.sync m16n8k16 bf16, float32 accumulate) flash kernels, a test of every
// version at odd shapes against the reference, and timings at GPT-2 training shape.
//
// Semantics (the same as native/ops/nn.h's AttnDims):
//   q [B, H, Tq, D], k and v [B, H, Tk, D], o [B, H, Tq, D], all contiguous; lse [B, H, Tq] float32.
//   Tq <= Tk; queries are the LAST Tq of Tk positions: query i sits at position i + Tk - Tq, and a
//   causal query sees keys j <= i + Tk - Tq (Tq < Tk: decoding with a KV cache).
//   keep (optional) [B, Tk] int32, 0 = padded key (weight 0 for every query). A query that sees no
//   unpadded key outputs 0, has lse = -inf and passes no gradient.
//   Dropout p on the normalized weights: weight (b, h, i, j) is element ((b*H + h)*Tq + i)*Tk + j of
//   the Philox stream (seed, offset) (native/core/philox.h), kept when philox_keep(...), then scaled
//   by 1/(1-p). The softmax normalizer and lse are those of the weights BEFORE dropout.
//   Backward: Delta_i = rowsum(dO_i * O_i), dS_ij = P_ij (M_ij dO_i.v_j - Delta_i) * scale
//   (M = dropout factor), dQ = dS K, dK = dS^T Q, dV = (P*M)^T dO.
//
// Versions:
//   cpu_attention_forward / cpu_attention_backward   float64 reference
//   1. simple_forward_kernel / simple_backward_*     one thread per query (or key) row, float32
//                                                    arithmetic, element type float or bf16; any D <= 128.
//   2. flash_forward_kernel                          FlashAttention-2 forward, mma.sync bf16 tensor cores,
//   3. flash_backward_kernel (+ delta, dq convert)   and backward (dQ by float atomics); D = 64 or 128;
//                                                    element type bf16, or float32 I/O with the tiles
//                                                    rounded to bf16 inside (bf16 accuracy, ~5e-3).
//   (4. the float32 SIMT flash kernels were developed here and now live in the addon:
//       native/cuda/attention.cu's flash path, checked by test/gpu/twins.test.ts and timed by
//       bench/train-gpu; their first GPU timings are in dev/cuda/attention-notes.md.)
//   (versions 2 and 3 are also in the addon, with float32 strided views and sliding windows:
//    native/cuda/attention_mma.cu, precision "bfloat16"; a fix to one belongs in the other too.)
//
// Build: nvcc -O3 -std=c++17 -arch=sm_90a [-DWITH_CUBLAS -lcublas] dev/cuda/attention.cu -o attn
// Run:   ./attn            (tests, then timings; `./attn bench`: timings only; `./attn tests`: tests
//        only, e.g. under compute-sanitizer; dev/cuda/run-attention.sh builds and runs everything)
// Without a GPU: dev/cuda/attention_emu.cpp runs the kernels on the CPU; `./attn reftest DIR` with
// dev/cuda/check_attention_reference.py checks the CPU reference against PyTorch.

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#ifdef WITH_CUBLAS
#include <cublas_v2.h>
#endif

#include "../../native/core/philox.h"

using bf16 = __nv_bfloat16;

#define CUDA_CHECK(call)                                                                        \
  do {                                                                                          \
    cudaError_t err_ = (call);                                                                  \
    if (err_ != cudaSuccess) {                                                                  \
      fprintf(stderr, "CUDA error %s at %s:%d: %s\n", cudaGetErrorName(err_), __FILE__, __LINE__, \
              cudaGetErrorString(err_));                                                        \
      exit(1);                                                                                  \
    }                                                                                           \
  } while (0)
#define LAUNCH_CHECK() CUDA_CHECK(cudaGetLastError())

// ---- problem description, shared by host and device ---------------------------------------------

struct Shape {
  int B, H, Tq, Tk, D;
  bool causal;
  float scale;    // 1/sqrt(D)
  float dropout;  // in [0, 1); 0 = none
  uint64_t seed, offset;
};

// Number of keys query i may see (before padding): the causal window ends at i + Tk - Tq.
__host__ __device__ inline int visible_keys(const Shape& s, int i) { return s.causal ? i + s.Tk - s.Tq + 1 : s.Tk; }

// Dropout factor of weight (b, h, i, j): 1/(1-p) when kept, 0 when dropped, 1 without dropout.
__host__ __device__ inline float drop_factor(const Shape& s, int b, int h, int i, int j) {
  if (s.dropout <= 0.0f) return 1.0f;
  const uint64_t e = ((uint64_t(b) * s.H + h) * s.Tq + i) * uint64_t(s.Tk) + j;
  return lowrank::philox_keep(s.seed, s.offset, e, s.dropout) ? 1.0f / (1.0f - s.dropout) : 0.0f;
}

// ---- CPU reference (float64) ----------------------------------------------------------------------
// Inputs are the float values the GPU sees (already rounded to bf16 for the bf16 cases).

void cpu_attention_forward(const Shape& s, const std::vector<float>& q, const std::vector<float>& k,
                           const std::vector<float>& v, const int32_t* keep, std::vector<double>& o,
                           std::vector<double>& lse) {
  const int D = s.D;
  o.assign(size_t(s.B) * s.H * s.Tq * D, 0.0);
  lse.assign(size_t(s.B) * s.H * s.Tq, -INFINITY);
  std::vector<double> p(s.Tk);
  for (int b = 0; b < s.B; ++b)
    for (int h = 0; h < s.H; ++h)
      for (int i = 0; i < s.Tq; ++i) {
        const size_t bh = size_t(b) * s.H + h, row = bh * s.Tq + i;
        const float* qi = &q[row * D];
        const int vis = visible_keys(s, i);
        double m = -INFINITY;
        for (int j = 0; j < vis; ++j) {
          p[j] = -INFINITY;
          if (keep && keep[size_t(b) * s.Tk + j] == 0) continue;
          const float* kj = &k[(bh * s.Tk + j) * D];
          double acc = 0;
          for (int d = 0; d < D; ++d) acc += double(qi[d]) * kj[d];
          p[j] = acc * s.scale;
          m = std::max(m, p[j]);
        }
        if (m == -INFINITY) continue;  // nothing visible: o = 0, lse = -inf
        double z = 0;
        for (int j = 0; j < vis; ++j) z += (p[j] = std::exp(p[j] - m));
        lse[row] = m + std::log(z);
        for (int j = 0; j < vis; ++j) {
          const double w = p[j] / z * drop_factor(s, b, h, i, j);
          if (w == 0) continue;
          const float* vj = &v[(bh * s.Tk + j) * D];
          for (int d = 0; d < D; ++d) o[row * D + d] += w * vj[d];
        }
      }
}

void cpu_attention_backward(const Shape& s, const std::vector<float>& q, const std::vector<float>& k,
                            const std::vector<float>& v, const int32_t* keep, const std::vector<double>& o,
                            const std::vector<double>& lse, const std::vector<float>& dout, std::vector<double>& dq,
                            std::vector<double>& dk, std::vector<double>& dv) {
  const int D = s.D;
  dq.assign(size_t(s.B) * s.H * s.Tq * D, 0.0);
  dk.assign(size_t(s.B) * s.H * s.Tk * D, 0.0);
  dv.assign(size_t(s.B) * s.H * s.Tk * D, 0.0);
  for (int b = 0; b < s.B; ++b)
    for (int h = 0; h < s.H; ++h)
      for (int i = 0; i < s.Tq; ++i) {
        const size_t bh = size_t(b) * s.H + h, row = bh * s.Tq + i;
        if (lse[row] == -INFINITY) continue;  // no visible key: no gradient
        const float* qi = &q[row * D];
        const float* gi = &dout[row * D];
        double delta = 0;
        for (int d = 0; d < D; ++d) delta += double(gi[d]) * o[row * D + d];
        for (int j = 0; j < visible_keys(s, i); ++j) {
          if (keep && keep[size_t(b) * s.Tk + j] == 0) continue;
          const float* kj = &k[(bh * s.Tk + j) * D];
          const float* vj = &v[(bh * s.Tk + j) * D];
          double sc = 0, dp = 0;
          for (int d = 0; d < D; ++d) {
            sc += double(qi[d]) * kj[d];
            dp += double(gi[d]) * vj[d];
          }
          const double p = std::exp(sc * s.scale - lse[row]);
          const double mfac = drop_factor(s, b, h, i, j);
          const double ds = p * (dp * mfac - delta) * s.scale;
          for (int d = 0; d < D; ++d) {
            dq[row * D + d] += ds * kj[d];
            dk[(bh * s.Tk + j) * D + d] += ds * qi[d];
            dv[(bh * s.Tk + j) * D + d] += p * mfac * gi[d];
          }
        }
      }
}

// ---- element access --------------------------------------------------------------------------------

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(bf16 x) { return __bfloat162float(x); }
template <typename T> __device__ __forceinline__ T from_float(float x);
template <> __device__ __forceinline__ float from_float<float>(float x) { return x; }
template <> __device__ __forceinline__ bf16 from_float<bf16>(float x) { return __float2bfloat16(x); }

// ---- version 1: simple kernels (one thread per row, float32 arithmetic) ------------------------------

constexpr int kMaxD = 128;

// One thread per query row (b, h, i): two passes over the visible keys (max, then exp-sum and
// the weighted sum of v). Grid: ceil(B*H*Tq / 128) blocks of 128 threads.
template <typename T>
__global__ void simple_forward_kernel(Shape s, const T* q, const T* k, const T* v, const int32_t* keep, T* o,
                                      float* lse) {
  const int64_t row = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (row >= int64_t(s.B) * s.H * s.Tq) return;
  const int D = s.D, i = int(row % s.Tq);
  const int64_t bh = row / s.Tq;
  const int b = int(bh / s.H), h = int(bh % s.H);
  const T* qi = q + row * D;
  const T* kb = k + bh * s.Tk * D;
  const T* vb = v + bh * s.Tk * D;
  const int vis = visible_keys(s, i);
  float m = -INFINITY;
  for (int j = 0; j < vis; ++j) {
    if (keep && keep[int64_t(b) * s.Tk + j] == 0) continue;
    float acc = 0;
    for (int d = 0; d < D; ++d) acc += to_float(qi[d]) * to_float(kb[int64_t(j) * D + d]);
    m = fmaxf(m, acc * s.scale);
  }
  float out[kMaxD];
  for (int d = 0; d < D; ++d) out[d] = 0;
  float z = 0;
  if (m != -INFINITY) {
    for (int j = 0; j < vis; ++j) {
      if (keep && keep[int64_t(b) * s.Tk + j] == 0) continue;
      float acc = 0;
      for (int d = 0; d < D; ++d) acc += to_float(qi[d]) * to_float(kb[int64_t(j) * D + d]);
      const float p = expf(acc * s.scale - m);
      z += p;
      const float w = p * drop_factor(s, b, h, i, j);
      for (int d = 0; d < D; ++d) out[d] += w * to_float(vb[int64_t(j) * D + d]);
    }
  }
  for (int d = 0; d < D; ++d) o[row * D + d] = from_float<T>(z > 0 ? out[d] / z : 0.0f);
  lse[row] = z > 0 ? m + logf(z) : -INFINITY;
}

// One thread per query row: Delta_i = dO_i.O_i (saved for the key-row kernel), dQ_i = sum_j dS_ij k_j.
template <typename T>
__global__ void simple_backward_dq_kernel(Shape s, const T* q, const T* k, const T* v, const int32_t* keep,
                                          const T* o, const float* lse, const T* dout, float* delta, T* dq) {
  const int64_t row = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (row >= int64_t(s.B) * s.H * s.Tq) return;
  const int D = s.D, i = int(row % s.Tq);
  const int64_t bh = row / s.Tq;
  const int b = int(bh / s.H), h = int(bh % s.H);
  const T* qi = q + row * D;
  const T* gi = dout + row * D;
  float dl = 0;
  for (int d = 0; d < D; ++d) dl += to_float(gi[d]) * to_float(o[row * D + d]);
  delta[row] = dl;
  float acc[kMaxD];
  for (int d = 0; d < D; ++d) acc[d] = 0;
  const float L = lse[row];
  if (L != -INFINITY) {
    for (int j = 0; j < visible_keys(s, i); ++j) {
      if (keep && keep[int64_t(b) * s.Tk + j] == 0) continue;
      const T* kj = k + (bh * s.Tk + j) * D;
      const T* vj = v + (bh * s.Tk + j) * D;
      float sc = 0, dp = 0;
      for (int d = 0; d < D; ++d) {
        sc += to_float(qi[d]) * to_float(kj[d]);
        dp += to_float(gi[d]) * to_float(vj[d]);
      }
      const float p = expf(sc * s.scale - L);
      const float ds = p * (dp * drop_factor(s, b, h, i, j) - dl) * s.scale;
      for (int d = 0; d < D; ++d) acc[d] += ds * to_float(kj[d]);
    }
  }
  for (int d = 0; d < D; ++d) dq[row * D + d] = from_float<T>(acc[d]);
}

// One thread per key row (b, h, j): dK_j = sum_i dS_ij q_i, dV_j = sum_i P_ij M_ij dO_i over the
// queries that see key j. Needs delta from simple_backward_dq_kernel.
template <typename T>
__global__ void simple_backward_dkdv_kernel(Shape s, const T* q, const T* k, const T* v, const int32_t* keep,
                                            const float* lse, const T* dout, const float* delta, T* dk, T* dv) {
  const int64_t krow = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (krow >= int64_t(s.B) * s.H * s.Tk) return;
  const int D = s.D, j = int(krow % s.Tk);
  const int64_t bh = krow / s.Tk;
  const int b = int(bh / s.H), h = int(bh % s.H);
  const T* kj = k + krow * D;
  const T* vj = v + krow * D;
  float ak[kMaxD], av[kMaxD];
  for (int d = 0; d < D; ++d) ak[d] = av[d] = 0;
  if (!(keep && keep[int64_t(b) * s.Tk + j] == 0)) {
    // causal: query i sees key j when i >= j - (Tk - Tq)
    for (int i = s.causal ? max(0, j - (s.Tk - s.Tq)) : 0; i < s.Tq; ++i) {
      const int64_t row = bh * s.Tq + i;
      if (lse[row] == -INFINITY) continue;
      const T* qi = q + row * D;
      const T* gi = dout + row * D;
      float sc = 0, dp = 0;
      for (int d = 0; d < D; ++d) {
        sc += to_float(qi[d]) * to_float(kj[d]);
        dp += to_float(gi[d]) * to_float(vj[d]);
      }
      const float p = expf(sc * s.scale - lse[row]);
      const float mf = drop_factor(s, b, h, i, j);
      const float ds = p * (dp * mf - delta[row]) * s.scale;
      for (int d = 0; d < D; ++d) {
        ak[d] += ds * to_float(qi[d]);
        av[d] += p * mf * to_float(gi[d]);
      }
    }
  }
  for (int d = 0; d < D; ++d) {
    dk[krow * D + d] = from_float<T>(ak[d]);
    dv[krow * D + d] = from_float<T>(av[d]);
  }
}

// ---- tensor-core building blocks (sm_80+) -------------------------------------------------------------
// mma.sync.m16n8k16 (row.col, bf16 in, f32 accumulate). Per lane, with g = lane / 4, t = lane % 4:
//   A (16x16, 4 regs of 2 bf16): a0 = A[g][2t..2t+1], a1 = A[g+8][2t..], a2 = A[g][2t+8..], a3 = A[g+8][2t+8..]
//   B (16x8, 2 regs):            b0 = B[2t..2t+1][g], b1 = B[2t+8..2t+9][g]
//   C (16x8, 4 floats):          c0,c1 = C[g][2t..2t+1], c2,c3 = C[g+8][2t..2t+1]
// ldmatrix.x4 loads four 8x8 bf16 matrices; lanes 8m..8m+7 give the row addresses of matrix m, and
// register m of lane l receives row l/4, columns 2(l%4)..+1 of matrix m (.trans: the transpose).

// The inline-PTX primitives; attention_emu.cpp supplies CPU versions with the same semantics.
#ifndef ATTN_EMULATE
__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const bf16* p) {
  const uint32_t addr = uint32_t(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const bf16* p) {
  const uint32_t addr = uint32_t(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// 16-byte asynchronous copy global -> shared; src_bytes = 0 fills the 16 bytes with zeros.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, int src_bytes) {
  const uint32_t addr = uint32_t(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(addr), "l"(gmem), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

__device__ __forceinline__ void atomic_add2(float* p, float a, float b) {
#if __CUDA_ARCH__ >= 900
  atomicAdd(reinterpret_cast<float2*>(p), make_float2(a, b));
#else
  atomicAdd(p, a);
  atomicAdd(p + 1, b);
#endif
}
#endif  // ATTN_EMULATE

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // .x (low 16 bits) = lo
  return *reinterpret_cast<const uint32_t*>(&v);
}

// Shared-memory tiles are [rows][D + 8] bf16: the 16-byte pad puts the 8 rows of an ldmatrix on
// 8 different groups of 4 banks (row stride 144 B for D = 64, 272 B for D = 128).
template <int D> __host__ __device__ constexpr int tile_stride() { return D + 8; }

// Tile rows [row0, row0 + ROWS) of a [nrows, D] matrix into smem; rows >= nrows become zeros.
// bf16: cp.async (completes at cp_async_wait); float: converted to bf16 by ordinary loads and stores
// (visible after the next __syncthreads).
template <int ROWS, int D>
__device__ __forceinline__ void load_tile(bf16* dst, const bf16* src, int row0, int nrows, int tid, int nthreads) {
  constexpr int kChunks = D / 8;  // 16-byte chunks per row
  for (int c = tid; c < ROWS * kChunks; c += nthreads) {
    const int r = c / kChunks, col = (c % kChunks) * 8;
    const bool valid = row0 + r < nrows;
    cp_async16(dst + r * tile_stride<D>() + col, valid ? src + int64_t(row0 + r) * D + col : src, valid ? 16 : 0);
  }
}
template <int ROWS, int D>
__device__ __forceinline__ void load_tile(bf16* dst, const float* src, int row0, int nrows, int tid, int nthreads) {
  constexpr int kChunks = D / 4;  // float4 per row
  for (int c = tid; c < ROWS * kChunks; c += nthreads) {
    const int r = c / kChunks, col = (c % kChunks) * 4;
    float4 x = make_float4(0.f, 0.f, 0.f, 0.f);
    if (row0 + r < nrows) x = *reinterpret_cast<const float4*>(src + int64_t(row0 + r) * D + col);
    uint2 packed = make_uint2(pack_bf16(x.x, x.y), pack_bf16(x.z, x.w));
    *reinterpret_cast<uint2*>(dst + r * tile_stride<D>() + col) = packed;
  }
}

__device__ __forceinline__ void store2(bf16* p, float a, float b) {
  *reinterpret_cast<__nv_bfloat162*>(p) = __floats2bfloat162_rn(a, b);
}
__device__ __forceinline__ void store2(float* p, float a, float b) { *reinterpret_cast<float2*>(p) = make_float2(a, b); }

// Dropout keep bits of one thread's accumulator tile of NB 16x8 blocks: bit 4*nb + e is set when
// element (nb, e) is kept. Its query i and key j: rows of the accumulator are queries
// (kQueryRows: i = ib + 8*(e/2), j = jb + 8*nb + e%2) or keys (i = ib + 8*nb + e%2, j = jb + 8*(e/2)).
// The loop stays rolled so the Philox rounds cost registers once, not once per element.
template <int NB, bool kQueryRows>
__device__ __forceinline__ uint32_t dropout_keep_bits(const Shape& s, int b, int h, int ib, int jb) {
  static_assert(NB * 4 <= 32, "one bit per element");
  uint32_t bits = 0;
#pragma unroll 1
  for (int x = 0; x < NB * 4; ++x) {
    const int nb = x / 4, e = x % 4;
    const int i = kQueryRows ? ib + 8 * (e / 2) : ib + 8 * nb + e % 2;
    const int j = kQueryRows ? jb + 8 * nb + e % 2 : jb + 8 * (e / 2);
    if (i < s.Tq && j < s.Tk && drop_factor(s, b, h, i, j) != 0.f) bits |= 1u << x;
  }
  return bits;
}

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// ---- version 2: flash forward ---------------------------------------------------------------------------
// Grid (B*H, ceil(Tq / Br)), kWarps warps; Br = 16*kWarps queries per block, warp w owns queries
// q0 + 16w .. +15. Keys in tiles of Bc = 64, double-buffered in shared memory (cp.async).
// Per warp and key tile: S = Q K^T (16 x 64, registers), online softmax in the log2 domain, then
// O += P V with P converted in registers from the accumulator layout to the A-operand layout.
// Shared memory: sQ [Br][D+8], sK [2][Bc][D+8], sV [2][Bc][D+8] (bf16).

constexpr int kBc = 64;

template <int D, int kWarps>
constexpr size_t flash_forward_smem() { return size_t(16 * kWarps + 4 * kBc) * tile_stride<D>() * sizeof(bf16); }

template <int D, int kWarps, typename T>
__global__ void __launch_bounds__(kWarps * 32, 1)
    flash_forward_kernel(Shape s, const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                         const int32_t* __restrict__ keep, T* __restrict__ o, float* __restrict__ lse) {
  constexpr int Br = 16 * kWarps, kThreads = kWarps * 32, kS = tile_stride<D>();
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* sQ = reinterpret_cast<bf16*>(smem_raw);
  bf16* sK = sQ + Br * kS;        // [2][Bc][kS]
  bf16* sV = sK + 2 * kBc * kS;   // [2][Bc][kS]

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32, g = lane / 4, tq = lane % 4;
  // Blocks start in order of blockIdx.x fastest: every head's last (for causal, costliest) query
  // tile first, so the cheap tiles fill the tail of the launch.
  const int q0 = (gridDim.y - 1 - blockIdx.y) * Br;
  const int bh = blockIdx.x, b = bh / s.H, h = bh % s.H;
  const int offset = s.Tk - s.Tq;  // query i sits at key position i + offset
  const T* qg = q + int64_t(bh) * s.Tq * D;
  const T* kg = k + int64_t(bh) * s.Tk * D;
  const T* vg = v + int64_t(bh) * s.Tk * D;

  const int kend = s.causal ? min(s.Tk, q0 + Br + offset) : s.Tk;  // keys [0, kend) are visible to some row
  const int ntiles = (kend + kBc - 1) / kBc;

  load_tile<Br, D>(sQ, qg, q0, s.Tq, tid, kThreads);
  load_tile<kBc, D>(sK, kg, 0, s.Tk, tid, kThreads);
  load_tile<kBc, D>(sV, vg, 0, s.Tk, tid, kThreads);
  cp_async_commit();

  const float scale_log2 = s.scale * kLog2e;
  uint32_t qf[D / 16][4];           // this warp's 16 query rows as A fragments
  float acc[D / 8][4] = {};         // O accumulator, 16 x D
  float m[2] = {-INFINITY, -INFINITY};  // running max (log2 domain) of rows g and g+8
  float l[2] = {0.f, 0.f};          // this lane's part of the running sum of rows g and g+8
  const int row_base = q0 + warp * 16 + g;  // row of c0/c1; c2/c3 are row_base + 8

  for (int t = 0; t < ntiles; ++t) {
    const int st = t & 1;
    if (t + 1 < ntiles) {  // prefetch the next key tile into the other stage (freed by the last barrier)
      load_tile<kBc, D>(sK + (st ^ 1) * kBc * kS, kg, (t + 1) * kBc, s.Tk, tid, kThreads);
      load_tile<kBc, D>(sV + (st ^ 1) * kBc * kS, vg, (t + 1) * kBc, s.Tk, tid, kThreads);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const bf16* tK = sK + st * kBc * kS;
    const bf16* tV = sV + st * kBc * kS;
    if (t == 0) {
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk)
        ldmatrix_x4(qf[kk], sQ + (warp * 16 + lane % 16) * kS + kk * 16 + (lane / 16) * 8);
    }

    // S = Q K^T: B[k=d][n=key] = K[key][d], so plain ldmatrix of K rows gives B fragments;
    // x4 covers keys 16*nb2 .. +15 (two n-blocks) by 16 dims.
    float sc[kBc / 8][4] = {};
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
      for (int nb2 = 0; nb2 < kBc / 16; ++nb2) {
        uint32_t r[4];
        ldmatrix_x4(r, tK + (nb2 * 16 + (lane / 16) * 8 + lane % 8) * kS + kk * 16 + ((lane / 8) % 2) * 8);
        mma_bf16(sc[2 * nb2], qf[kk], r[0], r[1]);
        mma_bf16(sc[2 * nb2 + 1], qf[kk], r[2], r[3]);
      }
    }

    // Scale to the log2 domain and mask: keys past Tk, causal, padding.
    const int k0 = t * kBc;
    const bool need_mask = keep != nullptr || k0 + kBc > s.Tk || (s.causal && k0 + kBc - 1 > q0 + offset);
#pragma unroll
    for (int nb = 0; nb < kBc / 8; ++nb)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float x = sc[nb][e] * scale_log2;
        if (need_mask) {
          const int row = row_base + (e / 2) * 8, col = k0 + nb * 8 + 2 * tq + (e % 2);
          if (col >= s.Tk || (s.causal && col > row + offset) || (keep && keep[int64_t(b) * s.Tk + col] == 0))
            x = -INFINITY;
        }
        sc[nb][e] = x;
      }

    // Online softmax. A row's 64 scores of this tile live in the 4 lanes of its quad.
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nb = 0; nb < kBc / 8; ++nb)
#pragma unroll
      for (int e = 0; e < 4; ++e) mx[e / 2] = fmaxf(mx[e / 2], sc[nb][e]);
    float base[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
      const float m_new = fmaxf(m[r], mx[r]);
      base[r] = m_new == -INFINITY ? 0.f : m_new;  // all masked so far: keep exp2 finite (gives 0)
      const float alpha = exp2f(m[r] - base[r]);
      m[r] = m_new;
      l[r] *= alpha;
#pragma unroll
      for (int nb = 0; nb < D / 8; ++nb) {
        acc[nb][2 * r] *= alpha;
        acc[nb][2 * r + 1] *= alpha;
      }
    }
#pragma unroll
    for (int nb = 0; nb < kBc / 8; ++nb)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float p = exp2f(sc[nb][e] - base[e / 2]);
        l[e / 2] += p;  // the normalizer counts the weights before dropout
        sc[nb][e] = p;
      }
    if (s.dropout > 0.f) {
      const uint32_t bits = dropout_keep_bits<kBc / 8, true>(s, b, h, row_base, k0 + 2 * tq);
      const float kept = 1.f / (1.f - s.dropout);
#pragma unroll
      for (int nb = 0; nb < kBc / 8; ++nb)
#pragma unroll
        for (int e = 0; e < 4; ++e) sc[nb][e] *= (bits >> (4 * nb + e)) & 1u ? kept : 0.f;
    }

    // O += P V. P's accumulator blocks 2kk, 2kk+1 (keys 16kk..16kk+15) form one A fragment.
    // B[k=key][n=d] = V[key][d]: consecutive k are different rows of V, so ldmatrix.trans;
    // x4 covers keys 16kk..+15 by dims 16db2..+15 (two n-blocks).
#pragma unroll
    for (int kk = 0; kk < kBc / 16; ++kk) {
      const uint32_t pa[4] = {pack_bf16(sc[2 * kk][0], sc[2 * kk][1]), pack_bf16(sc[2 * kk][2], sc[2 * kk][3]),
                              pack_bf16(sc[2 * kk + 1][0], sc[2 * kk + 1][1]),
                              pack_bf16(sc[2 * kk + 1][2], sc[2 * kk + 1][3])};
#pragma unroll
      for (int db2 = 0; db2 < D / 16; ++db2) {
        uint32_t r[4];
        ldmatrix_x4_trans(r, tV + (kk * 16 + ((lane / 8) % 2) * 8 + lane % 8) * kS + db2 * 16 + (lane / 16) * 8);
        mma_bf16(acc[2 * db2], pa, r[0], r[1]);
        mma_bf16(acc[2 * db2 + 1], pa, r[2], r[3]);
      }
    }
    __syncthreads();  // stage st is refilled by the prefetch of iteration t + 1
  }

  // Normalize, write O and lse. Rows that saw nothing (l = 0) give O = 0, lse = -inf.
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
    const int row = row_base + r * 8;
    if (row >= s.Tq) continue;
    const float inv = l[r] > 0.f ? 1.f / l[r] : 0.f;
    T* orow = o + (int64_t(bh) * s.Tq + row) * D;
#pragma unroll
    for (int nb = 0; nb < D / 8; ++nb) store2(orow + nb * 8 + 2 * tq, acc[nb][2 * r] * inv, acc[nb][2 * r + 1] * inv);
    if (tq == 0) lse[int64_t(bh) * s.Tq + row] = l[r] > 0.f ? m[r] * kLn2 + logf(l[r]) : -INFINITY;
  }
}

// ---- version 3: flash backward ---------------------------------------------------------------------------
// 1. flash_delta_kernel: Delta[row] = dO[row].O[row] (float32), one warp per row.
// 2. flash_backward_kernel: grid (B*H, ceil(Tk / 64)), 4 warps; warp w owns keys k0 + 16w .. +15 and
//    accumulates their dK, dV (16 x D each) in registers. For each tile of Br queries that sees
//    the block's keys (double-buffered Q, dO, lse, Delta):
//      S^T = K Q^T, P^T = exp2(S^T*scale*log2e - lse*log2e), dP^T = V dO^T (16 x Br per warp)
//      dS^T = P^T * (dP^T*M - Delta) * scale;  dV += (P^T*M) dO;  dK += dS^T Q
//      dS^T -> shared memory (bf16), then dQ[tile] += dS K (Br x D over the 4 warps), added into
//      a float32 dQ accumulator with atomics (float2 atomics on sm_90).
// 3. flash_dq_convert_kernel: dQ = dq_acc in the element type.
// Shared memory: sK, sV [64][D+8], sQ, sdO [2][Br][D+8], sdS [64][Br+8] (bf16), sL, sDelta [2][Br].
// Br = 64 for D = 64; 32 for D = 128 (keeps dK, dV, S^T, dP^T within the register file).

template <int D> __host__ __device__ constexpr int bwd_br() { return D == 64 ? 64 : 32; }

template <int D>
constexpr size_t flash_backward_smem() {
  constexpr int Br = bwd_br<D>();
  return size_t(2 * kBc + 4 * Br) * tile_stride<D>() * sizeof(bf16) + size_t(kBc) * (Br + 8) * sizeof(bf16) +
         4 * Br * sizeof(float);
}

template <typename T>
__global__ void flash_delta_kernel(Shape s, const T* __restrict__ o, const T* __restrict__ dout, float* __restrict__ delta) {
  const int64_t row = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  if (row >= int64_t(s.B) * s.H * s.Tq) return;
  const int lane = threadIdx.x % 32;
  float acc = 0;
  for (int d = lane; d < s.D; d += 32) acc += to_float(o[row * s.D + d]) * to_float(dout[row * s.D + d]);
#pragma unroll
  for (int w = 16; w > 0; w /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, w);
  if (lane == 0) delta[row] = acc;
}

template <typename T>
__global__ void flash_dq_convert_kernel(int64_t n, const float* __restrict__ acc, T* __restrict__ dq) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dq[i] = from_float<T>(acc[i]);
}

template <int D, typename T>
__global__ void __launch_bounds__(128)
    flash_backward_kernel(Shape s, const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                          const int32_t* __restrict__ keep, const float* __restrict__ lse,
                          const float* __restrict__ delta, const T* __restrict__ dout, float* __restrict__ dq_acc,
                          T* __restrict__ dk, T* __restrict__ dv) {
  constexpr int Br = bwd_br<D>(), kThreads = 128, kS = tile_stride<D>(), kSS = Br + 8;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* sK = reinterpret_cast<bf16*>(smem_raw);  // [Bc][kS]
  bf16* sV = sK + kBc * kS;                      // [Bc][kS]
  bf16* sQ = sV + kBc * kS;                      // [2][Br][kS]
  bf16* sdO = sQ + 2 * Br * kS;                  // [2][Br][kS]
  bf16* sdS = sdO + 2 * Br * kS;                 // [Bc][kSS], dS^T: row = key, column = query
  float* sL = reinterpret_cast<float*>(sdS + kBc * kSS);  // [2][Br] lse * log2e (+inf: row passes nothing)
  float* sDelta = sL + 2 * Br;                            // [2][Br]

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32, g = lane / 4, tq = lane % 4;
  const int k0 = blockIdx.y * kBc;  // the first key tiles (for causal, the costliest) start first
  const int bh = blockIdx.x, b = bh / s.H, h = bh % s.H;
  const int offset = s.Tk - s.Tq;
  const T* qg = q + int64_t(bh) * s.Tq * D;
  const T* dog = dout + int64_t(bh) * s.Tq * D;
  const T* kg = k + int64_t(bh) * s.Tk * D;
  const T* vg = v + int64_t(bh) * s.Tk * D;
  const float* lg = lse + int64_t(bh) * s.Tq;
  const float* dg = delta + int64_t(bh) * s.Tq;
  float* dqg = dq_acc + int64_t(bh) * s.Tq * D;

  // Causal: the first query that sees key k0 is k0 - offset.
  const int first_tile = s.causal ? max(0, k0 - offset) / Br : 0;
  const int ntiles = (s.Tq + Br - 1) / Br;

  // Queries [i0, i0 + Br) into stage st: Q and dO tiles (async), lse and Delta (plain stores,
  // published by the barrier that precedes their use).
  auto load_queries = [&](int st, int i0) {
    load_tile<Br, D>(sQ + st * Br * kS, qg, i0, s.Tq, tid, kThreads);
    load_tile<Br, D>(sdO + st * Br * kS, dog, i0, s.Tq, tid, kThreads);
    for (int r = tid; r < Br; r += kThreads) {
      const bool valid = i0 + r < s.Tq;
      const float L = valid ? lg[i0 + r] : -INFINITY;
      sL[st * Br + r] = L == -INFINITY ? INFINITY : L * kLog2e;
      sDelta[st * Br + r] = valid ? dg[i0 + r] : 0.f;
    }
  };

  load_tile<kBc, D>(sK, kg, k0, s.Tk, tid, kThreads);
  load_tile<kBc, D>(sV, vg, k0, s.Tk, tid, kThreads);
  if (first_tile < ntiles) load_queries(0, first_tile * Br);
  cp_async_commit();

  const float scale_log2 = s.scale * kLog2e;
  float dk_acc[D / 8][4] = {}, dv_acc[D / 8][4] = {};
  const int kw = warp * 16;         // this warp's first key row within the tile
  const int key_base = k0 + kw + g;  // key of c0/c1; c2/c3 are key_base + 8
  // dQ split: Br/16 row blocks x (4 / (Br/16)) column slices of D.
  constexpr int kRowBlocks = Br / 16, kColSplit = 4 / kRowBlocks, kQCols = D / kColSplit;
  const int dq_rb = warp % kRowBlocks, dq_c0 = (warp / kRowBlocks) * kQCols;

  for (int t = first_tile; t < ntiles; ++t) {
    const int st = (t - first_tile) & 1, i0 = t * Br;
    if (t + 1 < ntiles) {
      load_queries(st ^ 1, i0 + Br);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const bf16* tQ = sQ + st * Br * kS;
    const bf16* tdO = sdO + st * Br * kS;
    const float* tL = sL + st * Br;
    const float* tD = sDelta + st * Br;

    // S^T = K Q^T and dP^T = V dO^T, 16 keys x Br queries per warp. A = this warp's K (V) rows;
    // B[k=d][n=query] = Q[query][d]: plain ldmatrix of Q (dO) rows.
    float sc[Br / 8][4] = {}, dp[Br / 8][4] = {};
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      uint32_t ka[4], va[4];
      ldmatrix_x4(ka, sK + (kw + lane % 16) * kS + kk * 16 + (lane / 16) * 8);
      ldmatrix_x4(va, sV + (kw + lane % 16) * kS + kk * 16 + (lane / 16) * 8);
#pragma unroll
      for (int nb2 = 0; nb2 < Br / 16; ++nb2) {
        const int off = (nb2 * 16 + (lane / 16) * 8 + lane % 8) * kS + kk * 16 + ((lane / 8) % 2) * 8;
        uint32_t r[4];
        ldmatrix_x4(r, tQ + off);
        mma_bf16(sc[2 * nb2], ka, r[0], r[1]);
        mma_bf16(sc[2 * nb2 + 1], ka, r[2], r[3]);
        ldmatrix_x4(r, tdO + off);
        mma_bf16(dp[2 * nb2], va, r[0], r[1]);
        mma_bf16(dp[2 * nb2 + 1], va, r[2], r[3]);
      }
    }

    // P^T, dS^T (in sc), P^T*M (in dp). Element (key, query) = (key_base + 8*(e/2), i0 + 8nb + 2tq + e%2).
    const bool need_mask = keep != nullptr || k0 + kBc > s.Tk || (s.causal && k0 + kBc - 1 > i0 + offset);
    uint32_t bits = 0xffffffffu;  // dropout keep bits (all kept without dropout)
    if (s.dropout > 0.f)
      bits = dropout_keep_bits<Br / 8, false>(s, b, h, i0 + 2 * tq, key_base);
    const float kept = s.dropout > 0.f ? 1.f / (1.f - s.dropout) : 1.f;
#pragma unroll
    for (int nb = 0; nb < Br / 8; ++nb)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = key_base + (e / 2) * 8, qc = nb * 8 + 2 * tq + (e % 2), qrow = i0 + qc;
        bool masked = false;
        if (need_mask)
          masked = key >= s.Tk || (s.causal && key > qrow + offset) || (keep && keep[int64_t(b) * s.Tk + key] == 0);
        const float p = masked ? 0.f : exp2f(sc[nb][e] * scale_log2 - tL[qc]);
        const float mf = (bits >> (4 * nb + e)) & 1u ? kept : 0.f;
        sc[nb][e] = p * (dp[nb][e] * mf - tD[qc]) * s.scale;
        dp[nb][e] = p * mf;
      }

    // dV += (P^T M) dO and dK += dS^T Q: A from registers (accumulator blocks 2kk, 2kk+1 = queries
    // 16kk..+15), B[k=query][n=d] = dO[query][d] (Q): ldmatrix.trans.
#pragma unroll
    for (int kk = 0; kk < Br / 16; ++kk) {
      const uint32_t pa[4] = {pack_bf16(dp[2 * kk][0], dp[2 * kk][1]), pack_bf16(dp[2 * kk][2], dp[2 * kk][3]),
                              pack_bf16(dp[2 * kk + 1][0], dp[2 * kk + 1][1]),
                              pack_bf16(dp[2 * kk + 1][2], dp[2 * kk + 1][3])};
      const uint32_t sa[4] = {pack_bf16(sc[2 * kk][0], sc[2 * kk][1]), pack_bf16(sc[2 * kk][2], sc[2 * kk][3]),
                              pack_bf16(sc[2 * kk + 1][0], sc[2 * kk + 1][1]),
                              pack_bf16(sc[2 * kk + 1][2], sc[2 * kk + 1][3])};
#pragma unroll
      for (int db2 = 0; db2 < D / 16; ++db2) {
        const int off = (kk * 16 + ((lane / 8) % 2) * 8 + lane % 8) * kS + db2 * 16 + (lane / 16) * 8;
        uint32_t r[4];
        ldmatrix_x4_trans(r, tdO + off);
        mma_bf16(dv_acc[2 * db2], pa, r[0], r[1]);
        mma_bf16(dv_acc[2 * db2 + 1], pa, r[2], r[3]);
        ldmatrix_x4_trans(r, tQ + off);
        mma_bf16(dk_acc[2 * db2], sa, r[0], r[1]);
        mma_bf16(dk_acc[2 * db2 + 1], sa, r[2], r[3]);
      }
      // dS^T rows kw+g and kw+g+8, query columns 16kk + 2tq (+8): the same bf16 pairs as sa.
      bf16* d0 = sdS + (kw + g) * kSS + kk * 16 + 2 * tq;
      *reinterpret_cast<uint32_t*>(d0) = sa[0];
      *reinterpret_cast<uint32_t*>(d0 + 8 * kSS) = sa[1];
      *reinterpret_cast<uint32_t*>(d0 + 8) = sa[2];
      *reinterpret_cast<uint32_t*>(d0 + 8 * kSS + 8) = sa[3];
    }
    __syncthreads();

    // dQ[i0 + 16*dq_rb .. +15][dq_c0 .. + kQCols) += dS K over the 64 keys. A[query][key] = dS is
    // stored transposed (sdS[key][query]): ldmatrix.trans, matrices (q0-7,k0-7), (q8-15,k0-7),
    // (q0-7,k8-15), (q8-15,k8-15). B[k=key][n=d] = K[key][d]: ldmatrix.trans.
    {
      float dqa[kQCols / 8][4] = {};
#pragma unroll
      for (int kk = 0; kk < kBc / 16; ++kk) {
        uint32_t a[4];
        ldmatrix_x4_trans(a, sdS + (kk * 16 + (lane / 16) * 8 + lane % 8) * kSS + dq_rb * 16 + ((lane / 8) % 2) * 8);
#pragma unroll
        for (int db2 = 0; db2 < kQCols / 16; ++db2) {
          uint32_t r[4];
          ldmatrix_x4_trans(r, sK + (kk * 16 + ((lane / 8) % 2) * 8 + lane % 8) * kS + dq_c0 + db2 * 16 + (lane / 16) * 8);
          mma_bf16(dqa[2 * db2], a, r[0], r[1]);
          mma_bf16(dqa[2 * db2 + 1], a, r[2], r[3]);
        }
      }
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int qrow = i0 + dq_rb * 16 + g + 8 * r;
        if (qrow >= s.Tq) continue;
#pragma unroll
        for (int nb = 0; nb < kQCols / 8; ++nb)
          atomic_add2(dqg + int64_t(qrow) * D + dq_c0 + nb * 8 + 2 * tq, dqa[nb][2 * r], dqa[nb][2 * r + 1]);
      }
    }
    __syncthreads();  // sdS and stage st are rewritten next iteration
  }

  // dK, dV of keys key_base and key_base + 8 (zeros when no query sees the tile).
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int key = key_base + 8 * r;
    if (key >= s.Tk) continue;
    T* dkrow = dk + (int64_t(bh) * s.Tk + key) * D;
    T* dvrow = dv + (int64_t(bh) * s.Tk + key) * D;
#pragma unroll
    for (int nb = 0; nb < D / 8; ++nb) {
      store2(dkrow + nb * 8 + 2 * tq, dk_acc[nb][2 * r], dk_acc[nb][2 * r + 1]);
      store2(dvrow + nb * 8 + 2 * tq, dv_acc[nb][2 * r], dv_acc[nb][2 * r + 1]);
    }
  }
}

// ---- launchers (everything below runs on the host with a GPU; dev/cuda/attention_emu.cpp compiles
// the file up to here on the CPU, with ATTN_EMULATE defined) ----------------------------------------------

#ifndef ATTN_EMULATE

template <typename T>
void simple_forward(const Shape& s, const T* q, const T* k, const T* v, const int32_t* keep, T* o, float* lse) {
  const int64_t rows = int64_t(s.B) * s.H * s.Tq;
  simple_forward_kernel<T><<<unsigned((rows + 127) / 128), 128>>>(s, q, k, v, keep, o, lse);
  LAUNCH_CHECK();
}

// delta: workspace [B, H, Tq] float32.
template <typename T>
void simple_backward(const Shape& s, const T* q, const T* k, const T* v, const int32_t* keep, const T* o,
                     const float* lse, const T* dout, float* delta, T* dq, T* dk, T* dv) {
  const int64_t qrows = int64_t(s.B) * s.H * s.Tq, krows = int64_t(s.B) * s.H * s.Tk;
  simple_backward_dq_kernel<T><<<unsigned((qrows + 127) / 128), 128>>>(s, q, k, v, keep, o, lse, dout, delta, dq);
  LAUNCH_CHECK();
  simple_backward_dkdv_kernel<T><<<unsigned((krows + 127) / 128), 128>>>(s, q, k, v, keep, lse, dout, delta, dk, dv);
  LAUNCH_CHECK();
}

template <int D, int kWarps, typename T>
void flash_forward_d(const Shape& s, const T* q, const T* k, const T* v, const int32_t* keep, T* o, float* lse) {
  constexpr size_t smem = flash_forward_smem<D, kWarps>();
  auto kernel = flash_forward_kernel<D, kWarps, T>;
  static bool configured = false;  // once per instantiation, so timed calls are launches only
  if (!configured) {
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    configured = true;
  }
  const dim3 grid(s.B * s.H, (s.Tq + 16 * kWarps - 1) / (16 * kWarps));
  kernel<<<grid, kWarps * 32, smem>>>(s, q, k, v, keep, o, lse);
  LAUNCH_CHECK();
}

template <int kWarps = 4, typename T>
void flash_forward(const Shape& s, const T* q, const T* k, const T* v, const int32_t* keep, T* o, float* lse) {
  if (s.D == 64) flash_forward_d<64, kWarps>(s, q, k, v, keep, o, lse);
  else if (s.D == 128) flash_forward_d<128, kWarps>(s, q, k, v, keep, o, lse);
  else { fprintf(stderr, "flash_forward: head dim %d not supported (64, 128)\n", s.D); exit(1); }
}

template <int D, typename T>
void flash_backward_d(const Shape& s, const T* q, const T* k, const T* v, const int32_t* keep, const float* lse,
                      const float* delta, const T* dout, float* dq_acc, T* dk, T* dv) {
  constexpr size_t smem = flash_backward_smem<D>();
  auto kernel = flash_backward_kernel<D, T>;
  static bool configured = false;
  if (!configured) {
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    configured = true;
  }
  kernel<<<dim3(s.B * s.H, (s.Tk + kBc - 1) / kBc), 128, smem>>>(s, q, k, v, keep, lse, delta, dout, dq_acc, dk, dv);
  LAUNCH_CHECK();
}

// Workspaces: delta [B, H, Tq] float32, dq_acc [B, H, Tq, D] float32.
template <typename T>
void flash_backward(const Shape& s, const T* q, const T* k, const T* v, const int32_t* keep, const T* o,
                    const float* lse, const T* dout, float* delta, float* dq_acc, T* dq, T* dk, T* dv) {
  const int64_t rows = int64_t(s.B) * s.H * s.Tq, nq = rows * s.D;
  CUDA_CHECK(cudaMemsetAsync(dq_acc, 0, nq * sizeof(float)));
  flash_delta_kernel<T><<<unsigned((rows + 7) / 8), 256>>>(s, o, dout, delta);
  LAUNCH_CHECK();
  if (s.D == 64) flash_backward_d<64>(s, q, k, v, keep, lse, delta, dout, dq_acc, dk, dv);
  else if (s.D == 128) flash_backward_d<128>(s, q, k, v, keep, lse, delta, dout, dq_acc, dk, dv);
  else { fprintf(stderr, "flash_backward: head dim %d not supported (64, 128)\n", s.D); exit(1); }
  flash_dq_convert_kernel<T><<<unsigned(std::min<int64_t>((nq + 255) / 256, 65536)), 256>>>(nq, dq_acc, dq);
  LAUNCH_CHECK();
}


// ---- host harness ---------------------------------------------------------------------------------------

template <typename T> T host_from_float(float x);
template <> float host_from_float<float>(float x) { return x; }
template <> bf16 host_from_float<bf16>(float x) { return __float2bfloat16(x); }
inline float host_to_float(float x) { return x; }
inline float host_to_float(bf16 x) { return __bfloat162float(x); }

// Device copy of x in element type T; x is rounded in place to what the device holds.
template <typename T>
T* to_device(std::vector<float>& x) {
  std::vector<T> h(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    h[i] = host_from_float<T>(x[i]);
    x[i] = host_to_float(h[i]);
  }
  T* d;
  CUDA_CHECK(cudaMalloc(&d, h.size() * sizeof(T)));
  CUDA_CHECK(cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}

template <typename T>
std::vector<float> to_host(const T* d, size_t n) {
  std::vector<T> h(n);
  CUDA_CHECK(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost));
  std::vector<float> x(n);
  for (size_t i = 0; i < n; ++i) x[i] = host_to_float(h[i]);
  return x;
}

template <typename T>
T* device_alloc_poisoned(size_t n) {  // all bits set: NaN in float and bf16, so unwritten outputs fail
  T* d;
  CUDA_CHECK(cudaMalloc(&d, n * sizeof(T)));
  CUDA_CHECK(cudaMemset(d, 0xff, n * sizeof(T)));
  return d;
}

// max |got - ref| / max |ref|; fails on NaN and on a mismatch of -inf (lse of an empty row).
struct Err {
  double rel = 0;
  bool ok = true;
};
Err compare(const std::vector<float>& got, const std::vector<double>& ref) {
  double maxerr = 0, maxref = 0;
  Err e;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (std::isinf(ref[i]) || std::isinf(got[i])) {
      if (!(std::isinf(ref[i]) && got[i] == ref[i])) e.ok = false;
      continue;
    }
    if (std::isnan(got[i])) { e.ok = false; continue; }
    maxerr = std::max(maxerr, std::fabs(got[i] - ref[i]));
    maxref = std::max(maxref, std::fabs(ref[i]));
  }
  e.rel = maxerr / std::max(maxref, 1e-30);
  return e;
}

struct Case {
  const char* name;
  int B, H, Tq, Tk, D;
  bool causal, padding;
  float dropout;
};

std::vector<std::string> g_failures;  // repeated at the end, where a log's tail shows them

void report(const char* version, const Case& c, const char* what, Err e, double tol) {
  const bool pass = e.ok && e.rel < tol;
  char line[256];
  snprintf(line, sizeof(line), "  %-4s %-26s %-34s %-4s rel %.2e (tol %.0e)%s", pass ? "PASS" : "FAIL", version, c.name,
           what, e.rel, tol, e.ok ? "" : " [NaN/inf mismatch]");
  printf("%s\n", line);
  if (!pass) g_failures.push_back(line);
}

// Runs every version for element type T on case c against the float64 reference.
template <typename T>
void check_case(const Case& c, std::mt19937& rng) {
  const bool is_bf16 = sizeof(T) == 2;
  Shape s{c.B, c.H, c.Tq, c.Tk, c.D, c.causal, 1.0f / std::sqrt(float(c.D)), c.dropout, rng(), uint64_t(rng()) * 4};
  const size_t nq = size_t(c.B) * c.H * c.Tq * c.D, nk = size_t(c.B) * c.H * c.Tk * c.D, nrow = size_t(c.B) * c.H * c.Tq;
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<float> q(nq), k(nk), v(nk), dout(nq);
  for (auto& x : q) x = 1.5f * normal(rng);  // scores of a few units: a peaked softmax
  for (auto& x : k) x = 1.5f * normal(rng);
  for (auto& x : v) x = normal(rng);
  for (auto& x : dout) x = normal(rng);
  std::vector<int32_t> keep;
  if (c.padding) {  // batch b: left padding of 5b+3 keys, a few padded keys in the middle
    keep.assign(size_t(c.B) * c.Tk, 1);
    for (int b = 0; b < c.B; ++b)
      for (int j = 0; j < c.Tk; ++j)
        if (j < 5 * b + 3 || j % 17 == 11) keep[size_t(b) * c.Tk + j] = 0;
  }
  T *dq_in = to_device<T>(q), *dk_in = to_device<T>(k), *dv_in = to_device<T>(v), *ddo = to_device<T>(dout);
  int32_t* dkeep = nullptr;
  if (c.padding) {
    CUDA_CHECK(cudaMalloc(&dkeep, keep.size() * sizeof(int32_t)));
    CUDA_CHECK(cudaMemcpy(dkeep, keep.data(), keep.size() * sizeof(int32_t), cudaMemcpyHostToDevice));
  }
  std::vector<double> ro, rl, rdq, rdk, rdv;
  cpu_attention_forward(s, q, k, v, c.padding ? keep.data() : nullptr, ro, rl);
  cpu_attention_backward(s, q, k, v, c.padding ? keep.data() : nullptr, ro, rl, dout, rdq, rdk, rdv);

  T *o = device_alloc_poisoned<T>(nq), *gq = device_alloc_poisoned<T>(nq), *gk = device_alloc_poisoned<T>(nk),
    *gv = device_alloc_poisoned<T>(nk);
  float *lse = device_alloc_poisoned<float>(nrow), *delta = device_alloc_poisoned<float>(nrow),
        *dq_acc = device_alloc_poisoned<float>(nq);
  // bf16 outputs carry ~4e-3 relative rounding each; the flash kernels also round P and dS to bf16.
  const double tol = is_bf16 ? 2e-2 : 1e-4;
  const char* tname = is_bf16 ? "bf16" : "f32";

  auto check_all = [&](const std::string& version, double tol_fwd, double tol_bwd) {
    CUDA_CHECK(cudaDeviceSynchronize());
    report(version.c_str(), c, "O", compare(to_host(o, nq), ro), tol_fwd);
    const std::vector<float> l = to_host(lse, nrow);
    report(version.c_str(), c, "lse", compare(l, rl), tol_fwd);
    report(version.c_str(), c, "dQ", compare(to_host(gq, nq), rdq), tol_bwd);
    report(version.c_str(), c, "dK", compare(to_host(gk, nk), rdk), tol_bwd);
    report(version.c_str(), c, "dV", compare(to_host(gv, nk), rdv), tol_bwd);
    for (T* p : {o, gq}) CUDA_CHECK(cudaMemset(p, 0xff, nq * sizeof(T)));  // poison for the next version
    for (T* p : {gk, gv}) CUDA_CHECK(cudaMemset(p, 0xff, nk * sizeof(T)));
    CUDA_CHECK(cudaMemset(lse, 0xff, nrow * sizeof(float)));
  };

  simple_forward<T>(s, dq_in, dk_in, dv_in, dkeep, o, lse);
  simple_backward<T>(s, dq_in, dk_in, dv_in, dkeep, o, lse, ddo, delta, gq, gk, gv);
  check_all(std::string("simple ") + tname, tol, tol);

  if (c.D == 64 || c.D == 128) {
    // flash with float32 I/O rounds its tiles to bf16: bf16 accuracy, bf16 tolerance.
    flash_forward<4, T>(s, dq_in, dk_in, dv_in, dkeep, o, lse);
    flash_backward<T>(s, dq_in, dk_in, dv_in, dkeep, o, lse, ddo, delta, dq_acc, gq, gk, gv);
    check_all(std::string("flash(4 warps) ") + tname, 2e-2, 2e-2);
    flash_forward<8, T>(s, dq_in, dk_in, dv_in, dkeep, o, lse);
    flash_backward<T>(s, dq_in, dk_in, dv_in, dkeep, o, lse, ddo, delta, dq_acc, gq, gk, gv);
    check_all(std::string("flash(8 warps) ") + tname, 2e-2, 2e-2);
  }
  for (void* p : {(void*)dq_in, (void*)dk_in, (void*)dv_in, (void*)ddo, (void*)o, (void*)gq, (void*)gk, (void*)gv,
                  (void*)lse, (void*)delta, (void*)dq_acc, (void*)dkeep})
    CUDA_CHECK(cudaFree(p));
}

// ---- timing ---------------------------------------------------------------------------------------------

template <typename F>
float median_ms(F&& f, int warmup = 5, int reps = 30) {
  for (int i = 0; i < warmup; ++i) f();
  cudaEvent_t a, b;
  CUDA_CHECK(cudaEventCreate(&a));
  CUDA_CHECK(cudaEventCreate(&b));
  std::vector<float> t(reps);
  for (int i = 0; i < reps; ++i) {
    CUDA_CHECK(cudaEventRecord(a));
    f();
    CUDA_CHECK(cudaEventRecord(b));
    CUDA_CHECK(cudaEventSynchronize(b));
    CUDA_CHECK(cudaEventElapsedTime(&t[i], a, b));
  }
  CUDA_CHECK(cudaEventDestroy(a));
  CUDA_CHECK(cudaEventDestroy(b));
  std::sort(t.begin(), t.end());
  return t[reps / 2];
}

#ifdef WITH_CUBLAS
// bf16 GEMM ceiling: C[M,N] = A[M,K] B[K,N] with bf16 inputs, float32 accumulate, bf16 output.
double cublas_bf16_tflops(int n) {
  cublasHandle_t handle;
  if (cublasCreate(&handle) != CUBLAS_STATUS_SUCCESS) { fprintf(stderr, "cublasCreate failed\n"); exit(1); }
  std::vector<float> x(size_t(n) * n);
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.f, 1.f);
  for (auto& e : x) e = normal(rng);
  bf16 *A = to_device<bf16>(x), *B = to_device<bf16>(x), *C = device_alloc_poisoned<bf16>(size_t(n) * n);
  const float one = 1.f, zero = 0.f;
  auto gemm = [&] {
    cublasStatus_t st = cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, A, CUDA_R_16BF, n, B, CUDA_R_16BF,
                                     n, &zero, C, CUDA_R_16BF, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    if (st != CUBLAS_STATUS_SUCCESS) { fprintf(stderr, "cublasGemmEx failed: %d\n", int(st)); exit(1); }
  };
  const float ms = median_ms(gemm);
  CUDA_CHECK(cudaFree(A));
  CUDA_CHECK(cudaFree(B));
  CUDA_CHECK(cudaFree(C));
  cublasDestroy(handle);
  return 2.0 * n * n * double(n) / (ms * 1e-3) / 1e12;
}
#endif

void benchmark() {
  const int B = 8, H = 12, T = 1024, D = 64;
  Shape s{B, H, T, T, D, true, 1.0f / std::sqrt(float(D)), 0.f, 1, 0};
  const size_t n = size_t(B) * H * T * D, rows = size_t(B) * H * T;
  std::mt19937 rng(1234);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<float> x(n);
  auto rand_dev = [&] {
    for (auto& e : x) e = normal(rng);
    return to_device<bf16>(x);
  };
  bf16 *q = rand_dev(), *k = rand_dev(), *v = rand_dev(), *dout = rand_dev();
  bf16 *o = device_alloc_poisoned<bf16>(n), *dq = device_alloc_poisoned<bf16>(n), *dk = device_alloc_poisoned<bf16>(n),
       *dv = device_alloc_poisoned<bf16>(n);
  float *lse = device_alloc_poisoned<float>(rows), *delta = device_alloc_poisoned<float>(rows),
        *dq_acc = device_alloc_poisoned<float>(n);

  const double fwd_flop = 4.0 * B * H * double(T) * T * D / 2, bwd_flop = 2.5 * fwd_flop;
  cudaDeviceProp prop;
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  printf("\nTiming on %s: B=%d H=%d T=%d D=%d causal bf16, median of 30 after 5 warmup runs\n", prop.name, B, H, T, D);
  printf("  FLOPs counted: forward 4*B*H*T*T*D/2 = %.3g, backward 2.5x = %.3g\n", fwd_flop, bwd_flop);
  double ceiling = 0;
#ifdef WITH_CUBLAS
  ceiling = cublas_bf16_tflops(8192);
  printf("  cuBLAS bf16 GEMM 8192^3 ceiling: %.1f TFLOP/s\n", ceiling);
#else
  printf("  (built without -DWITH_CUBLAS: no GEMM ceiling)\n");
#endif
  auto line = [&](const char* what, float ms, double flop) {
    const double tf = flop / (ms * 1e-3) / 1e12;
    if (ceiling > 0) printf("  %-36s %8.3f ms  %7.1f TFLOP/s  (%.0f%% of cuBLAS)\n", what, ms, tf, 100 * tf / ceiling);
    else printf("  %-36s %8.3f ms  %7.1f TFLOP/s\n", what, ms, tf);
  };
  const float f4 = median_ms([&] { flash_forward<4>(s, q, k, v, nullptr, o, lse); });
  line("flash forward (4 warps, Br=64)", f4, fwd_flop);
  const float f8 = median_ms([&] { flash_forward<8>(s, q, k, v, nullptr, o, lse); });
  line("flash forward (8 warps, Br=128)", f8, fwd_flop);
  flash_forward<4>(s, q, k, v, nullptr, o, lse);
  const float bw = median_ms([&] { flash_backward(s, q, k, v, nullptr, o, lse, dout, delta, dq_acc, dq, dk, dv); });
  line("flash backward (delta+main+dq)", bw, bwd_flop);
  line("flash forward + backward (best fwd)", std::min(f4, f8) + bw, fwd_flop + bwd_flop);
  const float sf = median_ms([&] { simple_forward(s, q, k, v, nullptr, o, lse); }, 1, 3);
  line("simple forward (1 thread/row, f32 math)", sf, fwd_flop);

  // The timed shape, checked: flash (bf16 tensor cores) against the simple kernels (float32 math)
  // on the same inputs. The simple outputs are the reference here (a CPU one would take minutes).
  simple_backward(s, q, k, v, nullptr, o, lse, dout, delta, dq, dk, dv);
  CUDA_CHECK(cudaDeviceSynchronize());
  auto as_double = [](const std::vector<float>& x) { return std::vector<double>(x.begin(), x.end()); };
  const std::vector<double> ro = as_double(to_host(o, n)), rl = as_double(to_host(lse, rows)),
                            rq = as_double(to_host(dq, n)), rk = as_double(to_host(dk, n)), rv = as_double(to_host(dv, n));
  flash_forward<4>(s, q, k, v, nullptr, o, lse);
  flash_backward(s, q, k, v, nullptr, o, lse, dout, delta, dq_acc, dq, dk, dv);
  CUDA_CHECK(cudaDeviceSynchronize());
  const Case big{"B8 H12 T1024 D64 causal (timed)", B, H, T, T, D, true, false, 0.f};
  report("flash vs simple bf16", big, "O", compare(to_host(o, n), ro), 2e-2);
  report("flash vs simple bf16", big, "lse", compare(to_host(lse, rows), rl), 2e-2);
  report("flash vs simple bf16", big, "dQ", compare(to_host(dq, n), rq), 2e-2);
  report("flash vs simple bf16", big, "dK", compare(to_host(dk, n), rk), 2e-2);
  report("flash vs simple bf16", big, "dV", compare(to_host(dv, n), rv), 2e-2);
  for (void* p : {(void*)q, (void*)k, (void*)v, (void*)dout, (void*)o, (void*)dq, (void*)dk, (void*)dv, (void*)lse,
                  (void*)delta, (void*)dq_acc})
    CUDA_CHECK(cudaFree(p));

  // float32 inputs: flash with float32 I/O (bf16 tiles).
  printf("  float32 inputs, same shape:\n");
  auto rand_dev32 = [&] {
    for (auto& e : x) e = normal(rng);
    return to_device<float>(x);
  };
  float *fq = rand_dev32(), *fk = rand_dev32(), *fv = rand_dev32(), *fdo = rand_dev32();
  float *fo = device_alloc_poisoned<float>(n), *fdq = device_alloc_poisoned<float>(n),
        *fdk = device_alloc_poisoned<float>(n), *fdv = device_alloc_poisoned<float>(n);
  float *flse = device_alloc_poisoned<float>(rows), *fdelta = device_alloc_poisoned<float>(rows),
        *facc = device_alloc_poisoned<float>(n);
  line("flash f32 I/O forward (bf16 tiles)", median_ms([&] { flash_forward<4>(s, fq, fk, fv, nullptr, fo, flse); }),
       fwd_flop);
  line("flash f32 I/O backward (bf16 tiles)",
       median_ms([&] { flash_backward(s, fq, fk, fv, nullptr, fo, flse, fdo, fdelta, facc, fdq, fdk, fdv); }), bwd_flop);
  for (float* p : {fq, fk, fv, fdo, fo, fdq, fdk, fdv, flse, fdelta, facc}) CUDA_CHECK(cudaFree(p));
}

// `attn reftest DIR` (no GPU needed): writes inputs, the dropout factors and the CPU reference's
// outputs of a few cases to DIR/case<n>.bin for dev/cuda/check_attention_reference.py, which checks
// them against PyTorch autograd in float64. Layout: int32 B, H, Tq, Tk, D, causal, padding; float32
// dropout; then float64 arrays q, k, v, dout, keep (if padding), M [B,H,Tq,Tk], o, lse, dq, dk, dv.
int reference_dump(const char* dir) {
  const Case cases[] = {
      {"causal", 2, 2, 9, 9, 8, true, false, 0.f},
      {"Tq<Tk causal padding", 2, 2, 5, 12, 8, true, true, 0.f},
      {"causal padding, empty rows", 2, 2, 10, 10, 8, true, true, 0.1f},
      {"non-causal padding dropout", 2, 1, 7, 7, 8, false, true, 0.3f},
      {"Tq<Tk causal dropout", 1, 2, 4, 10, 16, true, false, 0.2f},
      {"decode", 1, 1, 1, 11, 8, true, false, 0.f},
  };
  std::mt19937 rng(99);
  std::normal_distribution<float> normal(0.f, 1.f);
  int n = 0;
  for (const Case& c : cases) {
    Shape s{c.B, c.H, c.Tq, c.Tk, c.D, c.causal, 1.0f / std::sqrt(float(c.D)), c.dropout, rng(), uint64_t(rng())};
    const size_t nq = size_t(c.B) * c.H * c.Tq * c.D, nk = size_t(c.B) * c.H * c.Tk * c.D;
    std::vector<float> q(nq), k(nk), v(nk), dout(nq);
    for (auto* x : {&q, &k, &v, &dout})
      for (auto& e : *x) e = 1.5f * normal(rng);
    std::vector<int32_t> keep(size_t(c.B) * c.Tk, 1);
    for (int b = 0; b < c.B; ++b)
      for (int j = 0; j < c.Tk; ++j)
        if (c.padding && (j < 3 * b + 2 || j % 5 == 3)) keep[size_t(b) * c.Tk + j] = 0;
    std::vector<double> o, lse, dq, dk, dv;
    const int32_t* kp = c.padding ? keep.data() : nullptr;
    cpu_attention_forward(s, q, k, v, kp, o, lse);
    cpu_attention_backward(s, q, k, v, kp, o, lse, dout, dq, dk, dv);
    const std::string path = std::string(dir) + "/case" + std::to_string(n++) + ".bin";
    FILE* f = fopen(path.c_str(), "wb");
    if (!f) { fprintf(stderr, "cannot write %s\n", path.c_str()); return 1; }
    const int32_t hdr[7] = {c.B, c.H, c.Tq, c.Tk, c.D, c.causal, c.padding};
    fwrite(hdr, sizeof(hdr), 1, f);
    fwrite(&c.dropout, sizeof(float), 1, f);
    auto put = [&](const auto& x) {
      for (auto e : x) {
        const double d = double(e);
        fwrite(&d, sizeof(double), 1, f);
      }
    };
    put(q); put(k); put(v); put(dout);
    if (c.padding) put(keep);
    std::vector<double> m;
    for (int b = 0; b < c.B; ++b)
      for (int h = 0; h < c.H; ++h)
        for (int i = 0; i < c.Tq; ++i)
          for (int j = 0; j < c.Tk; ++j) m.push_back(drop_factor(s, b, h, i, j));
    put(m); put(o); put(lse); put(dq); put(dk); put(dv);
    fclose(f);
    printf("wrote %s (%s)\n", path.c_str(), c.name);
  }
  return 0;
}

int main(int argc, char** argv) {
  if (argc > 2 && std::strcmp(argv[1], "reftest") == 0) return reference_dump(argv[2]);
  // `attn bench`: timings only; `attn tests`: tests only (short enough for compute-sanitizer).
  const bool bench_only = argc > 1 && std::strcmp(argv[1], "bench") == 0;
  const bool tests_only = argc > 1 && std::strcmp(argv[1], "tests") == 0;
  if (!bench_only) {
    std::mt19937 rng(20261206);
    const Case cases[] = {
        {"B2 H3 T77 D64 causal", 2, 3, 77, 77, 64, true, false, 0.f},
        {"B1 H2 T129 D128 causal", 1, 2, 129, 129, 128, true, false, 0.f},
        {"B2 H2 T100 D64 non-causal", 2, 2, 100, 100, 64, false, false, 0.f},
        {"B2 H2 Tq1 Tk100 D64 decode", 2, 2, 1, 100, 64, true, false, 0.f},
        {"B1 H2 Tq1 Tk100 D128 decode", 1, 2, 1, 100, 128, true, false, 0.f},
        {"B2 H2 Tq50 Tk130 D64 causal", 2, 2, 50, 130, 64, true, false, 0.f},
        {"B3 H2 T77 D64 causal padding", 3, 2, 77, 77, 64, true, true, 0.f},
        {"B2 H2 T70 D128 non-causal padding", 2, 2, 70, 70, 128, false, true, 0.f},
        {"B2 H3 T77 D64 causal dropout0.1", 2, 3, 77, 77, 64, true, false, 0.1f},
        {"B2 H1 T129 D128 causal pad drop0.1", 2, 1, 129, 129, 128, true, true, 0.1f},
        {"B1 H2 T256 D64 causal", 1, 2, 256, 256, 64, true, false, 0.f},
        {"B1 H1 T50 D32 causal (simple only)", 1, 1, 50, 50, 32, true, false, 0.f},
    };
    printf("Correctness against the float64 CPU reference (max |err| / max |ref|):\n");
    for (const Case& c : cases) {
      check_case<bf16>(c, rng);
      check_case<float>(c, rng);
    }
  }
  if (!tests_only) benchmark();
  printf("\n");
  for (const std::string& f : g_failures) printf("%s\n", f.c_str());
  printf("%s: %d failed checks\n", g_failures.empty() ? "ALL PASS" : "FAIL", int(g_failures.size()));
  return g_failures.empty() ? 0 : 1;
}

#endif  // ATTN_EMULATE
