// Fused LoRA kernels (forward, backward, merge), developed llm.c dev/cuda style: one standalone
// file with float64 CPU references, the GPU versions, a correctness sweep and timings.
//
// Build on the device (cuBLAS for the frozen GEMM):
//   nvcc -O3 -std=c++17 -arch=sm_90a -DWITH_CUBLAS dev/cuda/lora.cu -lcublas -lcublasLt -o /tmp/lora
// Build without cuBLAS (the frozen GEMM is then a naive kernel, for correctness only; the timing
// table then has no base GEMM and no ratios):
//   nvcc -O3 -std=c++17 -arch=sm_90a dev/cuda/lora.cu -o /tmp/lora
// Run: /tmp/lora [check|bench|all]   (default all: the correctness sweep, then the timings)
// Everything on the device machine, with the PEFT peer: dev/cuda/run-lora.sh. Without a GPU,
// dev/cuda/emu/run-emu.sh runs the correctness sweep on a CPU emulation of the kernels.
//
// Notation, row-major everywhere:
//   x [N, k]   W [d, k] (Linear) or [k, d] (Conv1D, fan_in_fan_out)   A [r, k]   B [d, r]
//   s = alpha / r, p = dropout probability, one (A, B, s, p, seed) per adapter, adapters summed.
//   forward   u = drop(x)·Aᵀ [N, r] (saved)              y  = x·Wᵀ + Σ s·u·Bᵀ        (Conv1D: x·W)
//   backward  v = gy·B [N, r]                            gx = gy·W + Σ s·drop(v·A)   (Conv1D: gy·Wᵀ)
//             gA = s·vᵀ·drop(x) [r, k]                   gB = s·gyᵀ·u [d, r]
//   merge     W += s·B·A (Conv1D: W += s·(B·A)ᵀ); unmerge is the merge with -s.
// x, W, y, gy, gx are T (float or bf16); A, B, u, v, gA, gB are float32 (PEFT keeps adapter
// weights in float32 on a bf16 model by default). Vectorized paths need 16-byte aligned buffers
// (cudaMalloc's) and the row length a multiple of 8; other shapes take a scalar path.
//
// Where s·u·Bᵀ goes: the forward kernel writes y = s·u·Bᵀ for its rows right after forming u
// (u never leaves the chip between the two halves), and the frozen GEMM then runs with beta = 1,
// y = x·Wᵀ + y. cuBLAS has no rank-r epilogue; adding s·u·Bᵀ after the GEMM would cost a read and
// a write of y, while beta = 1 costs only the read of y inside a compute-bound GEMM, where memory
// is mostly idle. The backward does the same for gx. Both orders are timed in the breakdown.
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#ifdef WITH_CUBLAS
#include <cublas_v2.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "../../native/core/philox.h"

using bf16 = __nv_bfloat16;
using lowrank::Philox4;

// ----------------------------------------------------------------------------------------------
// Error checks. In the correctness sweep every launch is also synchronized, so a fault names its
// kernel; the timings only check the launch.

static bool g_sync_each_launch = false;

#define CUDA_CHECK(call)                                                                              \
  do {                                                                                                \
    cudaError_t err_ = (call);                                                                        \
    if (err_ != cudaSuccess) {                                                                        \
      fprintf(stderr, "CUDA error in %s (%s:%d): %s\n", #call, __FILE__, __LINE__, cudaGetErrorString(err_)); \
      exit(2);                                                                                        \
    }                                                                                                 \
  } while (0)

#define KERNEL_CHECK(name)                                                                           \
  do {                                                                                               \
    cudaError_t err_ = cudaGetLastError();                                                           \
    if (err_ == cudaSuccess && g_sync_each_launch) err_ = cudaDeviceSynchronize();                   \
    if (err_ != cudaSuccess) {                                                                       \
      fprintf(stderr, "CUDA error in %s (%s:%d): %s\n", name, __FILE__, __LINE__, cudaGetErrorString(err_)); \
      exit(2);                                                                                       \
    }                                                                                                \
  } while (0)

#ifdef WITH_CUBLAS
#define BLAS_CHECK(call)                                                                       \
  do {                                                                                         \
    cublasStatus_t st_ = (call);                                                               \
    if (st_ != CUBLAS_STATUS_SUCCESS) {                                                        \
      fprintf(stderr, "cuBLAS error in %s (%s:%d): status %d\n", #call, __FILE__, __LINE__, (int)st_); \
      exit(2);                                                                                 \
    }                                                                                          \
  } while (0)
static cublasHandle_t g_blas;
#endif

static int g_num_sms = 132;

// ----------------------------------------------------------------------------------------------
// Element access: T <-> float, and 8 (or 4) consecutive elements of a row at once.

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(bf16 v) { return __bfloat162float(v); }
template <typename T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ bf16 from_float<bf16>(float v) { return __float2bfloat16_rn(v); }

// v[e] = row[c + e] for e < 8, 0 past len. vec: len % 8 == 0 and c % 8 == 0 (so c < len means all
// 8 are in the row), row 16-byte aligned: one 16-byte load for bf16, two for float.
__device__ __forceinline__ void load8(const float* row, int c, int len, bool vec, float v[8]) {
  if (vec) {
    if (c < len) {
      const float4 a = *reinterpret_cast<const float4*>(row + c), b = *reinterpret_cast<const float4*>(row + c + 4);
      v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w; v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e) v[e] = 0.f;
    }
  } else {
#pragma unroll
    for (int e = 0; e < 8; ++e) v[e] = c + e < len ? row[c + e] : 0.f;
  }
}

__device__ __forceinline__ void load8(const bf16* row, int c, int len, bool vec, float v[8]) {
  if (vec) {
    if (c < len) {
      const uint4 raw = *reinterpret_cast<const uint4*>(row + c);
      const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const float2 f = __bfloat1622float2(h[q]);
        v[2 * q] = f.x;
        v[2 * q + 1] = f.y;
      }
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e) v[e] = 0.f;
    }
  } else {
#pragma unroll
    for (int e = 0; e < 8; ++e) v[e] = c + e < len ? __bfloat162float(row[c + e]) : 0.f;
  }
}

// row[c + e] = v[e] for e < 8 and c + e < len; vec as in load8.
__device__ __forceinline__ void store8(float* row, int c, int len, bool vec, const float v[8]) {
  if (vec) {
    if (c < len) {
      *reinterpret_cast<float4*>(row + c) = make_float4(v[0], v[1], v[2], v[3]);
      *reinterpret_cast<float4*>(row + c + 4) = make_float4(v[4], v[5], v[6], v[7]);
    }
  } else {
#pragma unroll
    for (int e = 0; e < 8; ++e)
      if (c + e < len) row[c + e] = v[e];
  }
}

__device__ __forceinline__ void store8(bf16* row, int c, int len, bool vec, const float v[8]) {
  if (vec) {
    if (c < len) {
      uint4 raw;
      __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&raw);
#pragma unroll
      for (int q = 0; q < 4; ++q) h[q] = __floats2bfloat162_rn(v[2 * q], v[2 * q + 1]);
      *reinterpret_cast<uint4*>(row + c) = raw;
    }
  } else {
#pragma unroll
    for (int e = 0; e < 8; ++e)
      if (c + e < len) row[c + e] = __float2bfloat16_rn(v[e]);
  }
}

// v[e] = row[c + e] for e < 4, 0 past len. vec: len % 4 == 0 and c % 4 == 0 (16 bytes for float,
// 8 for bf16).
__device__ __forceinline__ void load4(const float* row, int c, int len, bool vec, float v[4]) {
  if (vec) {
    const float4 a = *reinterpret_cast<const float4*>(row + c);
    v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
  } else {
#pragma unroll
    for (int e = 0; e < 4; ++e) v[e] = c + e < len ? row[c + e] : 0.f;
  }
}

__device__ __forceinline__ void load4(const bf16* row, int c, int len, bool vec, float v[4]) {
  if (vec) {
    const uint2 raw = *reinterpret_cast<const uint2*>(row + c);
    const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&raw);
    const float2 f0 = __bfloat1622float2(h[0]), f1 = __bfloat1622float2(h[1]);
    v[0] = f0.x; v[1] = f0.y; v[2] = f1.x; v[3] = f1.y;
  } else {
#pragma unroll
    for (int e = 0; e < 4; ++e) v[e] = c + e < len ? __bfloat162float(row[c + e]) : 0.f;
  }
}

// ----------------------------------------------------------------------------------------------
// LoRA dropout from Philox, by element index: no mask tensor, the same mask in forward and
// backward for the same (seed, offset). Element i of the N x k input x (i = n·k + c) is kept when
// the 24-bit uniform in word i % 4 of Philox block (offset + i / 4) is >= p; kept values are
// scaled by 1/(1-p). Four elements share one Philox4x32-10 block (native/'s generic dropout spends
// one block per element): in these kernels dropout's cost is that integer arithmetic.

__host__ __device__ inline uint32_t philox_word(const Philox4& b, uint64_t w) {
  return w == 0 ? b.v[0] : w == 1 ? b.v[1] : w == 2 ? b.v[2] : b.v[3];
}

__host__ __device__ inline bool lora_keep(uint64_t seed, uint64_t offset, uint64_t i, float p) {
  return lowrank::philox_unit(philox_word(lowrank::philox_block(seed, offset, i >> 2), i & 3)) >= p;
}

// m[e] = multiplier (0 or scale = 1/(1-p)) of element i0 + e, for the elements c + e < len of a
// row. vec: i0 % 4 == 0 and c + 8 <= len, so the 8 elements are the words of two whole blocks.
__device__ __forceinline__ void dropout8(uint64_t seed, uint64_t offset, uint64_t i0, int c, int len, float p,
                                         float scale, bool vec, float m[8]) {
  if (vec) {
    const Philox4 b0 = lowrank::philox_block(seed, offset, i0 >> 2);
    const Philox4 b1 = lowrank::philox_block(seed, offset, (i0 >> 2) + 1);
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      m[e] = lowrank::philox_unit(b0.v[e]) >= p ? scale : 0.f;
      m[e + 4] = lowrank::philox_unit(b1.v[e]) >= p ? scale : 0.f;
    }
  } else {
#pragma unroll
    for (int e = 0; e < 8; ++e) m[e] = c + e < len && lora_keep(seed, offset, i0 + e, p) ? scale : 0.f;
  }
}

// As dropout8 for 4 elements; vec: i0 % 4 == 0 and c + 4 <= len (one block).
__device__ __forceinline__ void dropout4(uint64_t seed, uint64_t offset, uint64_t i0, int c, int len, float p,
                                         float scale, bool vec, float m[4]) {
  if (vec) {
    const Philox4 b = lowrank::philox_block(seed, offset, i0 >> 2);
#pragma unroll
    for (int e = 0; e < 4; ++e) m[e] = lowrank::philox_unit(b.v[e]) >= p ? scale : 0.f;
  } else {
#pragma unroll
    for (int e = 0; e < 4; ++e) m[e] = c + e < len && lora_keep(seed, offset, i0 + e, p) ? scale : 0.f;
  }
}

// ----------------------------------------------------------------------------------------------
// Shared-memory staging of a small float32 operand tile:
//   dst[x·LD + pos(y)] = src[(i0 + x)·s0 + (i1 + y)·s1]   for x < D0, y < D1; 0 where i0 + x >= n0
//   or i1 + y >= n1.
// Consecutive threads walk whichever index has unit stride in src, so the global reads coalesce
// (A [r, k] is read along k, B [d, r] along r).
// SPLIT8 (D1 = 256 = 32 lanes x 8): lane t's 8 columns 8t .. 8t+7 go to positions 4t .. 4t+3 and
// 128 + 4t .. 128 + 4t+3, so the two float4 reads of a row by a warp are each 512 contiguous
// bytes (no bank conflicts; 8 contiguous floats a lane would put lanes t and t+4 on one bank).
constexpr int kThreads = 256, kWarps = kThreads / 32;

template <int D1, bool SPLIT8> __device__ __forceinline__ int split_pos(int y) {
  static_assert(!SPLIT8 || D1 == 256, "SPLIT8 is for 32 lanes x 8 columns");
  return SPLIT8 ? ((y & 7) >> 2) * (D1 / 2) + (y >> 3) * 4 + (y & 3) : y;
}

template <int D0, int D1, int LD, bool SPLIT8>
__device__ __forceinline__ void stage_tile(float* dst, const float* __restrict__ src, int64_t s0, int64_t s1, int i0,
                                           int n0, int i1, int n1) {
  static_assert(D0 * D1 % kThreads == 0, "whole tile per pass");
  // A compile-time trip count unrolled by 8: 8 loads in flight per thread (all of them would cost
  // registers: spills in the merge kernel).
  if (s1 == 1) {
#pragma unroll 8
    for (int it = 0; it < D0 * D1 / kThreads; ++it) {
      const int idx = it * kThreads + threadIdx.x, x = idx / D1, y = idx % D1;
      dst[x * LD + split_pos<D1, SPLIT8>(y)] = i0 + x < n0 && i1 + y < n1 ? src[(int64_t)(i0 + x) * s0 + (i1 + y)] : 0.f;
    }
  } else {
#pragma unroll 8
    for (int it = 0; it < D0 * D1 / kThreads; ++it) {
      const int idx = it * kThreads + threadIdx.x, x = idx % D0, y = idx / D0;
      dst[x * LD + split_pos<D1, SPLIT8>(y)] =
          i0 + x < n0 && i1 + y < n1 ? src[(int64_t)(i0 + x) * s0 + (int64_t)(i1 + y) * s1] : 0.f;
    }
  }
}

// ----------------------------------------------------------------------------------------------
// Kernel 1+2: the two LoRA halves of one pass, fused. Forward and backward have the same shape:
//   mid[n, j] = Σ_c drop_in(in)[n, c] · D(j, c)                         [N, r] float32, saved
//   out[n, o] = (accumulate ? out[n, o] : 0) + s · drop_out(Σ_j mid[n, j] · U(o, j))
// forward:  in = x [N, k],  D(j, c) = A[j·k + c], drop_in = dropout;   mid = u;
//           out = y [N, d], U(o, j) = B[o·r + j].
// backward: in = gy [N, d], D(j, o) = B[o·r + j];                      mid = v;
//           out = gx [N, k], U(c, j) = A[j·k + c], drop_out = dropout (index n·k + c, as forward).
// Reads `in` once and writes `out` once; mid goes through shared memory between the halves.
//
// Block: 8 warps, each owning ROWS rows (BM = 8·ROWS rows a block). Down half: lanes split a
// 256-column chunk of the row (8 columns each, 16-byte loads), each lane keeps ROWS x RS partial
// dot products (RS columns of mid at a time, r > RS loops), the slice D[j0:j0+RS, chunk] sits in
// shared memory, and a butterfly over the warp finishes the sums. Up half: lanes own 8 output
// columns of a 256-column chunk, mid rows come from shared memory (broadcast), U slices from
// shared memory.
struct DownUpArgs {
  const void* in;    // [N, k_in], T
  int k_in;
  const float* down; // D(j, c) = down[j·down_sj + c·down_sc]
  int64_t down_sj, down_sc;
  float p_in;        // dropout on in (element n·k_in + c); 0 = none
  float* mid;        // [N, r]
  int r;
  void* out;         // [N, k_out], T
  int k_out;
  const float* up;   // U(o, j) = up[o·up_so + j·up_sj]
  int64_t up_so, up_sj;
  float p_out;       // dropout on the LoRA term of out (element n·k_out + o); 0 = none
  float s;
  bool accumulate;
  int N;
  uint64_t seed, offset;
};

constexpr int kChunk = 32 * 8;       // columns a warp covers per step: 32 lanes x 8
constexpr int kChunkLd = kChunk + 4; // padded row of the staged slice (keeps 16-byte alignment)

template <int RS> struct DownUpShape {
  static constexpr int ROWS = RS == 32 ? 2 : 4;    // rows per warp (registers: ROWS·RS accumulators)
  static constexpr int BM = kWarps * ROWS;         // rows per block
  static constexpr int MAXR = RS == 32 ? 128 : RS; // largest r this instantiation serves
};

template <typename T, int RS>
__global__ void __launch_bounds__(kThreads) lora_down_up_kernel(const DownUpArgs a) {
  using S = DownUpShape<RS>;
  constexpr int ROWS = S::ROWS, BM = S::BM, MAXR = S::MAXR;
  __shared__ __align__(16) float w_s[RS * kChunkLd]; // w_s[jj][pos(cc)]: a slice of D (down) or U (up), SPLIT8
  __shared__ float mid_s[BM * MAXR];                 // mid_s[row in block][j]

  const T* in = static_cast<const T*>(a.in);
  T* out = static_cast<T*>(a.out);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int wrow = warp * ROWS;                      // this warp's first row within the block
  const int row0 = blockIdx.x * BM + wrow;           // ... and in the matrix
  const bool vec_in = a.k_in % 8 == 0, vec_out = a.k_out % 8 == 0;
  const float scale_in = a.p_in > 0.f ? 1.f / (1.f - a.p_in) : 1.f;
  const float scale_out = a.p_out > 0.f ? 1.f / (1.f - a.p_out) : 1.f;

  // Down half: mid = drop(in)·Dᵀ, columns j0 .. j0+RS of mid per pass over the rows.
  for (int j0 = 0; j0 < a.r; j0 += RS) {
    float acc[ROWS][RS];
#pragma unroll
    for (int q = 0; q < ROWS; ++q)
#pragma unroll
      for (int jj = 0; jj < RS; ++jj) acc[q][jj] = 0.f;

    for (int c0 = 0; c0 < a.k_in; c0 += kChunk) {
      const int c = c0 + lane * 8;
      __syncthreads(); // everyone is done with the previous slice in w_s
      // Issue this chunk's row loads before staging, so they are in flight during it.
      float xv[ROWS][8];
#pragma unroll
      for (int q = 0; q < ROWS; ++q) {
        const int n = row0 + q;
        if (n < a.N) {
          load8(in + (size_t)n * a.k_in, c, a.k_in, vec_in, xv[q]);
        } else {
#pragma unroll
          for (int e = 0; e < 8; ++e) xv[q][e] = 0.f;
        }
      }
      stage_tile<RS, kChunk, kChunkLd, true>(w_s, a.down, a.down_sj, a.down_sc, j0, a.r, c0, a.k_in);
      __syncthreads();
      if (a.p_in > 0.f && c < a.k_in) {
#pragma unroll
        for (int q = 0; q < ROWS; ++q) {
          const int n = row0 + q;
          if (n < a.N) {
            float m[8];
            dropout8(a.seed, a.offset, (uint64_t)n * a.k_in + c, c, a.k_in, a.p_in, scale_in, vec_in, m);
#pragma unroll
            for (int e = 0; e < 8; ++e) xv[q][e] *= m[e];
          }
        }
      }
#pragma unroll
      for (int jj = 0; jj < RS; ++jj) {
        const float4 w0 = *reinterpret_cast<const float4*>(&w_s[jj * kChunkLd + lane * 4]);
        const float4 w1 = *reinterpret_cast<const float4*>(&w_s[jj * kChunkLd + kChunk / 2 + lane * 4]);
#pragma unroll
        for (int q = 0; q < ROWS; ++q) {
          float t = acc[q][jj];
          t = fmaf(xv[q][0], w0.x, t); t = fmaf(xv[q][1], w0.y, t);
          t = fmaf(xv[q][2], w0.z, t); t = fmaf(xv[q][3], w0.w, t);
          t = fmaf(xv[q][4], w1.x, t); t = fmaf(xv[q][5], w1.y, t);
          t = fmaf(xv[q][6], w1.z, t); t = fmaf(xv[q][7], w1.w, t);
          acc[q][jj] = t;
        }
      }
    }

    // Finish the dot products across the warp's lanes; lane jj stores column j0 + jj.
#pragma unroll
    for (int q = 0; q < ROWS; ++q) {
      const int n = row0 + q;
#pragma unroll
      for (int jj = 0; jj < RS; ++jj) {
        float t = acc[q][jj];
#pragma unroll
        for (int off = 16; off > 0; off /= 2) t += __shfl_xor_sync(0xffffffffu, t, off);
        if (lane == jj && n < a.N && j0 + jj < a.r) {
          a.mid[(size_t)n * a.r + j0 + jj] = t;
          mid_s[(wrow + q) * MAXR + j0 + jj] = t;
        }
      }
    }
  }

  // Up half: out = (out) + s·drop(mid·Uᵀ), one 256-column chunk of the rows at a time. The
  // barriers in the loop also order the mid_s writes above before the reads below.
  for (int o0 = 0; o0 < a.k_out; o0 += kChunk) {
    const int o = o0 + lane * 8;
    float acc[ROWS][8];
#pragma unroll
    for (int q = 0; q < ROWS; ++q)
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[q][e] = 0.f;

    for (int j0 = 0; j0 < a.r; j0 += RS) {
      __syncthreads();
      stage_tile<RS, kChunk, kChunkLd, true>(w_s, a.up, a.up_sj, a.up_so, j0, a.r, o0, a.k_out); // w_s[jj][oo] = U(o0+oo, j0+jj)
      __syncthreads();
      const int jn = min(RS, a.r - j0);
      for (int jj = 0; jj < jn; ++jj) {
        const float4 w0 = *reinterpret_cast<const float4*>(&w_s[jj * kChunkLd + lane * 4]);
        const float4 w1 = *reinterpret_cast<const float4*>(&w_s[jj * kChunkLd + kChunk / 2 + lane * 4]);
#pragma unroll
        for (int q = 0; q < ROWS; ++q) {
          const float mv = mid_s[(wrow + q) * MAXR + j0 + jj];
          acc[q][0] = fmaf(mv, w0.x, acc[q][0]); acc[q][1] = fmaf(mv, w0.y, acc[q][1]);
          acc[q][2] = fmaf(mv, w0.z, acc[q][2]); acc[q][3] = fmaf(mv, w0.w, acc[q][3]);
          acc[q][4] = fmaf(mv, w1.x, acc[q][4]); acc[q][5] = fmaf(mv, w1.y, acc[q][5]);
          acc[q][6] = fmaf(mv, w1.z, acc[q][6]); acc[q][7] = fmaf(mv, w1.w, acc[q][7]);
        }
      }
    }

    if (o < a.k_out) {
#pragma unroll
      for (int q = 0; q < ROWS; ++q) {
        const int n = row0 + q;
        if (n >= a.N) continue;
        T* orow = out + (size_t)n * a.k_out;
        float v[8];
#pragma unroll
        for (int e = 0; e < 8; ++e) v[e] = a.s * acc[q][e];
        if (a.p_out > 0.f) {
          float m[8];
          dropout8(a.seed, a.offset, (uint64_t)n * a.k_out + o, o, a.k_out, a.p_out, scale_out, vec_out, m);
#pragma unroll
          for (int e = 0; e < 8; ++e) v[e] *= m[e];
        }
        if (a.accumulate) {
          float old[8];
          load8(orow, o, a.k_out, vec_out, old);
#pragma unroll
          for (int e = 0; e < 8; ++e) v[e] += old[e];
        }
        store8(orow, o, a.k_out, vec_out, v);
      }
    }
  }
}

template <typename T, int RS> void launch_down_up_rs(const DownUpArgs& a) {
  const int blocks = (a.N + DownUpShape<RS>::BM - 1) / DownUpShape<RS>::BM;
  lora_down_up_kernel<T, RS><<<blocks, kThreads>>>(a);
  KERNEL_CHECK("lora_down_up_kernel");
}

template <typename T> void launch_down_up(const DownUpArgs& a) {
  if (a.r < 1 || a.r > 128) {
    fprintf(stderr, "lora_down_up: r = %d, supported 1..128\n", a.r);
    exit(2);
  }
  if (a.N == 0) return;
  if (a.r <= 8) launch_down_up_rs<T, 8>(a);
  else if (a.r <= 16) launch_down_up_rs<T, 16>(a);
  else launch_down_up_rs<T, 32>(a);
}

// One adapter on the device: A [r, k], B [d, r] and its saved / gradient buffers.
struct DevAdapter {
  int r;
  float s, p;
  uint64_t seed, offset;
  float *A, *B;   // [r, k], [d, r]
  float *u, *v;   // [N, r] each
  float *gA, *gB; // [r, k], [d, r]
};

// Forward LoRA half of one adapter: u = drop(x)·Aᵀ, y (+)= s·u·Bᵀ. x [N, k], y [N, d].
template <typename T> void lora_forward(const DevAdapter& ad, const T* x, T* y, int N, int k, int d, bool accumulate) {
  DownUpArgs a{};
  a.in = x; a.k_in = k; a.down = ad.A; a.down_sj = k; a.down_sc = 1; a.p_in = ad.p;
  a.mid = ad.u; a.r = ad.r;
  a.out = y; a.k_out = d; a.up = ad.B; a.up_so = ad.r; a.up_sj = 1; a.p_out = 0.f;
  a.s = ad.s; a.accumulate = accumulate; a.N = N; a.seed = ad.seed; a.offset = ad.offset;
  launch_down_up<T>(a);
}

// Backward LoRA half of one adapter for gx: v = gy·B, gx (+)= s·drop(v·A). gy [N, d], gx [N, k].
template <typename T> void lora_backward_gx(const DevAdapter& ad, const T* gy, T* gx, int N, int k, int d, bool accumulate) {
  DownUpArgs a{};
  a.in = gy; a.k_in = d; a.down = ad.B; a.down_sj = 1; a.down_sc = ad.r; a.p_in = 0.f;
  a.mid = ad.v; a.r = ad.r;
  a.out = gx; a.k_out = k; a.up = ad.A; a.up_so = 1; a.up_sj = k; a.p_out = ad.p;
  a.s = ad.s; a.accumulate = accumulate; a.N = N; a.seed = ad.seed; a.offset = ad.offset;
  launch_down_up<T>(a);
}

// ----------------------------------------------------------------------------------------------
// Kernel 3: thin weight gradients, a reduction over N in two steps.
//   part[split][j][c] = s · Σ_{n in split} P[n, j] · drop(Q)[n, c]      j < r, c < K
//   out[j·out_sj + c·out_sc] = Σ_split part[split][j][c]
// gA [r, k]: P = v, Q = x with the forward's dropout, out_sj = k, out_sc = 1.
// gB [d, r]: P = u, Q = gy, K = d, out_sj = 1, out_sc = r (gB = (s·uᵀ·gy)ᵀ).
// Partial block: 8 warps x 32 lanes x 4 columns = 1024 columns of one split of rows; RS columns
// of P at a time (one pass for r <= RS). P's row is the same address across the block (broadcast
// loads through L1).
constexpr int kWgradCols = kThreads * 4;

template <typename T, int RS>
__global__ void __launch_bounds__(kThreads) lora_wgrad_partial_kernel(const float* __restrict__ P, int r, const T* __restrict__ Q,
                                                                      int K, int N, int rows_per_split, float p,
                                                                      uint64_t seed, uint64_t offset, float s,
                                                                      float* __restrict__ part) {
  const int c = blockIdx.x * kWgradCols + threadIdx.x * 4;
  if (c >= K) return; // no barriers in this kernel
  const int n_begin = blockIdx.y * rows_per_split, n_end = min(N, n_begin + rows_per_split);
  const bool vec = K % 4 == 0;
  const float scale = p > 0.f ? 1.f / (1.f - p) : 1.f;
  for (int j0 = 0; j0 < r; j0 += RS) {
    float acc[RS][4];
#pragma unroll
    for (int jj = 0; jj < RS; ++jj)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[jj][e] = 0.f;
#pragma unroll 4
    for (int n = n_begin; n < n_end; ++n) {
      float qv[4];
      load4(Q + (size_t)n * K, c, K, vec, qv);
      if (p > 0.f) {
        float m[4];
        dropout4(seed, offset, (uint64_t)n * K + c, c, K, p, scale, vec, m);
#pragma unroll
        for (int e = 0; e < 4; ++e) qv[e] *= m[e];
      }
      const float* prow = P + (size_t)n * r;
#pragma unroll
      for (int jj = 0; jj < RS; ++jj) {
        const float pv = j0 + jj < r ? __ldg(prow + j0 + jj) : 0.f;
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[jj][e] = fmaf(pv, qv[e], acc[jj][e]);
      }
    }
#pragma unroll
    for (int jj = 0; jj < RS; ++jj) {
      if (j0 + jj >= r) break;
      float* dst = part + ((size_t)blockIdx.y * r + j0 + jj) * K + c;
#pragma unroll
      for (int e = 0; e < 4; ++e)
        if (c + e < K) dst[e] = s * acc[jj][e];
    }
  }
}

__global__ void lora_wgrad_reduce_kernel(const float* __restrict__ part, int splits, int r, int K, float* __restrict__ out,
                                         int64_t out_sj, int64_t out_sc) {
  const int64_t total = (int64_t)r * K;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    float acc = 0.f;
    for (int sp = 0; sp < splits; ++sp) acc += part[(size_t)sp * total + i];
    const int64_t j = i / K, c = i % K;
    out[j * out_sj + c * out_sc] = acc;
  }
}

struct WgradPlan {
  int splits, rows_per_split;
};

// About two partial blocks per multiprocessor; every split gets at least one row.
inline WgradPlan wgrad_plan(int N, int K) {
  const int col_blocks = (K + kWgradCols - 1) / kWgradCols;
  int splits = std::max(1, std::min(N, (2 * g_num_sms + col_blocks - 1) / col_blocks));
  const int rows = (N + splits - 1) / splits;
  splits = (N + rows - 1) / rows;
  return {splits, rows};
}

// Floats of partial-sum workspace lora_wgrad needs.
inline size_t wgrad_workspace(int N, int K, int r) { return (size_t)wgrad_plan(N, K).splits * r * K; }

template <typename T>
void lora_wgrad(const float* P, int r, const T* Q, int K, int N, float p, uint64_t seed, uint64_t offset, float s,
                float* out, int64_t out_sj, int64_t out_sc, float* workspace) {
  if (N == 0) {
    fprintf(stderr, "lora_wgrad: N = 0 is not handled here\n");
    exit(2);
  }
  const WgradPlan plan = wgrad_plan(N, K);
  const dim3 grid((K + kWgradCols - 1) / kWgradCols, plan.splits);
  if (r <= 8) lora_wgrad_partial_kernel<T, 8><<<grid, kThreads>>>(P, r, Q, K, N, plan.rows_per_split, p, seed, offset, s, workspace);
  else if (r <= 16) lora_wgrad_partial_kernel<T, 16><<<grid, kThreads>>>(P, r, Q, K, N, plan.rows_per_split, p, seed, offset, s, workspace);
  else lora_wgrad_partial_kernel<T, 32><<<grid, kThreads>>>(P, r, Q, K, N, plan.rows_per_split, p, seed, offset, s, workspace);
  KERNEL_CHECK("lora_wgrad_partial_kernel");
  const int64_t total = (int64_t)r * K;
  const int blocks = (int)std::min<int64_t>((total + 255) / 256, 8 * g_num_sms);
  lora_wgrad_reduce_kernel<<<blocks, 256>>>(workspace, plan.splits, r, K, out, out_sj, out_sc);
  KERNEL_CHECK("lora_wgrad_reduce_kernel");
}

// gA = s·vᵀ·drop(x) and gB = s·gyᵀ·u of one adapter. x [N, k], gy [N, d].
template <typename T> void lora_backward_weights(const DevAdapter& ad, const T* x, const T* gy, int N, int k, int d, float* workspace) {
  lora_wgrad<T>(ad.v, ad.r, x, k, N, ad.p, ad.seed, ad.offset, ad.s, ad.gA, k, 1, workspace);
  lora_wgrad<T>(ad.u, ad.r, gy, d, N, 0.f, 0, 0, ad.s, ad.gB, 1, ad.r, workspace);
}

// ----------------------------------------------------------------------------------------------
// Kernel 4: merge W += s·L·R in place, W [rows, cols] as stored; unmerge is s -> -s.
//   Linear (W [d, k]):  rows = d, cols = k, L(o, j) = B[o·r + j], R(j, i) = A[j·k + i]
//   Conv1D (W [k, d]):  rows = k, cols = d, L(i, j) = A[j·k + i], R(j, o) = B[o·r + j]
// One read and one write of W (16-byte accesses); L and R tiles in shared memory. Block: 32 rows
// x 256 columns; thread: 4 rows x 8 columns; j in slices of 32.
constexpr int kMergeRows = 32, kMergeCols = 256, kMergeJ = 32;

template <typename T>
__global__ void __launch_bounds__(kThreads) lora_merge_kernel(T* W, int rows, int cols, const float* __restrict__ L, int64_t l_sa,
                                                              int64_t l_sj, const float* __restrict__ R, int64_t r_sj,
                                                              int64_t r_sb, int r, float s) {
  __shared__ float l_s[kMergeRows * (kMergeJ + 1)];                // l_s[aa][jj] = L(a_blk + aa, j0 + jj)
  __shared__ __align__(16) float r_s[kMergeJ * (kMergeCols + 4)]; // r_s[jj][pos(bb)] = R(j0 + jj, b_blk + bb), SPLIT8
  const int tx = threadIdx.x % 32, ty = threadIdx.x / 32;
  const int a_blk = blockIdx.y * kMergeRows, b_blk = blockIdx.x * kMergeCols;
  const int a0 = a_blk + ty * 4, b = b_blk + tx * 8;
  const bool vec = cols % 8 == 0;

  // W first: its loads are in flight while L and R are staged and the update is computed.
  float w[4][8];
#pragma unroll
  for (int q = 0; q < 4; ++q) {
    if (a0 + q < rows) {
      load8(W + (size_t)(a0 + q) * cols, b, cols, vec, w[q]);
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e) w[q][e] = 0.f;
    }
  }
  float acc[4][8];
#pragma unroll
  for (int q = 0; q < 4; ++q)
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[q][e] = 0.f;

  for (int j0 = 0; j0 < r; j0 += kMergeJ) {
    __syncthreads();
    stage_tile<kMergeRows, kMergeJ, kMergeJ + 1, false>(l_s, L, l_sa, l_sj, a_blk, rows, j0, r);
    stage_tile<kMergeJ, kMergeCols, kMergeCols + 4, true>(r_s, R, r_sj, r_sb, j0, r, b_blk, cols);
    __syncthreads();
    const int jn = min(kMergeJ, r - j0);
    for (int jj = 0; jj < jn; ++jj) {
      const float4 r0 = *reinterpret_cast<const float4*>(&r_s[jj * (kMergeCols + 4) + tx * 4]);
      const float4 r1 = *reinterpret_cast<const float4*>(&r_s[jj * (kMergeCols + 4) + kMergeCols / 2 + tx * 4]);
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const float l = l_s[(ty * 4 + q) * (kMergeJ + 1) + jj];
        acc[q][0] = fmaf(l, r0.x, acc[q][0]); acc[q][1] = fmaf(l, r0.y, acc[q][1]);
        acc[q][2] = fmaf(l, r0.z, acc[q][2]); acc[q][3] = fmaf(l, r0.w, acc[q][3]);
        acc[q][4] = fmaf(l, r1.x, acc[q][4]); acc[q][5] = fmaf(l, r1.y, acc[q][5]);
        acc[q][6] = fmaf(l, r1.z, acc[q][6]); acc[q][7] = fmaf(l, r1.w, acc[q][7]);
      }
    }
  }

  if (b < cols) {
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      if (a0 + q >= rows) continue;
      float v[8];
#pragma unroll
      for (int e = 0; e < 8; ++e) v[e] = fmaf(s, acc[q][e], w[q][e]);
      store8(W + (size_t)(a0 + q) * cols, b, cols, vec, v);
    }
  }
}

// W += sign·s·B·A for one adapter, Linear (W [d, k]) or Conv1D (W [k, d]).
template <typename T> void lora_merge(T* W, int k, int d, bool conv1d, const DevAdapter& ad, float sign) {
  const int rows = conv1d ? k : d, cols = conv1d ? d : k;
  const dim3 grid((cols + kMergeCols - 1) / kMergeCols, (rows + kMergeRows - 1) / kMergeRows);
  if (!conv1d) lora_merge_kernel<T><<<grid, kThreads>>>(W, rows, cols, ad.B, ad.r, 1, ad.A, k, 1, ad.r, sign * ad.s);
  else lora_merge_kernel<T><<<grid, kThreads>>>(W, rows, cols, ad.A, 1, k, ad.B, 1, ad.r, ad.r, sign * ad.s);
  KERNEL_CHECK("lora_merge_kernel");
}

// ----------------------------------------------------------------------------------------------
// The frozen GEMM. Row-major C [M, Nc] = op(A)·op(B) + beta·C (fp32 accumulate; beta = 0 never
// reads C). With cuBLAS: column-major Cᵀ = op(B)ᵀ·op(A)ᵀ, so the operands swap.

#ifndef WITH_CUBLAS
// One thread per element: for the correctness sweep on hosts without cuBLAS only.
template <typename T>
__global__ void naive_gemm_kernel(int M, int Nc, int K, const T* A, int lda, bool ta, const T* B, int ldb, bool tb, T* C,
                                  int ldc, float beta) {
  const int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (i >= (int64_t)M * Nc) return;
  const int m = (int)(i / Nc), nc = (int)(i % Nc);
  float acc = 0.f;
  for (int kk = 0; kk < K; ++kk) {
    const float av = to_float(ta ? A[(size_t)kk * lda + m] : A[(size_t)m * lda + kk]);
    const float bv = to_float(tb ? B[(size_t)nc * ldb + kk] : B[(size_t)kk * ldb + nc]);
    acc = fmaf(av, bv, acc);
  }
  T* c = C + (size_t)m * ldc + nc;
  *c = from_float<T>(beta != 0.f ? acc + beta * to_float(*c) : acc);
}
#endif

template <typename T>
void gemm_rm(int M, int Nc, int K, const T* A, int lda, bool ta, const T* B, int ldb, bool tb, T* C, int ldc, float beta) {
#ifdef WITH_CUBLAS
  const cudaDataType_t t = std::is_same<T, float>::value ? CUDA_R_32F : CUDA_R_16BF;
  const float alpha = 1.f;
  BLAS_CHECK(cublasGemmEx(g_blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, Nc, M, K, &alpha, B, t,
                          ldb, A, t, lda, &beta, C, t, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
#else
  const int64_t total = (int64_t)M * Nc;
  naive_gemm_kernel<T><<<(unsigned)((total + 255) / 256), 256>>>(M, Nc, K, A, lda, ta, B, ldb, tb, C, ldc, beta);
  KERNEL_CHECK("naive_gemm_kernel");
#endif
}

// y [N, d] = x·Wᵀ (Linear, W [d, k]) or x·W (Conv1D, W [k, d]), + beta·y.
template <typename T> void base_forward(const T* x, const T* W, T* y, int N, int k, int d, bool conv1d, float beta) {
  gemm_rm<T>(N, d, k, x, k, false, W, conv1d ? d : k, !conv1d, y, d, beta);
}

// gx [N, k] = gy·W (Linear) or gy·Wᵀ (Conv1D), + beta·gx.
template <typename T> void base_backward(const T* gy, const T* W, T* gx, int N, int k, int d, bool conv1d, float beta) {
  gemm_rm<T>(N, k, d, gy, d, false, W, conv1d ? d : k, conv1d, gx, k, beta);
}

// ----------------------------------------------------------------------------------------------
// The whole layer: LoRA halves first (the first adapter writes, the others accumulate), then the
// frozen GEMM with beta = 1 on top.

template <typename T>
void layer_forward(const T* x, const T* W, T* y, int N, int k, int d, bool conv1d, const std::vector<DevAdapter>& ads) {
  for (size_t i = 0; i < ads.size(); ++i) lora_forward<T>(ads[i], x, y, N, k, d, i > 0);
  base_forward<T>(x, W, y, N, k, d, conv1d, ads.empty() ? 0.f : 1.f);
}

template <typename T>
void layer_backward(const T* x, const T* gy, const T* W, T* gx, int N, int k, int d, bool conv1d,
                    const std::vector<DevAdapter>& ads, float* workspace) {
  for (size_t i = 0; i < ads.size(); ++i) lora_backward_gx<T>(ads[i], gy, gx, N, k, d, i > 0);
  base_backward<T>(gy, W, gx, N, k, d, conv1d, ads.empty() ? 0.f : 1.f);
  for (const DevAdapter& ad : ads) lora_backward_weights<T>(ad, x, gy, N, k, d, workspace);
}

// ----------------------------------------------------------------------------------------------
// Host helpers: random numbers, device buffers, T conversions.

struct Rng {
  uint64_t state;
  uint64_t next() { // splitmix64
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  float uniform(float lo, float hi) { return lo + (hi - lo) * (float)((next() >> 40) * (1.0 / 16777216.0)); }
};

template <typename T> float round_to(float v) {
  if (std::is_same<T, float>::value) return v;
  return lowrank::bf16_to_f32(lowrank::f32_to_bf16(v));
}

// Values representable in T, uniform in [lo, hi).
template <typename T> std::vector<float> random_vec(Rng& rng, size_t n, float lo, float hi) {
  std::vector<float> v(n);
  for (float& e : v) e = round_to<T>(rng.uniform(lo, hi));
  return v;
}

template <typename U> struct DevBuf {
  U* p = nullptr;
  size_t n = 0;
  explicit DevBuf(size_t count) : n(count) { CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(count, 1) * sizeof(U))); }
  ~DevBuf() { cudaFree(p); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  void poison() { CUDA_CHECK(cudaMemset(p, 0xFF, n * sizeof(U))); } // NaN in float32 and bf16
};

template <typename T> void upload(DevBuf<T>& dst, const std::vector<float>& src) {
  if (std::is_same<T, float>::value) {
    CUDA_CHECK(cudaMemcpy(dst.p, src.data(), src.size() * 4, cudaMemcpyHostToDevice));
  } else {
    std::vector<uint16_t> h(src.size());
    for (size_t i = 0; i < src.size(); ++i) h[i] = lowrank::f32_to_bf16(src[i]);
    CUDA_CHECK(cudaMemcpy(dst.p, h.data(), h.size() * 2, cudaMemcpyHostToDevice));
  }
}

template <typename T> std::vector<float> download(const DevBuf<T>& src) {
  std::vector<float> out(src.n);
  if (std::is_same<T, float>::value) {
    CUDA_CHECK(cudaMemcpy(out.data(), src.p, src.n * 4, cudaMemcpyDeviceToHost));
  } else {
    std::vector<uint16_t> h(src.n);
    CUDA_CHECK(cudaMemcpy(h.data(), src.p, src.n * 2, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < src.n; ++i) out[i] = lowrank::bf16_to_f32(h[i]);
  }
  return out;
}

// ----------------------------------------------------------------------------------------------
// CPU references in float64, from the exact values the GPU sees.

struct HostAdapter {
  int r;
  float s, p;
  uint64_t seed, offset;
  std::vector<float> A, B; // [r, k], [d, r]
};

static double ref_mask(const HostAdapter& ad, uint64_t i) {
  if (ad.p <= 0.f) return 1.0;
  return lora_keep(ad.seed, ad.offset, i, ad.p) ? 1.0 / (1.0 - (double)ad.p) : 0.0;
}

// y, gx and the merged W are sums whose partial sums the GPU rounds to T; *_mag holds Σ|term| per
// element (|base| + Σ_adapters |s·LoRA term|), the size those roundings scale with.
struct RefOut {
  std::vector<double> y, gx, W_merged;
  std::vector<double> y_mag, gx_mag, W_mag;
  std::vector<std::vector<double>> u, gA, gB;
};

static RefOut reference(const std::vector<float>& x, const std::vector<float>& W, const std::vector<float>& gy, int N, int k,
                        int d, bool conv1d, const std::vector<HostAdapter>& ads) {
  RefOut o;
  auto w_at = [&](int oc, int c) -> double { return conv1d ? W[(size_t)c * d + oc] : W[(size_t)oc * k + c]; };
  o.y.assign((size_t)N * d, 0.0);
  o.gx.assign((size_t)N * k, 0.0);
  for (int n = 0; n < N; ++n)
    for (int oc = 0; oc < d; ++oc) {
      double t = 0;
      for (int c = 0; c < k; ++c) t += (double)x[(size_t)n * k + c] * w_at(oc, c);
      o.y[(size_t)n * d + oc] = t;
      o.y_mag.push_back(std::fabs(t));
    }
  for (int n = 0; n < N; ++n)
    for (int c = 0; c < k; ++c) {
      double t = 0;
      for (int oc = 0; oc < d; ++oc) t += (double)gy[(size_t)n * d + oc] * w_at(oc, c);
      o.gx[(size_t)n * k + c] = t;
      o.gx_mag.push_back(std::fabs(t));
    }
  o.W_merged.assign(W.begin(), W.end());
  for (float w : W) o.W_mag.push_back(std::fabs(w));
  for (const HostAdapter& ad : ads) {
    const int r = ad.r;
    std::vector<double> xd((size_t)N * k), u((size_t)N * r, 0.0), v((size_t)N * r, 0.0);
    for (size_t i = 0; i < xd.size(); ++i) xd[i] = x[i] * ref_mask(ad, i);
    for (int n = 0; n < N; ++n)
      for (int j = 0; j < r; ++j) {
        double t = 0, tv = 0;
        for (int c = 0; c < k; ++c) t += xd[(size_t)n * k + c] * ad.A[(size_t)j * k + c];
        for (int oc = 0; oc < d; ++oc) tv += (double)gy[(size_t)n * d + oc] * ad.B[(size_t)oc * r + j];
        u[(size_t)n * r + j] = t;
        v[(size_t)n * r + j] = tv;
      }
    for (int n = 0; n < N; ++n) {
      for (int oc = 0; oc < d; ++oc) {
        double t = 0;
        for (int j = 0; j < r; ++j) t += u[(size_t)n * r + j] * ad.B[(size_t)oc * r + j];
        o.y[(size_t)n * d + oc] += ad.s * t;
        o.y_mag[(size_t)n * d + oc] += std::fabs(ad.s * t);
      }
      for (int c = 0; c < k; ++c) {
        double t = 0;
        for (int j = 0; j < r; ++j) t += v[(size_t)n * r + j] * ad.A[(size_t)j * k + c];
        const double term = ad.s * ref_mask(ad, (uint64_t)n * k + c) * t;
        o.gx[(size_t)n * k + c] += term;
        o.gx_mag[(size_t)n * k + c] += std::fabs(term);
      }
    }
    std::vector<double> gA((size_t)r * k, 0.0), gB((size_t)d * r, 0.0);
    for (int j = 0; j < r; ++j)
      for (int c = 0; c < k; ++c) {
        double t = 0;
        for (int n = 0; n < N; ++n) t += v[(size_t)n * r + j] * xd[(size_t)n * k + c];
        gA[(size_t)j * k + c] = ad.s * t;
      }
    for (int oc = 0; oc < d; ++oc)
      for (int j = 0; j < r; ++j) {
        double t = 0;
        for (int n = 0; n < N; ++n) t += (double)gy[(size_t)n * d + oc] * u[(size_t)n * r + j];
        gB[(size_t)oc * r + j] = ad.s * t;
      }
    for (int oc = 0; oc < d; ++oc)
      for (int c = 0; c < k; ++c) {
        double t = 0;
        for (int j = 0; j < r; ++j) t += (double)ad.B[(size_t)oc * r + j] * ad.A[(size_t)j * k + c];
        const size_t i = conv1d ? (size_t)c * d + oc : (size_t)oc * k + c;
        o.W_merged[i] += ad.s * t;
        o.W_mag[i] += std::fabs(ad.s * t);
      }
    o.u.push_back(std::move(u));
    o.gA.push_back(std::move(gA));
    o.gB.push_back(std::move(gB));
  }
  return o;
}

// ‖got − ref‖ / ‖mag‖, mag = ref unless given (‖got − ref‖ when it is 0); any non-finite value
// fails. For sums rounded to T along the way, mag = Σ|term| (RefOut): with ‖ref‖, a one-element
// case whose terms cancel fails on bf16 rounding alone.
struct Check {
  bool pass = true;
  std::string text;
  void add(const char* what, const std::vector<float>& got, const std::vector<double>& ref, double tol,
           const std::vector<double>* mag = nullptr) {
    double num = 0, den = 0;
    bool finite = got.size() == ref.size() && (!mag || mag->size() == ref.size());
    for (size_t i = 0; i < got.size() && i < ref.size(); ++i) {
      if (!std::isfinite(got[i])) finite = false;
      const double e = (double)got[i] - ref[i], m = mag && i < mag->size() ? (*mag)[i] : ref[i];
      num += e * e;
      den += m * m;
    }
    const double err = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
    const bool ok = finite && err <= tol;
    pass = pass && ok;
    char buf[96];
    snprintf(buf, sizeof buf, " %s %s%.1e", what, ok ? "" : (finite ? "FAIL:" : "NONFINITE:"), err);
    text += buf;
  }
};

struct Case {
  int N, k, d, r;
};

// One layer with two adapters (ranks r and r2), forward, backward, merge and unmerge on the GPU
// against the float64 reference. Tolerances (relative L2): float32 tensors 1e-5; T-typed outputs
// (relative to the size of their terms) 1e-5 for float32 and 1e-2 for bf16: at most 4 roundings
// of partial sums no larger than Σ|term|, each <= 2^-9 relative (METHOD.md's bf16 band).
template <typename T> bool run_case(const Case& cs, bool conv1d, float p, Rng& rng) {
  const int N = cs.N, k = cs.k, d = cs.d;
  const int r2 = cs.r > 1 ? (cs.r + 1) / 2 : 3;
  const bool is_bf16 = std::is_same<T, bf16>::value;
  const double tol_t = is_bf16 ? 1e-2 : 1e-5, tol_f = 1e-5;

  // Base terms ~U(-1,1)·U(-1,1)/sqrt(k) summed: O(0.3); the LoRA terms are of the same order or
  // larger (s = 2), so an error in them shows in y and gx.
  const float wb = 1.f / std::sqrt((float)k);
  std::vector<float> x = random_vec<T>(rng, (size_t)N * k, -1.f, 1.f);
  std::vector<float> W = random_vec<T>(rng, (size_t)d * k, -wb, wb);
  std::vector<float> gy = random_vec<T>(rng, (size_t)N * d, -1.f, 1.f);
  std::vector<HostAdapter> hads;
  for (int a = 0; a < 2; ++a) {
    HostAdapter h;
    h.r = a == 0 ? cs.r : r2;
    h.s = 2.f * (a == 0 ? 1.f : 0.75f);
    h.p = p;
    h.seed = rng.next();
    h.offset = rng.next() >> 20;
    const float ab = 1.f / std::sqrt((float)k), bb = std::sqrt(3.f / (float)h.r);
    h.A = random_vec<float>(rng, (size_t)h.r * k, -ab, ab);
    h.B = random_vec<float>(rng, (size_t)d * h.r, -bb, bb);
    hads.push_back(std::move(h));
  }
  const RefOut ref = reference(x, W, gy, N, k, d, conv1d, hads);

  DevBuf<T> dx((size_t)N * k), dW((size_t)d * k), dy((size_t)N * d), dgy((size_t)N * d), dgx((size_t)N * k);
  upload(dx, x);
  upload(dW, W);
  upload(dgy, gy);
  std::vector<DevBuf<float>*> owned;
  auto dev_floats = [&](size_t n) {
    owned.push_back(new DevBuf<float>(n));
    return owned.back();
  };
  std::vector<DevAdapter> ads;
  size_t ws = 1;
  for (const HostAdapter& h : hads) {
    DevAdapter a{};
    a.r = h.r; a.s = h.s; a.p = h.p; a.seed = h.seed; a.offset = h.offset;
    DevBuf<float>* A = dev_floats(h.A.size());
    DevBuf<float>* B = dev_floats(h.B.size());
    upload(*A, h.A);
    upload(*B, h.B);
    a.A = A->p; a.B = B->p;
    for (float** dst : {&a.u, &a.v}) {
      DevBuf<float>* b = dev_floats((size_t)N * h.r);
      b->poison();
      *dst = b->p;
    }
    DevBuf<float>* gA = dev_floats((size_t)h.r * k);
    DevBuf<float>* gB = dev_floats((size_t)d * h.r);
    gA->poison();
    gB->poison();
    a.gA = gA->p; a.gB = gB->p;
    ws = std::max({ws, wgrad_workspace(N, k, h.r), wgrad_workspace(N, d, h.r)});
    ads.push_back(a);
  }
  DevBuf<float> work(ws);
  work.poison();
  dy.poison();
  dgx.poison();

  layer_forward<T>(dx.p, dW.p, dy.p, N, k, d, conv1d, ads);
  layer_backward<T>(dx.p, dgy.p, dW.p, dgx.p, N, k, d, conv1d, ads, work.p);
  CUDA_CHECK(cudaDeviceSynchronize());

  Check chk;
  chk.add("y", download(dy), ref.y, tol_t, &ref.y_mag);
  chk.add("gx", download(dgx), ref.gx, tol_t, &ref.gx_mag);
  auto dl_floats = [&](const float* p, size_t n) {
    std::vector<float> h(n);
    CUDA_CHECK(cudaMemcpy(h.data(), p, n * 4, cudaMemcpyDeviceToHost));
    return h;
  };
  for (size_t a = 0; a < ads.size(); ++a) {
    const std::string tag = std::to_string(a + 1);
    chk.add(("u" + tag).c_str(), dl_floats(ads[a].u, (size_t)N * ads[a].r), ref.u[a], tol_f);
    chk.add(("gA" + tag).c_str(), dl_floats(ads[a].gA, (size_t)ads[a].r * k), ref.gA[a], tol_f);
    chk.add(("gB" + tag).c_str(), dl_floats(ads[a].gB, (size_t)d * ads[a].r), ref.gB[a], tol_f);
  }

  // Merge both adapters, check; unmerge them (last first), check against the original W.
  for (const DevAdapter& a : ads) lora_merge<T>(dW.p, k, d, conv1d, a, 1.f);
  CUDA_CHECK(cudaDeviceSynchronize());
  chk.add("merge", download(dW), ref.W_merged, tol_t, &ref.W_mag);
  for (size_t a = ads.size(); a-- > 0;) lora_merge<T>(dW.p, k, d, conv1d, ads[a], -1.f);
  CUDA_CHECK(cudaDeviceSynchronize());
  chk.add("unmerge", download(dW), std::vector<double>(W.begin(), W.end()), tol_t, &ref.W_mag);

  for (DevBuf<float>* b : owned) delete b;
  printf("%s %-4s %-6s N=%-3d k=%-3d d=%-3d r=%d+%d p=%.2f |%s\n", chk.pass ? "PASS" : "FAIL", is_bf16 ? "bf16" : "f32",
         conv1d ? "Conv1D" : "Linear", N, k, d, cs.r, r2, p, chk.text.c_str());
  return chk.pass;
}

static int run_checks() {
  g_sync_each_launch = true;
  // Every value of {1, 3, 17, 64, 128} in each of N, k, d, r, odd N (77), and shapes whose rows
  // take the 16-byte paths over several 256-column chunks (k, d multiples of 8, r above 32).
  const std::vector<Case> cases = {
      {1, 1, 1, 1},       {3, 17, 64, 3},     {77, 64, 17, 17},   {17, 128, 3, 64},  {64, 3, 128, 128},
      {77, 128, 128, 1},  {128, 64, 64, 17},  {77, 17, 3, 128},   {128, 1, 17, 64},  {77, 3, 1, 3},
      {200, 256, 384, 16}, {333, 520, 264, 8}, {77, 776, 136, 33}, {129, 264, 1032, 128},
  };
  Rng rng{0x5EED};
  int pass = 0, total = 0;
  for (const Case& cs : cases)
    for (int t = 0; t < 2; ++t)
      for (int layout = 0; layout < 2; ++layout)
        for (float p : {0.f, 0.1f}) {
          const bool ok = t == 0 ? run_case<float>(cs, layout == 1, p, rng) : run_case<bf16>(cs, layout == 1, p, rng);
          pass += ok;
          ++total;
        }
  printf("correctness: %d / %d cases PASS\n", pass, total);
  g_sync_each_launch = false;
  return pass == total ? 0 : 1;
}

// ----------------------------------------------------------------------------------------------
// Timings: CUDA events around each repetition, warm-up first, median of >= 20.

template <typename T> __global__ void fill_uniform_kernel(T* p, size_t n, uint64_t seed, float lo, float hi) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    p[i] = from_float<T>(lowrank::philox_uniform(seed, 0, i, lo, hi));
}

template <typename T> void fill_uniform(T* p, size_t n, uint64_t seed, float lo, float hi) {
  fill_uniform_kernel<T><<<8 * g_num_sms, 256>>>(p, n, seed, lo, hi);
  KERNEL_CHECK("fill_uniform_kernel");
}

template <typename F> float median_ms(F&& f, int warmup = 5, int reps = 25) {
  cudaEvent_t start, stop;
  CUDA_CHECK(cudaEventCreate(&start));
  CUDA_CHECK(cudaEventCreate(&stop));
  for (int i = 0; i < warmup; ++i) f(i);
  CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<float> t(reps);
  for (int i = 0; i < reps; ++i) {
    CUDA_CHECK(cudaEventRecord(start));
    f(warmup + i);
    CUDA_CHECK(cudaEventRecord(stop));
    CUDA_CHECK(cudaEventSynchronize(stop));
    CUDA_CHECK(cudaEventElapsedTime(&t[i], start, stop));
  }
  CUDA_CHECK(cudaEventDestroy(start));
  CUDA_CHECK(cudaEventDestroy(stop));
  std::sort(t.begin(), t.end());
  return t[reps / 2];
}

struct Row {
  std::string name;
  float base_us, lora_us; // base_us < 0: not measured (no cuBLAS)
  double target;
  std::string peft;
};

static std::vector<Row> g_rows;
static std::vector<std::string> g_breakdown;

static void note(const char* fmt, double a, double b = 0, double c = 0) {
  char buf[256];
  snprintf(buf, sizeof buf, fmt, a, b, c);
  g_breakdown.push_back(buf);
}

// One layer shape in bf16: the LoRA step (forward + backward) against the frozen layer's
// (forward GEMM + gx GEMM; W has no gradient), plus each stage on its own.
static void bench_layer(const char* name, int N, int k, int d, int r, float p, bool conv1d, double target_step,
                        double target_fwd, const char* peft_step, const char* peft_fwd) {
  using T = bf16;
  DevBuf<T> x((size_t)N * k), W((size_t)d * k), y((size_t)N * d), gy((size_t)N * d), gx((size_t)N * k);
  DevBuf<float> A((size_t)r * k), B((size_t)d * r), u((size_t)N * r), v((size_t)N * r), gA((size_t)r * k), gB((size_t)d * r);
  DevBuf<float> work(std::max(wgrad_workspace(N, k, r), wgrad_workspace(N, d, r)));
  fill_uniform(x.p, x.n, 1, -1.f, 1.f);
  fill_uniform(W.p, W.n, 2, -0.02f, 0.02f);
  fill_uniform(gy.p, gy.n, 3, -1.f, 1.f);
  fill_uniform(A.p, A.n, 4, -0.02f, 0.02f);
  fill_uniform(B.p, B.n, 5, -0.02f, 0.02f);
  DevAdapter ad{r, 2.f, p, 1234, 0, A.p, B.p, u.p, v.p, gA.p, gB.p};
  const std::vector<DevAdapter> ads = {ad};

  const float t_fused_fwd = median_ms([&](int) { lora_forward<T>(ad, x.p, y.p, N, k, d, false); }) * 1e3f;
  const float t_fused_bwd = median_ms([&](int) { lora_backward_gx<T>(ad, gy.p, gx.p, N, k, d, false); }) * 1e3f;
  const float t_gA = median_ms([&](int) { lora_wgrad<T>(ad.v, r, x.p, k, N, p, ad.seed, ad.offset, ad.s, ad.gA, k, 1, work.p); }) * 1e3f;
  const float t_gB = median_ms([&](int) { lora_wgrad<T>(ad.u, r, gy.p, d, N, 0.f, 0, 0, ad.s, ad.gB, 1, r, work.p); }) * 1e3f;
  const double bytes_fwd = (double)N * (k + d) * sizeof(T), bytes_bwd = bytes_fwd;
  note("  fused forward  (read x, write y; u = drop(x)·Aᵀ, y = s·u·Bᵀ): %.1f us, %.0f GB/s", t_fused_fwd, bytes_fwd / t_fused_fwd * 1e-3);
  note("  fused backward (read gy, write gx; v = gy·B, gx = s·drop(v·A)): %.1f us, %.0f GB/s", t_fused_bwd, bytes_bwd / t_fused_bwd * 1e-3);
  note("  gA = s·vᵀ·drop(x) (partials + reduce): %.1f us, %.0f GB/s of x", t_gA, (double)N * k * sizeof(T) / t_gA * 1e-3);
  note("  gB = s·gyᵀ·u (partials + reduce): %.1f us, %.0f GB/s of gy", t_gB, (double)N * d * sizeof(T) / t_gB * 1e-3);

  float base_step = -1, lora_step = -1, base_fwd = -1, lora_fwd = -1;
#ifdef WITH_CUBLAS
  const float g_fwd0 = median_ms([&](int) { base_forward<T>(x.p, W.p, y.p, N, k, d, conv1d, 0.f); }) * 1e3f;
  const float g_fwd1 = median_ms([&](int) { base_forward<T>(x.p, W.p, y.p, N, k, d, conv1d, 1.f); }) * 1e3f;
  const float g_bwd0 = median_ms([&](int) { base_backward<T>(gy.p, W.p, gx.p, N, k, d, conv1d, 0.f); }) * 1e3f;
  const float g_bwd1 = median_ms([&](int) { base_backward<T>(gy.p, W.p, gx.p, N, k, d, conv1d, 1.f); }) * 1e3f;
  const double flops = 2.0 * N * k * d;
  note("  frozen GEMM forward beta=0: %.1f us (%.0f TFLOP/s); beta=1: %.1f us", g_fwd0, flops / g_fwd0 * 1e-6, g_fwd1);
  note("  frozen GEMM gx      beta=0: %.1f us (%.0f TFLOP/s); beta=1: %.1f us", g_bwd0, flops / g_bwd0 * 1e-6, g_bwd1);
  // The other order for comparison: GEMM with beta = 0, then the LoRA kernel adding into y.
  const float alt_fwd = median_ms([&](int) {
    base_forward<T>(x.p, W.p, y.p, N, k, d, conv1d, 0.f);
    lora_forward<T>(ad, x.p, y.p, N, k, d, true);
  }) * 1e3f;
  base_fwd = median_ms([&](int) { base_forward<T>(x.p, W.p, y.p, N, k, d, conv1d, 0.f); }) * 1e3f;
  lora_fwd = median_ms([&](int) { layer_forward<T>(x.p, W.p, y.p, N, k, d, conv1d, ads); }) * 1e3f;
  note("  forward, LoRA kernel first + GEMM beta=1: %.1f us; GEMM beta=0 + LoRA kernel adding into y: %.1f us", lora_fwd, alt_fwd);
  base_step = median_ms([&](int) {
    base_forward<T>(x.p, W.p, y.p, N, k, d, conv1d, 0.f);
    base_backward<T>(gy.p, W.p, gx.p, N, k, d, conv1d, 0.f);
  }) * 1e3f;
  lora_step = median_ms([&](int) {
    layer_forward<T>(x.p, W.p, y.p, N, k, d, conv1d, ads);
    layer_backward<T>(x.p, gy.p, W.p, gx.p, N, k, d, conv1d, ads, work.p);
  }) * 1e3f;
#endif
  char buf[160];
  snprintf(buf, sizeof buf, "%s fwd+bwd", name);
  if (target_step > 0) g_rows.push_back({buf, base_step, lora_step, target_step, peft_step});
  snprintf(buf, sizeof buf, "%s forward only", name);
  if (target_fwd > 0) g_rows.push_back({buf, base_fwd, lora_fwd, target_fwd, peft_fwd});
}

// Merge W += s·B·A, 4096 x 4096 bf16, r = 16, against a device-to-device copy of the same bytes
// (which reads and writes them once: the memory floor). Four weights in rotation, so the 32 MB
// weight is not served from L2 between repetitions.
static void bench_merge(int d, int k, int r) {
  using T = bf16;
  constexpr int kRot = 4;
  std::vector<DevBuf<T>*> Ws, Cs;
  for (int i = 0; i < kRot; ++i) {
    Ws.push_back(new DevBuf<T>((size_t)d * k));
    Cs.push_back(new DevBuf<T>((size_t)d * k));
    fill_uniform(Ws.back()->p, Ws.back()->n, 10 + i, -0.02f, 0.02f);
  }
  DevBuf<float> A((size_t)r * k), B((size_t)d * r);
  fill_uniform(A.p, A.n, 20, -0.02f, 0.02f);
  fill_uniform(B.p, B.n, 21, -0.02f, 0.02f);
  DevAdapter ad{r, 2.f, 0.f, 0, 0, A.p, B.p, nullptr, nullptr, nullptr, nullptr};
  const size_t bytes = (size_t)d * k * sizeof(T);
  const float t_copy = median_ms([&](int i) {
    CUDA_CHECK(cudaMemcpyAsync(Cs[i % kRot]->p, Ws[i % kRot]->p, bytes, cudaMemcpyDeviceToDevice));
  }) * 1e3f;
  // Alternate merge and unmerge so the weights stay where they started.
  const float t_merge = median_ms([&](int i) { lora_merge<T>(Ws[i % kRot]->p, k, d, false, ad, (i / kRot) % 2 ? -1.f : 1.f); }) * 1e3f;
  const float t_merge_c = median_ms([&](int i) { lora_merge<T>(Ws[i % kRot]->p, k, d, true, ad, (i / kRot) % 2 ? -1.f : 1.f); }) * 1e3f;
  note("  copy %.0f MB d2d: %.1f us = %.0f GB/s (read + write)", bytes / 1e6, t_copy, 2.0 * bytes / t_copy * 1e-3);
  note("  merge Linear: %.1f us (%.0f GB/s); merge Conv1D layout: %.1f us", t_merge, 2.0 * bytes / t_merge * 1e-3, t_merge_c);
  char buf[128];
  snprintf(buf, sizeof buf, "merge W += s·B·A %dx%d bf16 r=%d (vs d2d copy)", d, k, r);
  g_rows.push_back({buf, t_copy, t_merge, 1.5, "4.75x"});
  for (int i = 0; i < kRot; ++i) {
    delete Ws[i];
    delete Cs[i];
  }
}

static void run_bench() {
  // Copy bandwidth of this card, the memory ceiling (256 MB each way).
  {
    const size_t bytes = 256u << 20;
    DevBuf<char> a(bytes), b(bytes);
    CUDA_CHECK(cudaMemset(a.p, 1, bytes));
    const float ms = median_ms([&](int) { CUDA_CHECK(cudaMemcpyAsync(b.p, a.p, bytes, cudaMemcpyDeviceToDevice)); });
    note("copy bandwidth: %.0f GB/s (256 MB d2d, read + write)", 2.0 * bytes / ms * 1e-6);
  }
  note("N=8192 k=d=4096 r=16 p=0 Linear:", 0);
  bench_layer("N=8192 k=d=4096 r=16 p=0", 8192, 4096, 4096, 16, 0.f, false, 1.10, 1.05, "1.46x", "1.39x");
  note("N=8192 k=d=4096 r=16 p=0.05 Linear:", 0);
  bench_layer("N=8192 k=d=4096 r=16 p=0.05", 8192, 4096, 4096, 16, 0.05f, false, 1.12, -1, "1.63x", "");
  note("N=8192 k=768 d=2304 r=8 p=0 Conv1D (GPT-2 c_attn):", 0);
  bench_layer("c_attn N=8192 k=768 d=2304 r=8", 8192, 768, 2304, 8, 0.f, true, 1.40, -1, "3.82x", "");
  note("merge:", 0);
  bench_merge(4096, 4096, 16);

  printf("\nbreakdown (bf16, median of 25 after 5 warm-ups):\n");
  for (const std::string& s : g_breakdown) printf("%s\n", s.c_str());
  printf("\n| benchmark | base / floor (us) | lowrank (us) | lowrank ratio | target | PEFT (issue, H200) |\n");
  printf("|---|---:|---:|---:|---:|---:|\n");
  for (const Row& row : g_rows) {
    if (row.base_us > 0 && row.lora_us > 0)
      printf("| %s | %.1f | %.1f | %.3fx | <= %.2fx | %s |\n", row.name.c_str(), row.base_us, row.lora_us, row.lora_us / row.base_us,
             row.target, row.peft.c_str());
    else
      printf("| %s | n/a (no cuBLAS) | n/a | n/a | <= %.2fx | %s |\n", row.name.c_str(), row.target, row.peft.c_str());
  }
}

int main(int argc, char** argv) {
  setvbuf(stdout, nullptr, _IOLBF, 0); // progress shows through pipes (tee) line by line
  const std::string mode = argc > 1 ? argv[1] : "all";
  if (mode != "all" && mode != "check" && mode != "bench") {
    fprintf(stderr, "usage: %s [check|bench|all]\n", argv[0]);
    return 2;
  }
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  cudaDeviceProp prop;
  CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
  g_num_sms = prop.multiProcessorCount;
  printf("device: %s, %d SMs, L2 %d MB%s\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20,
#ifdef WITH_CUBLAS
         ", frozen GEMM: cuBLAS"
#else
         ", frozen GEMM: naive kernel (no cuBLAS: no base timings)"
#endif
  );
#ifdef WITH_CUBLAS
  BLAS_CHECK(cublasCreate(&g_blas));
  BLAS_CHECK(cublasSetMathMode(g_blas, CUBLAS_DEFAULT_MATH)); // float32 stays float32 (no TF32)
#endif
  int rc = 0;
  if (mode != "bench") rc = run_checks();
  if (mode != "check") run_bench();
#ifdef WITH_CUBLAS
  BLAS_CHECK(cublasDestroy(g_blas));
#endif
  return rc;
}
