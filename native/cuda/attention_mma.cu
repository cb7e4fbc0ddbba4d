// bf16 tensor-core flash attention (AttnDims::precision BF16), forward and backward: the
// FlashAttention-2 kernels of dev/cuda/attention.cu (mma.sync m16n8k16, bf16 operands, float32
// sums; checked there on an H100 against a float64 reference, fwd + bwd 0.443 ms at B=8 H=12
// T=1024 D=64 causal), taken into the addon with its operands: float32 [batch, head, time]
// strided views (AttnView), tiles rounded to bf16 as they are loaded, the sliding window, and
// the masking and dropout rules of attention.cuh, shared with the float32 kernels of attention.cu.
//
// Accuracy: q, k, v, dO, and the weights P and dS are rounded to bf16 for the products (float32
// sums, float32 softmax statistics): bf16 accuracy, ~5e-3 of the largest value against float64
// on the rounded inputs (dev/cuda/attention-notes.md), as PyTorch's flash attention on bf16 tensors.
//
// NaN: a masked key's weight is an exact 0 (the float32 kernels skip the key instead), so a NaN
// in the value of a key a query cannot see still reaches that query's output through 0·NaN in the
// tensor-core product; keys past Tk are zero-filled and never do.
//
// dev/cuda/attention_mma_emu.cpp compiles this file on the CPU with ATTN_EMULATE defined (the
// PTX primitives and the launchers left out) to check the kernels' indexing without a GPU.
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "attention.cuh"
#ifndef ATTN_EMULATE
#include <string>

#include "common.cuh"
#endif

namespace lowrank {
namespace cuda {
namespace {

using bf16 = __nv_bfloat16;

// ---- tensor-core building blocks (sm_80+) -------------------------------------------------------
// mma.sync.m16n8k16 (row.col, bf16 in, f32 accumulate). Per lane, with g = lane / 4, t = lane % 4:
//   A (16x16, 4 regs of 2 bf16): a0 = A[g][2t..2t+1], a1 = A[g+8][2t..], a2 = A[g][2t+8..], a3 = A[g+8][2t+8..]
//   B (16x8, 2 regs):            b0 = B[2t..2t+1][g], b1 = B[2t+8..2t+9][g]
//   C (16x8, 4 floats):          c0,c1 = C[g][2t..2t+1], c2,c3 = C[g+8][2t..2t+1]
// ldmatrix.x4 loads four 8x8 bf16 matrices; lanes 8m..8m+7 give the row addresses of matrix m, and
// register m of lane l receives row l/4, columns 2(l%4)..+1 of matrix m (.trans: the transpose).
#ifndef ATTN_EMULATE
// The launch's dynamic shared memory.
__device__ __forceinline__ unsigned char* dynamic_smem() {
  extern __shared__ __align__(16) unsigned char mma_smem[];
  return mma_smem;
}

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

// Rows [row0, row0 + ROWS) of head (b, h) of a float32 view into a bf16 tile; rows >= nrows are
// zeros. Plain loads and stores, visible after the next __syncthreads.
template <int ROWS, int D>
__device__ __forceinline__ void load_tile(bf16* dst, const AttnView& src, int64_t b, int64_t h, int row0, int nrows,
                                          int tid, int nthreads) {
  constexpr int kChunks = D / 4;  // float4 per row
  for (int c = tid; c < ROWS * kChunks; c += nthreads) {
    const int r = c / kChunks, col = (c % kChunks) * 4;
    float4 x = make_float4(0.f, 0.f, 0.f, 0.f);
    if (row0 + r < nrows) x = *reinterpret_cast<const float4*>(src.row(b, h, row0 + r) + col);
    *reinterpret_cast<uint2*>(dst + r * tile_stride<D>() + col) = make_uint2(pack_bf16(x.x, x.y), pack_bf16(x.z, x.w));
  }
}

__device__ __forceinline__ void store2(float* p, float a, float b) { *reinterpret_cast<float2*>(p) = make_float2(a, b); }

// Whether query `row` may not see key `col` (col past Tk, causal, sliding window, padding).
__device__ __forceinline__ bool masked(const AttnDims& d, const int32_t* keep_b, int row, int col) {
  return col >= d.Tk || !key_visible(d, keep_b, row, col);
}

// ---- forward ----------------------------------------------------------------------------------
// Grid (B*H, ceil(Tq / Br)), kWarps warps; Br = 16*kWarps queries per block, warp w owns queries
// q0 + 16w .. +15. Keys in tiles of Bc = 64, double-buffered in shared memory (the next tile is
// loaded before the current one is used).
// Per warp and key tile: S = Q K^T (16 x 64, registers), online softmax in the log2 domain, then
// O += P V with P converted in registers from the accumulator layout to the A-operand layout.
// Shared memory: sQ [Br][D+8], sK [2][Bc][D+8], sV [2][Bc][D+8] (bf16).

constexpr int kBc = 64, kFwdWarps = 4;

template <int D, int kWarps>
constexpr size_t forward_smem() { return size_t(16 * kWarps + 4 * kBc) * tile_stride<D>() * sizeof(bf16); }

// D = 64: at most 168 registers, so 3 blocks fit on an SM as in the dev kernel (153 registers
// there; the float32 loads and the views' strides take more here, 184 uncapped); no spills.
template <int D, int kWarps>
__global__ void __launch_bounds__(kWarps * 32, D == 64 ? 3 : 1)
    mma_forward_kernel(AttnDims d, AttnView q, AttnView k, AttnView v, const int32_t* __restrict__ keep, AttnView out,
                       float* __restrict__ lse) {
  constexpr int Br = 16 * kWarps, kThreads = kWarps * 32, kS = tile_stride<D>();
  bf16* sQ = reinterpret_cast<bf16*>(dynamic_smem());
  bf16* sK = sQ + Br * kS;       // [2][Bc][kS]
  bf16* sV = sK + 2 * kBc * kS;  // [2][Bc][kS]

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32, g = lane / 4, tq = lane % 4;
  // Blocks start in order of blockIdx.x fastest: every head's last (for causal, costliest) query
  // tile first, so the cheap tiles fill the tail of the launch.
  const int q0 = (gridDim.y - 1 - blockIdx.y) * Br;
  const int64_t bh = blockIdx.x, b = bh / d.H, h = bh % d.H;
  const int Tq = int(d.Tq), Tk = int(d.Tk), offset = Tk - Tq;  // query i sits at key position i + offset
  const int32_t* keep_b = keep ? keep + b * d.Tk : nullptr;

  // Keys [kbegin, kend) are visible to some row of the block: causal ends, the window's start.
  const int kend = d.causal ? min(Tk, q0 + Br + offset) : Tk;
  const int kbegin = int(window_start(d, q0)) / kBc * kBc;
  const int ntiles = (kend - kbegin + kBc - 1) / kBc;

  load_tile<Br, D>(sQ, q, b, h, q0, Tq, tid, kThreads);
  load_tile<kBc, D>(sK, k, b, h, kbegin, Tk, tid, kThreads);
  load_tile<kBc, D>(sV, v, b, h, kbegin, Tk, tid, kThreads);

  const float scale_log2 = d.scale * kLog2e;
  uint32_t qf[D / 16][4];               // this warp's 16 query rows as A fragments
  float acc[D / 8][4] = {};             // O accumulator, 16 x D
  float m[2] = {-INFINITY, -INFINITY};  // running max (log2 domain) of rows g and g+8
  float l[2] = {0.f, 0.f};              // this lane's part of the running sum of rows g and g+8
  const int row_base = q0 + warp * 16 + g;  // row of c0/c1; c2/c3 are row_base + 8

  for (int t = 0; t < ntiles; ++t) {
    const int st = t & 1, k0 = kbegin + t * kBc;
    if (t + 1 < ntiles) {  // the next key tile into the other stage (freed by the last barrier)
      load_tile<kBc, D>(sK + (st ^ 1) * kBc * kS, k, b, h, k0 + kBc, Tk, tid, kThreads);
      load_tile<kBc, D>(sV + (st ^ 1) * kBc * kS, v, b, h, k0 + kBc, Tk, tid, kThreads);
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

    // Scale to the log2 domain and mask: keys past Tk, causal, sliding window, padding. A tile
    // none of whose keys any of these can hide skips the per-element test.
    const bool need_mask = keep != nullptr || k0 + kBc > Tk || (d.causal && k0 + kBc - 1 > q0 + offset) ||
                           (d.window > 0 && k0 <= q0 + Br - 1 + offset - d.window);
#pragma unroll
    for (int nb = 0; nb < kBc / 8; ++nb)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float x = sc[nb][e] * scale_log2;
        if (need_mask && masked(d, keep_b, row_base + (e / 2) * 8, k0 + nb * 8 + 2 * tq + (e % 2))) x = -INFINITY;
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
    if (d.dropout > 0.f) {
      const uint32_t bits = dropout_keep_bits<kBc / 8, true>(d, b, h, row_base, k0 + 2 * tq);
      const float kept = 1.f / (1.f - d.dropout);
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
    __syncthreads();  // stage st is refilled by the load of iteration t + 1
  }

  // Normalize, write O and lse. Rows that saw nothing (l = 0) give O = 0, lse = -inf.
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
    const int row = row_base + r * 8;
    if (row >= Tq) continue;
    const float inv = l[r] > 0.f ? 1.f / l[r] : 0.f;
    float* orow = out.row(b, h, row);
#pragma unroll
    for (int nb = 0; nb < D / 8; ++nb) store2(orow + nb * 8 + 2 * tq, acc[nb][2 * r] * inv, acc[nb][2 * r + 1] * inv);
    if (tq == 0) lse[bh * d.Tq + row] = l[r] > 0.f ? m[r] * kLn2 + logf(l[r]) : -INFINITY;
  }
}

// ---- backward ---------------------------------------------------------------------------------
// Before it: delta_i = dO_i · O_i (attention.cu's flash_delta_kernel) and dq zeroed (zero_rows_kernel).
// mma_backward_kernel: grid (B*H, ceil(Tk / 64)), 4 warps; warp w owns keys k0 + 16w .. +15 and
// accumulates their dK, dV (16 x D each) in registers. For each tile of Br queries that sees the
// block's keys (double-buffered Q, dO, lse, delta):
//   S^T = K Q^T, P^T = exp2(S^T*scale*log2e - lse*log2e), dP^T = V dO^T (16 x Br per warp)
//   dS^T = P^T * (dP^T*M - delta) * scale;  dV += (P^T*M) dO;  dK += dS^T Q
//   dS^T -> shared memory (bf16), then dq[tile] += dS K (Br x D over the 4 warps), added to the
//   float32 dq rows with atomics (float2 atomics on sm_90).
// Shared memory: sK, sV [64][D+8], sQ, sdO [2][Br][D+8], sdS [64][Br+8] (bf16), sL, sDelta [2][Br].
// Br = 64 for D = 64; 32 for D = 128 (keeps dK, dV, S^T, dP^T within the register file).

template <int D> __host__ __device__ constexpr int bwd_br() { return D == 64 ? 64 : 32; }
constexpr int kBwdThreads = 128;  // 4 warps

template <int D>
constexpr size_t backward_smem() {
  constexpr int Br = bwd_br<D>();
  return size_t(2 * kBc + 4 * Br) * tile_stride<D>() * sizeof(bf16) + size_t(kBc) * (Br + 8) * sizeof(bf16) +
         4 * Br * sizeof(float) + 2 * kBwdThreads * sizeof(uint32_t);
}

// Zeroes rows [0, T) of every head of a view (the dq the backward adds into), one warp per row.
__global__ void zero_rows_kernel(AttnDims d, AttnView x, int64_t T) {
  const int64_t row = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  if (row >= d.B * d.H * T) return;
  const int64_t t = row % T, bh = row / T;
  float* p = x.row(bh / d.H, bh % d.H, t);
  for (int64_t i = threadIdx.x % 32; i < d.D; i += 32) p[i] = 0.f;
}

template <int D>
__global__ void __launch_bounds__(kBwdThreads)
    mma_backward_kernel(AttnDims d, AttnView q, AttnView k, AttnView v, const int32_t* __restrict__ keep,
                        const float* __restrict__ lse, const float* __restrict__ delta, AttnView dout, AttnView dq,
                        AttnView dk, AttnView dv) {
  constexpr int Br = bwd_br<D>(), kThreads = kBwdThreads, kS = tile_stride<D>(), kSS = Br + 8;
  bf16* sK = reinterpret_cast<bf16*>(dynamic_smem());  // [Bc][kS]
  bf16* sV = sK + kBc * kS;                      // [Bc][kS]
  bf16* sQ = sV + kBc * kS;                      // [2][Br][kS]
  bf16* sdO = sQ + 2 * Br * kS;                  // [2][Br][kS]
  bf16* sdS = sdO + 2 * Br * kS;                 // [Bc][kSS], dS^T: row = key, column = query
  float* sL = reinterpret_cast<float*>(sdS + kBc * kSS);  // [2][Br] lse * log2e (+inf: row passes nothing)
  float* sDelta = sL + 2 * Br;                            // [2][Br]
  uint32_t* sKeep = reinterpret_cast<uint32_t*>(sDelta + 2 * Br);  // [2][kThreads] dropout keep words

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32, g = lane / 4, tq = lane % 4;
  const int k0 = blockIdx.y * kBc;  // the first key tiles (for causal, the costliest) start first
  const int64_t bh = blockIdx.x, b = bh / d.H, h = bh % d.H;
  const int Tq = int(d.Tq), Tk = int(d.Tk), offset = Tk - Tq;
  const int32_t* keep_b = keep ? keep + b * d.Tk : nullptr;
  const float* lg = lse + bh * d.Tq;
  const float* dg = delta + bh * d.Tq;

  // The queries that see some key of the block: from the first that sees key k0 (causal), to the
  // last whose window still holds the block's last key (query i's window holds key j while
  // i < j - offset + window).
  const int first_tile = d.causal ? max(0, k0 - offset) / Br : 0;
  const int qend =
      d.window > 0 ? int(max(int64_t(0), min(int64_t(Tq), int64_t(min(k0 + kBc, Tk) - 1 - offset) + d.window))) : Tq;
  const int ntiles = (qend + Br - 1) / Br;

  // Queries [i0, i0 + Br) into stage st: Q and dO tiles, lse and delta, with dropout the tile's
  // keep bits where the block can compute them together (plain stores, published by the barrier
  // that precedes their use).
  const bool tile_keep = d.dropout > 0.f && tile_keep_fits(d);
  auto load_queries = [&](int st, int i0) {
    load_tile<Br, D>(sQ + st * Br * kS, q, b, h, i0, Tq, tid, kThreads);
    load_tile<Br, D>(sdO + st * Br * kS, dout, b, h, i0, Tq, tid, kThreads);
    for (int r = tid; r < Br; r += kThreads) {
      const bool valid = i0 + r < Tq;
      const float L = valid ? lg[i0 + r] : -INFINITY;
      sL[st * Br + r] = L == -INFINITY ? INFINITY : L * kLog2e;
      sDelta[st * Br + r] = valid ? dg[i0 + r] : 0.f;
    }
    if (tile_keep) fill_tile_keep_words<Br, kThreads>(d, b, h, i0, k0, sKeep + st * kThreads, tid);
  };

  load_tile<kBc, D>(sK, k, b, h, k0, Tk, tid, kThreads);
  load_tile<kBc, D>(sV, v, b, h, k0, Tk, tid, kThreads);
  if (first_tile < ntiles) load_queries(0, first_tile * Br);

  const float scale_log2 = d.scale * kLog2e;
  float dk_acc[D / 8][4] = {}, dv_acc[D / 8][4] = {};
  const int kw = warp * 16;          // this warp's first key row within the tile
  const int key_base = k0 + kw + g;  // key of c0/c1; c2/c3 are key_base + 8
  // dq split: Br/16 row blocks x (4 / (Br/16)) column slices of D.
  constexpr int kRowBlocks = Br / 16, kColSplit = 4 / kRowBlocks, kQCols = D / kColSplit;
  const int dq_rb = warp % kRowBlocks, dq_c0 = (warp / kRowBlocks) * kQCols;

  for (int t = first_tile; t < ntiles; ++t) {
    const int st = (t - first_tile) & 1, i0 = t * Br;
    if (t + 1 < ntiles) load_queries(st ^ 1, i0 + Br);
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

    // dS^T (in sc), P^T*M (in dp). Element (key, query) = (key_base + 8*(e/2), i0 + 8nb + 2tq + e%2).
    // A masked weight gives exact zeros (its score is a constant -inf), whatever dP holds.
    const bool need_mask = keep != nullptr || k0 + kBc > Tk || (d.causal && k0 + kBc - 1 > i0 + offset) ||
                           (d.window > 0 && k0 <= i0 + Br - 1 + offset - d.window);
    uint32_t bits = 0xffffffffu;  // dropout keep bits (all kept without dropout)
    if (tile_keep) {
      bits = 0;
      const uint32_t* words = sKeep + st * kThreads;
#pragma unroll
      for (int nb = 0; nb < Br / 8; ++nb)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          if (tile_keep_bit<Br, kThreads>(words, nb * 8 + 2 * tq + e % 2, kw + g + (e / 2) * 8)) bits |= 1u << (4 * nb + e);
    } else if (d.dropout > 0.f) {
      bits = dropout_keep_bits<Br / 8, false>(d, b, h, i0 + 2 * tq, key_base);
    }
    const float kept = d.dropout > 0.f ? 1.f / (1.f - d.dropout) : 1.f;
#pragma unroll
    for (int nb = 0; nb < Br / 8; ++nb)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = key_base + (e / 2) * 8, qc = nb * 8 + 2 * tq + (e % 2);
        const bool hidden = need_mask && masked(d, keep_b, i0 + qc, key);
        const float p = hidden ? 0.f : exp2f(sc[nb][e] * scale_log2 - tL[qc]);
        const float mf = (bits >> (4 * nb + e)) & 1u ? kept : 0.f;
        sc[nb][e] = hidden ? 0.f : p * (dp[nb][e] * mf - tD[qc]) * d.scale;
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

    // dq[i0 + 16*dq_rb .. +15][dq_c0 .. + kQCols) += dS K over the 64 keys. A[query][key] = dS is
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
        if (qrow >= Tq) continue;
        float* dqrow = dq.row(b, h, qrow) + dq_c0;
#pragma unroll
        for (int nb = 0; nb < kQCols / 8; ++nb) atomic_add2(dqrow + nb * 8 + 2 * tq, dqa[nb][2 * r], dqa[nb][2 * r + 1]);
      }
    }
    __syncthreads();  // sdS and stage st are rewritten next iteration
  }

  // dK, dV of keys key_base and key_base + 8 (zeros when no query sees the tile).
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int key = key_base + 8 * r;
    if (key >= Tk) continue;
    float* dkrow = dk.row(b, h, key);
    float* dvrow = dv.row(b, h, key);
#pragma unroll
    for (int nb = 0; nb < D / 8; ++nb) {
      store2(dkrow + nb * 8 + 2 * tq, dk_acc[nb][2 * r], dk_acc[nb][2 * r + 1]);
      store2(dvrow + nb * 8 + 2 * tq, dv_acc[nb][2 * r], dv_acc[nb][2 * r + 1]);
    }
  }
}

// ---- launchers ----------------------------------------------------------------------------------
#ifndef ATTN_EMULATE

// Dynamic shared memory above 48 KB must be allowed per kernel on the current device; a cheap
// host call, made at each launch so that every device gets it.
template <typename Kernel>
void allow_smem(Kernel kernel, size_t bytes) {
  LR_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
}

template <int D>
void forward_d(const AttnDims& d, AttnView q, AttnView k, AttnView v, const int32_t* keep, AttnView out, float* lse) {
  constexpr int Br = 16 * kFwdWarps;
  constexpr size_t smem = forward_smem<D, kFwdWarps>();
  auto kernel = mma_forward_kernel<D, kFwdWarps>;
  allow_smem(kernel, smem);
  kernel<<<dim3(unsigned(d.B * d.H), unsigned((d.Tq + Br - 1) / Br)), kFwdWarps * 32, smem, current_stream()>>>(
      d, q, k, v, keep, out, lse);
  LR_CUDA_LAUNCH_CHECK("attention_forward_f32 (bf16 mma)");
}

template <int D>
void backward_d(const AttnDims& d, AttnView q, AttnView k, AttnView v, const int32_t* keep, const float* lse,
                const float* delta, AttnView dout, AttnView dq, AttnView dk, AttnView dv) {
  constexpr size_t smem = backward_smem<D>();
  auto kernel = mma_backward_kernel<D>;
  allow_smem(kernel, smem);
  kernel<<<dim3(unsigned(d.B * d.H), unsigned((d.Tk + kBc - 1) / kBc)), kBwdThreads, smem, current_stream()>>>(
      d, q, k, v, keep, lse, delta, dout, dq, dk, dv);
  LR_CUDA_LAUNCH_CHECK("attention_backward_f32 (bf16 mma)");
}

#endif  // ATTN_EMULATE
}  // namespace

#ifndef ATTN_EMULATE
bool mma_fits(const AttnDims& d, std::initializer_list<AttnView> views) {
  if (d.D != 64 && d.D != 128) return false;
  for (const AttnView& v : views)
    if (reinterpret_cast<uintptr_t>(v.data) % 16 || v.sb % 4 || v.sh % 4 || v.st % 4) return false;
  // int indices inside the kernels; grid.y of at most 65535 query (forward) or key (backward) tiles
  return d.B * d.H <= INT32_MAX && d.Tk <= INT32_MAX / 2 && (std::max(d.Tq, d.Tk) + 15) / 16 <= 65535;
}

void mma_forward(const AttnDims& d, AttnView q, AttnView k, AttnView v, const int32_t* keep, AttnView out, float* lse) {
  if (d.D == 64) forward_d<64>(d, q, k, v, keep, out, lse);
  else forward_d<128>(d, q, k, v, keep, out, lse);
}

void mma_backward(const AttnDims& d, AttnView q, AttnView k, AttnView v, const int32_t* keep, const float* lse,
                  const float* delta, AttnView dout, AttnView dq, AttnView dk, AttnView dv) {
  const int64_t qrows = d.B * d.H * d.Tq;
  if (qrows > 0) {
    zero_rows_kernel<<<unsigned((qrows + 7) / 8), 256, 0, current_stream()>>>(d, dq, d.Tq);
    LR_CUDA_LAUNCH_CHECK("attention_backward_f32 (bf16 mma, dq zeroed)");
  }
  if (d.D == 64) backward_d<64>(d, q, k, v, keep, lse, delta, dout, dq, dk, dv);
  else backward_d<128>(d, q, k, v, keep, lse, delta, dout, dq, dk, dv);
}
#endif  // ATTN_EMULATE

}  // namespace cuda
}  // namespace lowrank
