// The fused LoRA forward and backward and the merge on the GPU (native/ops/lora.h), twin of
// native/cpu/lora.cc.
//
// The factor products are thin (r of a few dozen at most): passes over x, g and the outputs with r
// multiply-adds per element, bound by memory and, with dropout, by the Philox evaluations, never by
// the FP32 units. So they are hand-written passes, one per product, with the mask applied in
// registers (no mask tensor, no masked copy of x), instead of GEMMs tuned for large tiles.
// Ranks are taken kRank = 16 at a time (a tile of u, v, rows of A and of Bᵀ); larger ranks loop
// over tiles, each re-reading its input (from L2 when it fits).
//   forward   u = drop(x)·Aᵀ                  lora_down_kernel: a block per 256 columns × 64 rows of x
//                                                                (A's chunk in shared memory), then the
//                                                                chunks' sums added in order (lora_sum_in_order_kernel)
//             out = y + s·u·Bᵀ                lora_up_kernel:   a warp per 128 columns × 16 rows of out,
//                                                                B's tile in registers, u's rows staged
//   backward  Bt = Bᵀ                          (r×d: the down kernel's factor rows contiguous)
//             v = g·B = g·Btᵀ                 lora_down_kernel over g
//             gx = s·(v·A) ⊙ mask/(1-p)        lora_up_kernel, masked
//             the slabs' partial sums of vᵀ·drop(x)   lora_rows_grad_kernel over x (the mask again)
//             the slabs' partial sums of uᵀ·g  lora_rows_grad_kernel over g
//             gA, gB = s·(partials added in slab order)   (lora_sum_in_order_kernel; gB transposed)
//   merge     W += s·B·A (or its transpose), in place       lora_merge_kernel: W read and written once
// The chunks and slabs are fixed by the shapes alone, so u, v, gA and gB do not depend on the GPU.
//
// Memory: each lane takes 4 consecutive columns (one 16-byte load or store where the row's
// groups of 4 are aligned, 4 scalar accesses elsewhere); a warp covers 128 columns, half a warp
// each 64-column group. The first H100 run of scalar lanes (4-byte accesses, ~10 warps per SM)
// moved ~450 GB/s, stalled on load latency; 16-byte accesses put 4x the bytes in flight per warp.
// The second (16-byte lanes, factor rows re-read from L1/L2 in the inner loops) reached 500-900
// GB/s; ncu showed the down kernel waiting on its re-reads of Bᵀ (L2 hit rate 7%) and the up
// kernel on each row's u: the factors now come from shared memory.
// Dropout (core/philox.h): the stream's 64-element groups take one Philox block per 4 elements
// (q, q+16, q+32, q+48); where a row's groups line up with the stream's, lane q of the half-warp
// evaluates block q and the lanes trade their keep bits by shuffles (keep4).
#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "../core/philox.h"
#include "../ops/lora.h"
#include "common.cuh"
#include "bf16x4.cuh"  // after common.cuh: the CPU emulator swaps that for its own uint2 and float4

namespace lowrank {
namespace cuda {
namespace {

constexpr int kRank = 16;        // rank columns per launch
constexpr int kRowsPerWarp = 4;  // rows a warp of lora_down and lora_rows_grad takes at a time
constexpr int kUpRows = 16;      // rows a warp of lora_up takes (its factor tile loaded once for them)
constexpr int kUpBatch = 8;      // rows of y lora_up has in flight
constexpr int kRowsTile = 64;    // rows of v (or u) lora_rows_grad stages in shared memory at a time
constexpr int kDownCols = 256;   // columns a block of lora_down takes (its factor chunk in shared memory)
constexpr int kDownRows = 64;    // rows a block of lora_down takes: 16 per warp
constexpr int kWarps = 4;
constexpr int kBlock = 32 * kWarps;
// Blocks per SM the unmasked kernels are compiled for (<= 128 registers: loads in flight); the
// masked ones kMinBlocks - 1 (the Philox rounds need registers).
constexpr int kMinBlocks = 4;
constexpr int kStep = 128;        // columns a warp covers: 32 lanes × 4
constexpr int kSlabBlocks = 512;  // lora_rows_grad_kernel's blocks to aim for (with the column steps): ~4 per SM
constexpr int kMinSlabRows = 32;

struct Dropout {
  float p, scale;  // drop probability; the kept elements' multiplier 1/(1-p)
  uint64_t seed, offset;
};

// A lane's first column in each step: columns are step + lane_column() + t, t = 0..3.
__device__ __forceinline__ int64_t lane_column() {
  const int lane = threadIdx.x & 31;
  return 64 * (lane >> 4) + 4 * (lane & 15);
}

// The first step's column: with dropout, row 0's 64-column groups start on the stream's groups.
__host__ __device__ __forceinline__ int64_t first_step(bool masked, uint64_t offset) {
  return masked ? -int64_t(offset & 63) : 0;
}

// Whether every lane's 4 columns of every row start 16-byte aligned: K a multiple of 4, the steps
// on multiples of 4, the pointers 16-byte aligned.
bool vec4(int64_t K, int64_t step0, std::initializer_list<const void*> ptrs) {
  bool ok = K % 4 == 0 && step0 % 4 == 0;
  for (const void* p : ptrs) ok = ok && (p == nullptr || reinterpret_cast<uintptr_t>(p) % 16 == 0);
  return ok;
}

__device__ __forceinline__ bool in_row(int64_t c, int64_t cols) { return c >= 0 && c < cols; }

// p[0..4) in one aligned access, widened to float (the fast path of load4); kReadOnly false for
// memory the kernel also writes (no read-only path for it).
template <bool kReadOnly = true>
__device__ __forceinline__ void load4_aligned(const float* p, float (&v)[4]) {
  const float4 t = kReadOnly ? __ldg(reinterpret_cast<const float4*>(p)) : *reinterpret_cast<const float4*>(p);
  v[0] = t.x, v[1] = t.y, v[2] = t.z, v[3] = t.w;
}
template <bool kReadOnly = true>
__device__ __forceinline__ void load4_aligned(const uint16_t* p, float (&v)[4]) {
  const uint2* q = reinterpret_cast<const uint2*>(p);
  const float4 t = bf16x4_unpack(kReadOnly ? __ldg(q) : *q);
  v[0] = t.x, v[1] = t.y, v[2] = t.z, v[3] = t.w;
}
__device__ __forceinline__ void store4_aligned(float* p, const float (&v)[4]) { *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]); }
__device__ __forceinline__ void store4_aligned(uint16_t* p, const float (&v)[4]) { *reinterpret_cast<uint2*>(p) = bf16x4_pack(v[0], v[1], v[2], v[3]); }

// row[c..c+3] (0 outside [0, K)): one 16-byte load when vec and all four are in the row. y may be
// the kernel's output (no read-only path for it: kReadOnly false).
template <bool kReadOnly = true>
__device__ __forceinline__ void load4(const float* row, int64_t K, int64_t c, bool vec, float (&v)[4]) {
  if (vec && c >= 0 && c + 4 <= K) {
    load4_aligned<kReadOnly>(row + c, v);
  } else {
#pragma unroll
    for (int t = 0; t < 4; ++t) v[t] = in_row(c + t, K) ? row[c + t] : 0.0f;
  }
}

// The same for bfloat16 rows (an augmented input or gradient, a bf16 weight): one 8-byte access
// where aligned.
template <bool kReadOnly = true>
__device__ __forceinline__ void load4(const uint16_t* row, int64_t K, int64_t c, bool vec, float (&v)[4]) {
  if (vec && c >= 0 && c + 4 <= K) {
    load4_aligned<kReadOnly>(row + c, v);
  } else {
#pragma unroll
    for (int t = 0; t < 4; ++t) v[t] = in_row(c + t, K) ? bf16_to_f32(row[c + t]) : 0.0f;
  }
}

__device__ __forceinline__ void store4(uint16_t* row, int64_t K, int64_t c, bool vec, const float (&v)[4]) {
  if (vec && c >= 0 && c + 4 <= K) {
    store4_aligned(row + c, v);
  } else {
#pragma unroll
    for (int t = 0; t < 4; ++t)
      if (in_row(c + t, K)) row[c + t] = f32_to_bf16(v[t]);
  }
}

__device__ __forceinline__ void store4(float* row, int64_t K, int64_t c, bool vec, const float (&v)[4]) {
  if (vec && c >= 0 && c + 4 <= K) {
    store4_aligned(row + c, v);
  } else {
#pragma unroll
    for (int t = 0; t < 4; ++t)
      if (in_row(c + t, K)) row[c + t] = v[t];
  }
}

// load4 / store4 with their checks settled by the caller: kAligned says the lane's 4 columns exist and
// start aligned, and the access is then a plain vector one, which the compiler issues together with
// its neighbours' (behind the per-access checks a lane's rows went out one at a time).
template <bool kAligned, bool kReadOnly = true, typename T>
__device__ __forceinline__ void load4_at(const T* row, int64_t K, int64_t c, bool vec, float (&v)[4]) {
  if constexpr (kAligned) load4_aligned<kReadOnly>(row + c, v);
  else load4<kReadOnly>(row, K, c, vec, v);
}
template <bool kAligned, typename T>
__device__ __forceinline__ void store4_at(T* row, int64_t K, int64_t c, bool vec, const float (&v)[4]) {
  if constexpr (kAligned) store4_aligned(row + c, v);
  else store4(row, K, c, vec, v);
}

// Dropout's multipliers (scale or 0) for row i's columns c..c+3 of a [rows, K] operand (stream
// elements i·K + c + t; columns outside the row get a decision that is not used). Where the row's
// 64-column groups line up with the stream's (the same for every lane: the warp's columns are
// 64-aligned apart), lane q of each half-warp evaluates the block of its group's elements q + 16w
// and takes the keep bit of element 4q + t from lane (4q + t) mod 16: word q / 4 of that lane's
// block. Elsewhere each lane evaluates its elements' four blocks. All 32 lanes call it together.
__device__ __forceinline__ void keep4(const Dropout& m, int64_t i, int64_t K, int64_t c, float (&mult)[4]) {
  const int lane = threadIdx.x & 31, q = lane & 15;
  const uint64_t j = m.offset + uint64_t(i * K + c);
  if (((j - 4 * q) & 63) == 0) {
    const unsigned bits = philox_keep_bits4(m.seed, j - 3 * q, m.p);  // the group's elements q + 16w
#pragma unroll
    for (int t = 0; t < 4; ++t) {
      const unsigned held = __shfl_sync(0xffffffffu, bits, (lane & 16) | ((4 * q + t) & 15));
      mult[t] = (held >> (q >> 2)) & 1u ? m.scale : 0.0f;
    }
  } else {
#pragma unroll
    for (int t = 0; t < 4; ++t) mult[t] = philox_keep(m.seed, 0, j + t, m.p) ? m.scale : 0.0f;
  }
}

// dst[rr][j] = p[(row0 + rr)·ld + j] for rr < rows, j < rt, else 0 (rows of u or v into shared
// memory): threads t, t + stride, ... of a warp or a block share the copy, coalesced along the rows.
template <int kTileRows>
__device__ __forceinline__ void stage_rank_rows(const float* __restrict__ p, int64_t ld, int rt, int64_t row0, int64_t rows,
                                                float (&dst)[kTileRows][kRank], int t, int stride) {
  for (int e = t; e < kTileRows * kRank; e += stride) {
    const int rr = e / kRank, j = e % kRank;
    dst[rr][j] = rr < rows && j < rt ? __ldg(p + (row0 + rr) * ld + j) : 0.0f;
  }
}

// Sums a[0..64) over the warp's lanes, halving what each lane holds at each of five shuffle steps
// (62 shuffles instead of 320): lane L ends with the sums of values 2L and 2L + 1 in a[0] and a[1].
// Step kHalf keeps a[0..kHalf): the lanes whose bit kHalf/2 is set take the upper half.
template <int kHalf = 32>
__device__ __forceinline__ void reduce_across_lanes(float (&a)[kRowsPerWarp * kRank]) {
  static_assert(kRowsPerWarp * kRank == 64, "the halving takes 64 values to 2 per lane");
  const bool upper = ((threadIdx.x & 31) & (kHalf / 2)) != 0;
#pragma unroll
  for (int t = 0; t < kHalf; ++t) {
    const float send = upper ? a[t] : a[t + kHalf];
    const float keep = upper ? a[t + kHalf] : a[t];
    a[t] = keep + __shfl_xor_sync(0xffffffffu, send, kHalf / 2);
  }
  if constexpr (kHalf > 2) reduce_across_lanes<kHalf / 2>(a);
}

// xv[st][rr] = x's row row0 + rr (rr < rows) at step st of the chunk from col0; with xcopy, those rows
// also written into xcopy's (rows ldc apart) as bf16. kWhole: every lane's columns are whole and
// aligned, in x and in xcopy.
template <bool kWhole>
__device__ __forceinline__ void down_rows(const float* __restrict__ x, int64_t K, int64_t row0, int rows, int64_t col0, bool vec,
                                          uint16_t* __restrict__ xcopy, int64_t ldc, bool vec_copy,
                                          float (&xv)[kDownCols / kStep][kRowsPerWarp][4]) {
#pragma unroll
  for (int st = 0; st < kDownCols / kStep; ++st)
#pragma unroll
    for (int rr = 0; rr < kRowsPerWarp; ++rr)
      if (rr < rows) load4_at<kWhole>(x + (row0 + rr) * K, K, col0 + st * kStep + lane_column(), vec, xv[st][rr]);
  if (!xcopy) return;
#pragma unroll
  for (int st = 0; st < kDownCols / kStep; ++st)
#pragma unroll
    for (int rr = 0; rr < kRowsPerWarp; ++rr)
      if (rr < rows) store4_at<kWhole>(xcopy + (row0 + rr) * ldc, K, col0 + st * kStep + lane_column(), vec_copy, xv[st][rr]);
}

// partial[chunk, i, j] = Σ_{c in chunk} drop(x)[i, c]·f[j, c] for column chunk blockIdx.x (kDownCols
// columns) and the kDownRows rows of blockIdx.y (then every gridDim.y-th), j < rt; x [N, K], f [rt, K]
// (rt ≤ kRank), partial's rows ld apart ([chunks, N, ld]; u itself when there is one chunk). The
// block stages f's chunk in shared memory once; each warp takes 16 rows, 4 at a time, its lanes
// summing their own columns, then the warp adds the lanes' sums. With xcopy, the pass also writes
// bf16(x) (unmasked) into xcopy's rows (ldc apart): the augmented input of the one-GEMM LoRA.
template <bool kMasked>
__global__ void __launch_bounds__(kBlock, kMasked ? kMinBlocks - 1 : kMinBlocks)
    lora_down_kernel(const float* __restrict__ x, int64_t N, int64_t K, const float* __restrict__ f, int rt,
                     float* __restrict__ partial, int64_t ld, bool vec, Dropout m, uint16_t* __restrict__ xcopy, int64_t ldc,
                     bool vec_copy) {
  __shared__ __align__(16) float f_chunk[kRank][kDownCols];
  const int warp = threadIdx.x / 32, lane = threadIdx.x & 31;
  const int64_t col0 = first_step(kMasked, m.offset) + int64_t(blockIdx.x) * kDownCols;
  for (int e = threadIdx.x; e < kRank * kDownCols / 4; e += kBlock) {
    const int j = e / (kDownCols / 4), c4 = 4 * (e % (kDownCols / 4));
    float v[4] = {};
    if (j < rt) load4(f + j * K, K, col0 + c4, vec, v);
#pragma unroll
    for (int t = 0; t < 4; ++t) f_chunk[j][c4 + t] = v[t];
  }
  __syncthreads();
  float* out = partial + int64_t(blockIdx.x) * N * ld;
  // Every lane's columns of the block's chunk exist and are aligned (all chunks but a ragged last):
  // plain vector accesses, which the compiler issues together (see lora_merge_kernel's kWhole).
  const bool whole = vec && col0 >= 0 && col0 + kDownCols <= K && (!xcopy || vec_copy);
  for (int64_t block_row = int64_t(blockIdx.y) * kDownRows; block_row < N; block_row += int64_t(gridDim.y) * kDownRows) {
    for (int64_t row0 = block_row + warp * (kDownRows / kWarps); row0 < block_row + (warp + 1) * (kDownRows / kWarps) && row0 < N;
         row0 += kRowsPerWarp) {
      const int rows = N - row0 < kRowsPerWarp ? int(N - row0) : kRowsPerWarp;
      float xv[kDownCols / kStep][kRowsPerWarp][4] = {};  // both steps' loads issued before any product
      if (whole) down_rows<true>(x, K, row0, rows, col0, vec, xcopy, ldc, vec_copy, xv);
      else down_rows<false>(x, K, row0, rows, col0, vec, xcopy, ldc, vec_copy, xv);
      float acc[kRowsPerWarp * kRank] = {};  // [row * kRank + j]
#pragma unroll
      for (int st = 0; st < kDownCols / kStep; ++st) {
        const int cl = st * kStep + int(lane_column());
        if constexpr (kMasked) {
#pragma unroll
          for (int rr = 0; rr < kRowsPerWarp; ++rr) {
            if (rr >= rows) break;
            float mult[4];
            keep4(m, row0 + rr, K, col0 + cl, mult);
#pragma unroll
            for (int t = 0; t < 4; ++t) xv[st][rr][t] *= mult[t];
          }
        }
#pragma unroll
        for (int j = 0; j < kRank; ++j) {
          const float4 fv = *reinterpret_cast<const float4*>(&f_chunk[j][cl]);
#pragma unroll
          for (int rr = 0; rr < kRowsPerWarp; ++rr)
            acc[rr * kRank + j] = fmaf(xv[st][rr][3], fv.w, fmaf(xv[st][rr][2], fv.z, fmaf(xv[st][rr][1], fv.y, fmaf(xv[st][rr][0], fv.x, acc[rr * kRank + j]))));
        }
      }
      reduce_across_lanes(acc);
#pragma unroll
      for (int t = 0; t < 2; ++t) {
        const int idx = 2 * lane + t, rr = idx / kRank, j = idx % kRank;
        if (rr < rows && j < rt) out[(row0 + rr) * ld + j] = acc[t];
      }
    }
  }
}

// out[i, c] = y[i, c] + mask(s·Σ_j u[i, j]·F(j, c)), F(j, c) = f[j·fj + c·fc] (A's rows: fj = K,
// fc = 1; Bᵀ read from B: fj = 1, fc = r), u [N, rt] (rows ldu apart), out [N, K]; y may be out
// or null (0); the mask is dropout's multipliers of element i·K + c when kMasked (the input
// gradient), else 1. A warp takes the 128 columns of step blockIdx.x, holds F there in registers,
// stages its kUpRows rows of u in shared memory (one coalesced pass) and walks them with
// kUpBatch rows' loads of y in flight.
template <bool kMasked>
__global__ void __launch_bounds__(kBlock, kMasked ? kMinBlocks - 1 : kMinBlocks)
    lora_up_kernel(const float* __restrict__ u, int64_t ldu, int rt, const float* __restrict__ f, int64_t fj, int64_t fc,
                   const float* y, float* out, int64_t N, int64_t K, float s, bool vec, Dropout m) {
  __shared__ __align__(16) float u_rows[kWarps][kUpRows][kRank];
  const int warp = threadIdx.x / 32, lane = threadIdx.x & 31;
  const int64_t c = first_step(kMasked, m.offset) + int64_t(blockIdx.x) * kStep + lane_column();
  const bool aligned = vec && c >= 0 && c + 4 <= K;  // the lane's 4 columns, in every row
  float fv[kRank][4];
#pragma unroll
  for (int j = 0; j < kRank; ++j)
#pragma unroll
    for (int t = 0; t < 4; ++t) fv[j][t] = j < rt && in_row(c + t, K) ? __ldg(f + j * fj + (c + t) * fc) : 0.0f;
  for (int64_t row0 = (int64_t(blockIdx.y) * kWarps + warp) * kUpRows; row0 < N; row0 += int64_t(gridDim.y) * kWarps * kUpRows) {
    const int rows = N - row0 < kUpRows ? int(N - row0) : kUpRows;
    stage_rank_rows(u, ldu, rt, row0, rows, u_rows[warp], lane, 32);
    __syncwarp();
    for (int b0 = 0; b0 < rows; b0 += kUpBatch) {
      float yv[kUpBatch][4] = {};
      if (aligned) {  // plain vector loads the compiler issues together (see lora_merge_kernel's kWhole)
#pragma unroll
        for (int b = 0; b < kUpBatch; ++b)
          if (y && b0 + b < rows) load4_aligned<false>(y + (row0 + b0 + b) * K + c, yv[b]);
      } else {
#pragma unroll
        for (int b = 0; b < kUpBatch; ++b)
          if (y && b0 + b < rows) load4<false>(y + (row0 + b0 + b) * K, K, c, vec, yv[b]);
      }
#pragma unroll
      for (int b = 0; b < kUpBatch; ++b) {
        if (b0 + b >= rows) break;
        float o[4] = {};
#pragma unroll
        for (int q = 0; q < kRank / 4; ++q) {
          const float4 uq = *reinterpret_cast<const float4*>(&u_rows[warp][b0 + b][4 * q]);
#pragma unroll
          for (int t = 0; t < 4; ++t)
            o[t] = fmaf(uq.w, fv[4 * q + 3][t], fmaf(uq.z, fv[4 * q + 2][t], fmaf(uq.y, fv[4 * q + 1][t], fmaf(uq.x, fv[4 * q][t], o[t]))));
        }
        float mult[4] = {1.0f, 1.0f, 1.0f, 1.0f};
        if constexpr (kMasked) keep4(m, row0 + b0 + b, K, c, mult);
#pragma unroll
        for (int t = 0; t < 4; ++t) o[t] = yv[b][t] + s * o[t] * mult[t];
        if (aligned) store4_aligned(out + (row0 + b0 + b) * K + c, o);
        else store4(out + (row0 + b0 + b) * K, K, c, vec, o);
      }
    }
    __syncwarp();  // u_rows is rewritten for the next rows
  }
}

// partial[slab, j, c] = Σ_{i in slab} v[i, j]·drop(x)[i, c] (j < rt) for slab blockIdx.y of slab_rows
// rows and the kStep columns of step blockIdx.x. v [N, rt] (rows ld apart), x [N, K] float32 or
// bfloat16 (rows ldx apart), partial
// [slabs, kRank, K]. The block stages v's rows kRowsTile at a time in shared memory; its 4 warps take
// every 4th row, each 4 rows at a time (their loads issued together); warp 0 adds the warps' sums.
template <bool kMasked, typename T>
__global__ void __launch_bounds__(kBlock, kMasked ? kMinBlocks - 1 : kMinBlocks)
    lora_rows_grad_kernel(const float* __restrict__ v, int64_t ldv, int rt, const T* __restrict__ x, int64_t ldx, int64_t N,
                          int64_t K, bool vec, Dropout m, int64_t slab_rows, float* __restrict__ partial) {
  __shared__ __align__(16) float v_rows[kRowsTile][kRank];
  __shared__ float others[kWarps - 1][4 * kRank][32];  // warps 1..3's sums, lane-minor (no bank conflicts)
  const int warp = threadIdx.x / 32, lane = threadIdx.x & 31;
  const int64_t c = first_step(kMasked, m.offset) + int64_t(blockIdx.x) * kStep + lane_column();
  const int64_t i0 = int64_t(blockIdx.y) * slab_rows, i1 = i0 + slab_rows < N ? i0 + slab_rows : N;
  const bool aligned = vec && c >= 0 && c + 4 <= K;  // the lane's 4 columns, in every row
  float acc[4 * kRank] = {};  // [j * 4 + t]
  for (int64_t tile = i0; tile < i1; tile += kRowsTile) {
    const int64_t tile_end = tile + kRowsTile < i1 ? tile + kRowsTile : i1;
    stage_rank_rows(v, ldv, rt, tile, tile_end - tile, v_rows, threadIdx.x, kBlock);
    __syncthreads();
    for (int64_t i = tile + warp; i < tile_end; i += kWarps * kRowsPerWarp) {
      float xv[kRowsPerWarp][4] = {};
      if (aligned) {  // plain vector loads the compiler issues together (see lora_merge_kernel's kWhole)
#pragma unroll
        for (int rr = 0; rr < kRowsPerWarp; ++rr)
          if (i + kWarps * rr < tile_end) load4_aligned(x + (i + kWarps * rr) * ldx + c, xv[rr]);
      } else {
#pragma unroll
        for (int rr = 0; rr < kRowsPerWarp; ++rr)
          if (i + kWarps * rr < tile_end) load4(x + (i + kWarps * rr) * ldx, K, c, vec, xv[rr]);
      }
#pragma unroll
      for (int rr = 0; rr < kRowsPerWarp; ++rr) {
        const int64_t ii = i + kWarps * rr;
        if (ii >= tile_end) break;
        if constexpr (kMasked) {
          float mult[4];
          keep4(m, ii, K, c, mult);
#pragma unroll
          for (int t = 0; t < 4; ++t) xv[rr][t] *= mult[t];
        }
#pragma unroll
        for (int q = 0; q < kRank / 4; ++q) {
          const float4 vq = *reinterpret_cast<const float4*>(&v_rows[ii - tile][4 * q]);
          const float vj[4] = {vq.x, vq.y, vq.z, vq.w};
#pragma unroll
          for (int jj = 0; jj < 4; ++jj)
#pragma unroll
            for (int t = 0; t < 4; ++t) acc[(4 * q + jj) * 4 + t] = fmaf(vj[jj], xv[rr][t], acc[(4 * q + jj) * 4 + t]);
        }
      }
    }
    __syncthreads();  // v_rows is rewritten for the next tile
  }
  if (warp > 0) {
#pragma unroll
    for (int t = 0; t < 4 * kRank; ++t) others[warp - 1][t][lane] = acc[t];
  }
  __syncthreads();
  if (warp != 0) return;
#pragma unroll
  for (int q = 0; q < kRank; ++q) {
    if (q >= rt) break;
    float sum[4];
#pragma unroll
    for (int t = 0; t < 4; ++t) sum[t] = acc[q * 4 + t] + others[0][q * 4 + t][lane] + others[1][q * 4 + t][lane] + others[2][q * 4 + t][lane];
    store4(partial + (int64_t(blockIdx.y) * kRank + q) * K, K, c, vec, sum);
  }
}

// out[a, b] (transposed: out[b, a]) = s·Σ_q partial[q·q_stride + a·src_ld + b] over q = 0..count-1 in
// order, a < rows, b < cols; out's rows ld apart. Adds the down kernel's column chunks into u and the
// rows-grad kernel's slabs into gA and gB, in an order fixed by the shapes.
__global__ void lora_sum_in_order_kernel(const float* __restrict__ partial, int64_t count, int64_t q_stride, int64_t src_ld,
                                         int64_t rows, int64_t cols, float s, float* __restrict__ out, int64_t ld, bool transposed) {
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < rows * cols; idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t a = idx / cols, b = idx % cols;
    float sum = 0.0f;
    for (int64_t q = 0; q < count; ++q) sum += partial[q * q_stride + a * src_ld + b];
    out[transposed ? b * ld + a : a * ld + b] = s * sum;
  }
}

// The augmented input's columns col0 .. ld of its N rows: bf16(s·u[i, j]) for j < r, then 1 (with
// ones) and zeros (native/ops/lora.h, LoraAugDims).
__global__ void lora_aug_tail_kernel(const float* __restrict__ u, int64_t N, int64_t r, float s, bool ones,
                                     uint16_t* __restrict__ xa, int64_t ld, int64_t col0) {
  const int64_t width = ld - col0;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < N * width; idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = idx / width, j = idx % width;
    const float value = j < r ? s * u[i * r + j] : (ones && j == r ? 1.0f : 0.0f);
    xa[i * ld + col0 + j] = f32_to_bf16(value);
  }
}

// The augmented weight's adapter rows and columns (LoraAugPack): element e < (r + 1)·d is X(k + j,
// c) (j = e / d: B's column j, then the bias), the rest X(a, d + j) (A's row j at column a).
__global__ void lora_aug_pack_kernel(LoraAugPack pk, uint16_t* __restrict__ W, const float* __restrict__ A,
                                     const float* __restrict__ B, const float* __restrict__ bias) {
  const int64_t rows_part = (pk.r + 1) * pk.d, total = rows_part + pk.k * pk.r;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    int64_t a, b;
    float value;
    if (e < rows_part) {
      const int64_t j = e / pk.d, c = e % pk.d;
      a = pk.k + j, b = c;
      value = j < pk.r ? B[c * pk.r + j] : (bias ? bias[c] : 0.0f);
    } else {
      const int64_t j = (e - rows_part) / pk.k, i = (e - rows_part) % pk.k;
      a = i, b = pk.d + j;
      value = A[j * pk.k + i];
    }
    W[pk.transposed ? a * pk.ld + b : b * pk.ld + a] = f32_to_bf16(value);
  }
}

// dst [cols, rows] = src [rows, cols]ᵀ
__global__ void lora_transpose_kernel(const float* __restrict__ src, int64_t rows, int64_t cols, float* __restrict__ dst) {
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= rows * cols) return;
  const int64_t i = idx / cols, c = idx % cols;
  dst[c * rows + i] = src[idx];
}

// W [rows, cols] (rows ldw apart) += s·Σ_t P(i, t)·Q(t, c), with P(i, t) = P[i·p_i + t·p_t] and Q(t, c) = Q[t·q_t + c·q_c]
// (lora_merge's two layouts). W's elements are float or bfloat16 bits (uint16_t), each read and
// written once. A warp takes 128 columns, each lane 4 consecutive (one 16-byte float or 8-byte
// bfloat16 access where aligned), and 8 rows at a time, their loads in flight together; a block 8
// warps, blocks by the grid's height. When r ≤ 16 (the adapters' usual ranks) the block stages Q's
// columns in shared memory once and P's rows for each 64 rows. dev/cuda/merge.cu times this against
// the versions tried (4 rows at a time, P read from global memory: 1.8x a copy of a 4096² bf16 W on
// an H100; this one 1.5x).
constexpr int kMergeWarps = 8, kMergeWarpRows = 8, kMergeRows = kMergeWarpRows * kMergeWarps, kMergeCols = 128;
constexpr int kMergeBlocks = 1024;  // ~2 waves of 4 blocks per SM on an H100

// kSharedFactors: r ≤ kRank. kWhole: every lane's 4 columns exist and are aligned (cols a multiple
// of 128, vec): W's accesses are then plain vector ones, which the compiler issues together for the
// 8 rows (behind load4's per-access checks they went out one row at a time: 62 vs 46 us on a 4096²
// bf16 W in dev/cuda/merge.cu).
template <typename T, bool kSharedFactors, bool kWhole>
__global__ void __launch_bounds__(32 * kMergeWarps) lora_merge_kernel(T* W, int64_t rows, int64_t cols, int64_t ldw, int64_t r,
                                                                      const float* __restrict__ P, int64_t p_i, int64_t p_t,
                                                                      const float* __restrict__ Q, int64_t q_t, int64_t q_c,
                                                                      float s, bool vec) {
  __shared__ __align__(16) float q_tile[kSharedFactors ? kRank : 1][kMergeCols];  // Q(t, the block's columns)
  __shared__ float p_tile[kSharedFactors ? kMergeRows : 1][kRank];                // P(the block's rows, t)
  const int64_t col_block = int64_t(blockIdx.x) * kMergeCols;
  if constexpr (kSharedFactors) {
    for (int e = threadIdx.x; e < kRank * kMergeCols; e += blockDim.x) {
      const int t = e / kMergeCols, cc = e % kMergeCols;
      q_tile[t][cc] = t < r && col_block + cc < cols ? __ldg(Q + t * q_t + (col_block + cc) * q_c) : 0.0f;
    }
  }
  const int cl = 4 * (threadIdx.x & 31), warp_row = kMergeWarpRows * int(threadIdx.x / 32);
  const int64_t c0 = col_block + cl;
  const int n = cols - c0 < 4 ? int(cols - c0) : 4;  // <= 0: a lane past the last column (it still meets the barriers)
  for (int64_t block_row = int64_t(blockIdx.y) * kMergeRows; block_row < rows; block_row += int64_t(gridDim.y) * kMergeRows) {
    if constexpr (kSharedFactors) {
      __syncthreads();  // the previous rows' P has been read
      for (int e = threadIdx.x; e < kMergeRows * kRank; e += blockDim.x) {
        const int rr = e / kRank, t = e % kRank;
        p_tile[rr][t] = t < r && block_row + rr < rows ? __ldg(P + (block_row + rr) * p_i + t * p_t) : 0.0f;
      }
    }
    __syncthreads();
    const int64_t i0 = block_row + warp_row;
    if (n <= 0 || i0 >= rows) continue;
    float w[kMergeWarpRows][4] = {};  // [row][b]
#pragma unroll
    for (int a = 0; a < kMergeWarpRows; ++a)
      if (i0 + a < rows) load4_at<kWhole, false>(W + (i0 + a) * ldw, cols, c0, vec, w[a]);  // W is written too: no read-only path
    float acc[kMergeWarpRows][4] = {};
    for (int64_t t = 0; t < r; ++t) {
      float q[4];
      if constexpr (kSharedFactors) {
        const float4 qv = *reinterpret_cast<const float4*>(&q_tile[t][cl]);
        q[0] = qv.x, q[1] = qv.y, q[2] = qv.z, q[3] = qv.w;
      } else {
#pragma unroll
        for (int b = 0; b < 4; ++b) q[b] = b < n ? __ldg(Q + t * q_t + (c0 + b) * q_c) : 0.0f;
      }
#pragma unroll
      for (int a = 0; a < kMergeWarpRows; ++a) {
        const float p = kSharedFactors ? p_tile[warp_row + a][t] : (i0 + a < rows ? __ldg(P + (i0 + a) * p_i + t * p_t) : 0.0f);
#pragma unroll
        for (int b = 0; b < 4; ++b) acc[a][b] = fmaf(p, q[b], acc[a][b]);
      }
    }
#pragma unroll
    for (int a = 0; a < kMergeWarpRows; ++a) {
      if (i0 + a >= rows) break;
#pragma unroll
      for (int b = 0; b < 4; ++b) w[a][b] = s * acc[a][b] + w[a][b];
      store4_at<kWhole>(W + (i0 + a) * ldw, cols, c0, vec, w[a]);
    }
  }
}

// ---- launches

Dropout dropout_of(const LoraDims& d) { return Dropout{d.p, d.mask_scale, d.seed, d.offset}; }
const Dropout kNoDropout{0.0f, 1.0f, 0, 0};

int tile_rank(const LoraDims& d, int64_t j0) { return int(d.r - j0 < kRank ? d.r - j0 : kRank); }
// Column steps of a K-column operand: with dropout the first starts up to 63 columns before 0.
unsigned column_steps(int64_t K, const Dropout& m) { return unsigned((K - first_step(m.p > 0, m.offset) + kStep - 1) / kStep); }

// u = drop(x)·fᵀ for one rank tile; with xcopy, also xcopy[:, :K] = bf16(x) (rows ldc apart).
void down(const float* x, int64_t N, int64_t K, const float* f, int rt, float* u, int64_t ldu, const Dropout& m,
          uint16_t* xcopy = nullptr, int64_t ldc = 0) {
  const int64_t chunks = (K - first_step(m.p > 0, m.offset) + kDownCols - 1) / kDownCols;
  const int64_t row_blocks = (N + kDownRows - 1) / kDownRows;
  const dim3 grid(unsigned(chunks), unsigned(row_blocks < 65535 ? row_blocks : 65535));
  const bool vec = vec4(K, first_step(m.p > 0, m.offset), {x, f});
  const bool vec_copy = first_step(m.p > 0, m.offset) % 4 == 0 && ldc % 4 == 0 && reinterpret_cast<uintptr_t>(xcopy) % 8 == 0;
  float* partial = chunks > 1 ? scratch<float>(size_t(chunks * N * kRank)) : u;
  const int64_t ld = chunks > 1 ? kRank : ldu;
  const cudaStream_t stream = current_stream();
  if (m.p > 0)
    lora_down_kernel<true><<<grid, kBlock, 0, stream>>>(x, N, K, f, rt, partial, ld, vec, m, xcopy, ldc, vec_copy);
  else
    lora_down_kernel<false><<<grid, kBlock, 0, stream>>>(x, N, K, f, rt, partial, ld, vec, m, xcopy, ldc, vec_copy);
  LR_CUDA_LAUNCH_CHECK("lora_down_kernel");
  if (chunks > 1) {
    lora_sum_in_order_kernel<<<grid_for(N * rt, 256), 256, 0, stream>>>(partial, chunks, N * kRank, kRank, N, rt, 1.0f, u, ldu, false);
    LR_CUDA_LAUNCH_CHECK("lora_sum_in_order_kernel");
    release(partial);
  }
}

// F(j, c) = f[j·fj + c·fc]: see lora_up_kernel.
void up(const float* u, int64_t ldu, int rt, const float* f, int64_t fj, int64_t fc, const float* y, float* out, int64_t N,
        int64_t K, float s, const Dropout& m) {
  const int64_t row_blocks = (N + kWarps * kUpRows - 1) / (kWarps * kUpRows);
  const dim3 grid(column_steps(K, m), unsigned(row_blocks < 65535 ? row_blocks : 65535));
  const bool vec = vec4(K, first_step(m.p > 0, m.offset), {y, out});
  if (m.p > 0)
    lora_up_kernel<true><<<grid, kBlock, 0, current_stream()>>>(u, ldu, rt, f, fj, fc, y, out, N, K, s, vec, m);
  else
    lora_up_kernel<false><<<grid, kBlock, 0, current_stream()>>>(u, ldu, rt, f, fj, fc, y, out, N, K, s, vec, m);
  LR_CUDA_LAUNCH_CHECK("lora_up_kernel");
}

// The slabs of rows over which the gradients of A and B are summed for a K-column operand.
struct Slabs {
  int64_t rows, count;
  Slabs(int64_t N, int64_t K) {
    const int64_t steps = (K + kStep - 1) / kStep;
    const int64_t most = (N + kMinSlabRows - 1) / kMinSlabRows, want = (kSlabBlocks + steps - 1) / steps;
    const int64_t n = most < want ? most : want;
    rows = (N + n - 1) / n;
    count = (N + rows - 1) / rows;
  }
};

// out = s·vᵀ·drop(x) for one rank tile (rt ≤ kRank rows of vᵀ): the slabs' partial sums, then their
// sum. x [N, K] float32 or bfloat16, rows ldx apart.
template <typename T>
void rows_grad(const float* v, int64_t ldv, int rt, const T* x, int64_t ldx, int64_t N, int64_t K, float s, const Dropout& m,
               float* partial, float* out, int64_t ld, bool transposed) {
  const Slabs slabs(N, K);
  const dim3 grid(column_steps(K, m), unsigned(slabs.count));
  const bool vec = vec4(K, first_step(m.p > 0, m.offset), {x, partial}) && ldx % 4 == 0;
  const cudaStream_t stream = current_stream();
  if (m.p > 0)
    lora_rows_grad_kernel<true><<<grid, kBlock, 0, stream>>>(v, ldv, rt, x, ldx, N, K, vec, m, slabs.rows, partial);
  else
    lora_rows_grad_kernel<false><<<grid, kBlock, 0, stream>>>(v, ldv, rt, x, ldx, N, K, vec, m, slabs.rows, partial);
  LR_CUDA_LAUNCH_CHECK("lora_rows_grad_kernel");
  lora_sum_in_order_kernel<<<grid_for(rt * K, 256), 256, 0, stream>>>(partial, slabs.count, kRank * K, K, rt, K, s, out, ld, transposed);
  LR_CUDA_LAUNCH_CHECK("lora_sum_in_order_kernel");
}

// Bᵀ [r, K] of B [K, r] (the factor rows of g·B), in a scratch buffer the caller releases.
float* transposed_factor(const float* B, int64_t K, int64_t r) {
  float* Bt = scratch<float>(size_t(r * K));
  if (r * K > 0) {
    lora_transpose_kernel<<<grid_for(r * K, 256), 256, 0, current_stream()>>>(B, K, r, Bt);
    LR_CUDA_LAUNCH_CHECK("lora_transpose_kernel");
  }
  return Bt;
}

// The empty sums of gA and gB (no rows, or rank 0).
void zero_factor_grads(const LoraDims& d, float* gA, float* gB) {
  if (gA) LR_CUDA_CHECK(cudaMemsetAsync(gA, 0, size_t(d.r * d.k) * sizeof(float), current_stream()));
  if (gB) LR_CUDA_CHECK(cudaMemsetAsync(gB, 0, size_t(d.d * d.r) * sizeof(float), current_stream()));
}

// Scratch for the slabs' partial sums of gA (over x's slabs) and of gB (over g's), one at a time;
// null when neither gradient is wanted. The caller releases it.
float* factor_grad_partials(const LoraDims& d, bool wanted) {
  if (!wanted) return nullptr;
  const Slabs slabs_x(d.N, d.k), slabs_g(d.N, d.d);
  return scratch<float>(size_t(kRank * (slabs_x.count * d.k > slabs_g.count * d.d ? slabs_x.count * d.k : slabs_g.count * d.d)));
}

}  // namespace

void lora_forward_f32(const LoraDims& d, const float* x, const float* A, const float* B, const float* y, float* out, float* u) {
  if (d.N == 0) return;
  if (d.r == 0) {  // no update
    if (out != y) LR_CUDA_CHECK(cudaMemcpyAsync(out, y, size_t(d.N * d.d) * sizeof(float), cudaMemcpyDeviceToDevice, current_stream()));
    return;
  }
  for (int64_t j0 = 0; j0 < d.r; j0 += kRank) down(x, d.N, d.k, A + j0 * d.k, tile_rank(d, j0), u + j0, d.r, dropout_of(d));
  for (int64_t j0 = 0; j0 < d.r; j0 += kRank)  // F(j, c) = B[c, j0 + j]
    up(u + j0, d.r, tile_rank(d, j0), B + j0, 1, d.r, j0 == 0 ? y : out, out, d.N, d.d, d.scaling, kNoDropout);
}

void lora_backward_f32(const LoraDims& d, const float* g, const float* x, const float* A, const float* B, const float* u,
                       float* gx, float* gA, float* gB) {
  if (d.N == 0 || d.r == 0) {  // empty sums
    zero_factor_grads(d, gA, gB);
    if (gx) LR_CUDA_CHECK(cudaMemsetAsync(gx, 0, size_t(d.N * d.k) * sizeof(float), current_stream()));
    return;
  }
  const Dropout m = dropout_of(d);
  float* partial = factor_grad_partials(d, gA || gB);
  if (gx || gA) {
    float* Bt = transposed_factor(B, d.d, d.r);
    float* v = scratch<float>(size_t(d.N * d.r));
    for (int64_t j0 = 0; j0 < d.r; j0 += kRank) down(g, d.N, d.d, Bt + j0 * d.d, tile_rank(d, j0), v + j0, d.r, kNoDropout);
    for (int64_t j0 = 0; j0 < d.r; j0 += kRank) {
      const int rt = tile_rank(d, j0);
      if (gx) up(v + j0, d.r, rt, A + j0 * d.k, d.k, 1, j0 > 0 ? gx : nullptr, gx, d.N, d.k, d.scaling, m);
      if (gA) rows_grad(v + j0, d.r, rt, x, d.k, d.N, d.k, d.scaling, m, partial, gA + j0 * d.k, d.k, false);
    }
    release(v);
    release(Bt);
  }
  if (gB) {
    for (int64_t j0 = 0; j0 < d.r; j0 += kRank)
      rows_grad(u + j0, d.r, tile_rank(d, j0), g, d.d, d.N, d.d, d.scaling, kNoDropout, partial, gB + j0, d.r, true);
  }
  if (partial) release(partial);
}

void lora_aug_pack(const LoraAugPack& pk, uint16_t* W, const float* A, const float* B, const float* bias) {
  const int64_t total = (pk.r + 1) * pk.d + pk.k * pk.r;
  if (total == 0) return;
  lora_aug_pack_kernel<<<grid_for(total, 256), 256, 0, current_stream()>>>(pk, W, A, B, bias);
  LR_CUDA_LAUNCH_CHECK("lora_aug_pack_kernel");
}

void lora_down_aug(const LoraAugDims& a, const float* x, const float* f, float* u, uint16_t* xa) {
  if (a.N == 0) return;
  const Dropout m{a.p, a.mask_scale, a.seed, a.offset};
  float* Ft = a.f_transposed ? transposed_factor(f, a.K, a.r) : nullptr;
  const float* F = Ft ? Ft : f;
  for (int64_t j0 = 0; j0 < a.r; j0 += kRank) {  // r >= 1 (the binding checks): the copy of x rides on the first tile
    const int rt = int(a.r - j0 < kRank ? a.r - j0 : kRank);
    down(x, a.N, a.K, F + j0 * a.K, rt, u + j0, a.r, m, j0 == 0 ? xa : nullptr, a.ld);
  }
  if (Ft) release(Ft);
  const int64_t tail = a.N * (a.ld - a.K);
  if (tail > 0) {
    lora_aug_tail_kernel<<<grid_for(tail, 256), 256, 0, current_stream()>>>(u, a.N, a.r, a.tail_scale, a.ones, xa, a.ld, a.K);
    LR_CUDA_LAUNCH_CHECK("lora_aug_tail_kernel");
  }
}

void lora_backward_aug(const LoraDims& d, const float* v, const float* u, const uint16_t* xa, int64_t ldx, const uint16_t* ga,
                       int64_t ldg, const float* A, float* gx, float* gA, float* gB) {
  if (d.N == 0 || d.r == 0) {  // empty sums; gx keeps the GEMM's product
    zero_factor_grads(d, gA, gB);
    return;
  }
  const Dropout m = dropout_of(d);
  float* partial = factor_grad_partials(d, gA || gB);
  for (int64_t j0 = 0; j0 < d.r; j0 += kRank) {
    const int rt = tile_rank(d, j0);
    if (gx) up(v + j0, d.r, rt, A + j0 * d.k, d.k, 1, gx, gx, d.N, d.k, d.scaling, m);
    if (gA) rows_grad(v + j0, d.r, rt, xa, ldx, d.N, d.k, d.scaling, m, partial, gA + j0 * d.k, d.k, false);
    if (gB) rows_grad(u + j0, d.r, rt, ga, ldg, d.N, d.d, d.scaling, kNoDropout, partial, gB + j0, d.r, true);
  }
  if (partial) release(partial);
}

void lora_merge(const LoraMergeDims& m, void* W, DType w_dtype, const float* A, const float* B) {
  if (m.rows == 0 || m.cols == 0) return;
  // Linear: P = B [d, r], Q = A [r, k]. Transposed: P(i, t) = A[t, i], Q(t, c) = B[c, t].
  const float* P = m.transposed ? A : B;
  const float* Q = m.transposed ? B : A;
  const int64_t p_i = m.transposed ? 1 : m.r, p_t = m.transposed ? m.rows : 1;
  const int64_t q_t = m.transposed ? 1 : m.cols, q_c = m.transposed ? m.r : 1;
  // about kMergeBlocks blocks: each warp walks several row groups with its Q in registers
  const int64_t col_blocks = (m.cols + kMergeCols - 1) / kMergeCols, row_blocks = (m.rows + kMergeRows - 1) / kMergeRows;
  int64_t grid_rows = (kMergeBlocks + col_blocks - 1) / col_blocks;
  grid_rows = grid_rows < row_blocks ? grid_rows : row_blocks;
  const dim3 grid(unsigned(col_blocks), unsigned(grid_rows < 65535 ? grid_rows : 65535));
  const bool vec = m.cols % 4 == 0 && m.ld % 4 == 0 && reinterpret_cast<uintptr_t>(W) % 16 == 0;
  const bool whole = vec && m.cols % kMergeCols == 0;
  auto launch = [&](auto* w) {
    using T = std::remove_pointer_t<decltype(w)>;
    auto kernel = m.r <= kRank ? (whole ? lora_merge_kernel<T, true, true> : lora_merge_kernel<T, true, false>)
                               : (whole ? lora_merge_kernel<T, false, true> : lora_merge_kernel<T, false, false>);
    kernel<<<grid, 32 * kMergeWarps, 0, current_stream()>>>(w, m.rows, m.cols, m.ld, m.r, P, p_i, p_t, Q, q_t, q_c, m.scaling, vec);
  };
  if (w_dtype == DType::BF16)
    launch(static_cast<uint16_t*>(W));
  else
    launch(static_cast<float*>(W));
  LR_CUDA_LAUNCH_CHECK("lora_merge_kernel");
}

}  // namespace cuda
}  // namespace lowrank
