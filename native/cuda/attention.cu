// Attention on the GPU, twin of native/cpu/attention.cc. Two paths, chosen per call:
// - flash (D = 32, 64 or 128, 16-byte aligned rows): float32 SIMT flash attention, forward and
//   backward (dev/cuda/attention.cu's version 4, measured there): the scores of a tile of 32 keys
//   at a time in registers, an online softmax, O(T) memory, no T x T matrix. CUDA-core float32
//   arithmetic (no bf16/tf32 rounding), so it matches the CPU to float32 accuracy.
// - rows (any D): one block per query row (forward, dq) or per key row (dk, dv), a row of Tk
//   scores in shared memory; the fallback for other head sizes and unaligned views.
// Both recompute the probabilities in the backward from q, k and the saved lse. With
// AttnDims::precision BF16, D = 64 and 128 with aligned rows go to the bf16 tensor-core kernels
// of attention_mma.cu instead; other calls keep these float32 paths (more accurate than asked).
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <initializer_list>

#include "attention.cuh"
#include "common.cuh"
#include "reduce.cuh"

namespace lowrank {
namespace cuda {
namespace {

// The score of (query i, key j < visible): -inf for a masked key, else scale · q·k.
__device__ float masked_score(const AttnDims& d, const float* qi, const float* kj, bool padded) {
  if (padded) return -INFINITY;
  float s = 0;
  for (int64_t t = 0; t < d.D; ++t) s += qi[t] * kj[t];
  return s * d.scale;
}

// The probability from a score and its row's lse; a row with nothing to attend to (lse = -inf)
// has probability 0 everywhere.
__device__ float probability(float s, float lse) { return lse == -INFINITY ? 0.0f : expf(s - lse); }

// Dynamic shared memory: scores [Tk], then the query row [D].
__global__ void attention_forward_kernel(AttnDims d, AttnView q, AttnView k, AttnView v, const int32_t* keep, AttnView out,
                                         float* lse) {
  extern __shared__ float smem[];
  const int64_t row = blockIdx.x, i = row % d.Tq, bh = row / d.Tq, b = bh / d.H, h = bh % d.H;
  float* s = smem;
  float* qi = smem + d.Tk;
  const int64_t vis = visible_keys(d, i);
  for (int64_t t = threadIdx.x; t < d.D; t += blockDim.x) qi[t] = q.row(b, h, i)[t];
  __syncthreads();
  float m = -INFINITY;
  for (int64_t j = threadIdx.x; j < vis; j += blockDim.x) {
    s[j] = masked_score(d, qi, k.row(b, h, j), hidden_key(d, keep, b, i, j));
    m = nan_max(m, s[j]);
  }
  m = block_reduce(m, MaxOp(), -INFINITY);
  const bool empty = m == -INFINITY;  // every visible key masked: the output row is 0 (a NaN score makes m NaN, not empty)
  float z = 0;
  for (int64_t j = threadIdx.x; j < vis; j += blockDim.x) {
    s[j] = empty ? 0.0f : expf(s[j] - m);
    z += s[j];
  }
  z = block_reduce(z, SumOp(), 0.0f);
  if (d.dropout > 0) {
    for (int64_t j = threadIdx.x; j < vis; j += blockDim.x) s[j] *= drop_factor(d, b, h, i, j);
    __syncthreads();
  }
  // s is published by block_reduce's barrier (and, with dropout, the one above).
  for (int64_t t = threadIdx.x; t < d.D; t += blockDim.x) {
    float o = 0;
    for (int64_t j = 0; j < vis; ++j) o += s[j] * v.row(b, h, j)[t];
    out.row(b, h, i)[t] = empty ? 0.0f : o / z;
  }
  if (threadIdx.x == 0) lse[row] = empty ? -INFINITY : m + logf(z);
}

// Per query row: P, dP = (dO·vᵀ)·M (M: dropout factors), delta = rowsum(P·dP) / rowsum(P),
// dS = P·(dP - delta)·scale, dq = dS k. P recomputed from lse sums to 1 only within lse's rounding;
// dividing by its sum keeps a part of dP common to the row (values sharing a large component) out
// of dS exactly, instead of leaking in scaled by that rounding (native/cpu/attention.cc does the same).
// Saves delta for the key-row kernel. Shared: P then dS [Tk], dP [Tk], q row [D], dO row [D].
__global__ void attention_dq_kernel(AttnDims d, AttnView q, AttnView k, AttnView v, const int32_t* keep, const float* lse,
                                    AttnView dout, AttnView dq, float* delta) {
  extern __shared__ float smem[];
  const int64_t row = blockIdx.x, i = row % d.Tq, bh = row / d.Tq, b = bh / d.H, h = bh % d.H;
  float* ds = smem;
  float* dp = ds + d.Tk;
  float* qi = dp + d.Tk;
  float* gi = qi + d.D;
  const int64_t vis = visible_keys(d, i);
  for (int64_t t = threadIdx.x; t < d.D; t += blockDim.x) {
    qi[t] = q.row(b, h, i)[t];
    gi[t] = dout.row(b, h, i)[t];
  }
  __syncthreads();
  float acc = 0, p_sum = 0;
  for (int64_t j = threadIdx.x; j < vis; j += blockDim.x) {
    const float* vj = v.row(b, h, j);
    ds[j] = probability(masked_score(d, qi, k.row(b, h, j), hidden_key(d, keep, b, i, j)), lse[row]);
    float g = 0;
    for (int64_t t = 0; t < d.D; ++t) g += gi[t] * vj[t];
    dp[j] = g * drop_factor(d, b, h, i, j);
    acc += ds[j] * dp[j];
    p_sum += ds[j];
  }
  acc = block_reduce(acc, SumOp(), 0.0f);
  p_sum = block_reduce(p_sum, SumOp(), 0.0f);
  const float dl = p_sum > 0.0f ? acc / p_sum : 0.0f;
  // A masked key's score is a constant -inf: its gradient is exactly 0, even when P is NaN.
  for (int64_t j = threadIdx.x; j < vis; j += blockDim.x) ds[j] = hidden_key(d, keep, b, i, j) ? 0.0f : ds[j] * (dp[j] - dl) * d.scale;
  __syncthreads();
  for (int64_t t = threadIdx.x; t < d.D; t += blockDim.x) {
    float g = 0;
    for (int64_t j = 0; j < vis; ++j) g += ds[j] * k.row(b, h, j)[t];
    dq.row(b, h, i)[t] = g;
  }
  if (threadIdx.x == 0) delta[row] = dl;
}

// Per key row j: dv_j = sum_i P_ij M_ij dO_i, dk_j = sum_i dS_ij q_i over the queries that see key j,
// kThreads queries at a time (each thread one query's P and dS, then threads over D accumulate).
// Shared: k row [D], v row [D], dk and dv accumulators [D] each, P and dS of the tile.
__global__ void attention_dkdv_kernel(AttnDims d, AttnView q, AttnView k, AttnView v, const int32_t* keep, const float* lse,
                                      const float* delta, AttnView dout, AttnView dk, AttnView dv) {
  extern __shared__ float smem[];
  __shared__ float tile_p[kThreads], tile_ds[kThreads];
  const int64_t row = blockIdx.x, j = row % d.Tk, bh = row / d.Tk, b = bh / d.H, h = bh % d.H;
  float* kj = smem;
  float* vj = kj + d.D;
  float* acc_k = vj + d.D;
  float* acc_v = acc_k + d.D;
  for (int64_t t = threadIdx.x; t < d.D; t += blockDim.x) {
    kj[t] = k.row(b, h, j)[t];
    vj[t] = v.row(b, h, j)[t];
    acc_k[t] = acc_v[t] = 0.0f;
  }
  __syncthreads();
  // Causal: query i sees key j when Tk - Tq + i >= j.
  const int64_t i_begin = d.causal ? max(int64_t(0), j - (d.Tk - d.Tq)) : 0;
  for (int64_t i0 = i_begin; i0 < d.Tq; i0 += blockDim.x) {
    const int64_t i = i0 + threadIdx.x;
    float p = 0, dsv = 0;
    if (i < d.Tq) {
      const int64_t r = bh * d.Tq + i;
      const float* qi = q.row(b, h, i);
      const float* gi = dout.row(b, h, i);
      const bool hidden = hidden_key(d, keep, b, i, j);
      p = probability(masked_score(d, qi, kj, hidden), lse[r]);
      const float m = drop_factor(d, b, h, i, j);
      float dp = 0;
      for (int64_t t = 0; t < d.D; ++t) dp += gi[t] * vj[t];
      dsv = hidden ? 0.0f : p * (dp * m - delta[r]) * d.scale;  // a masked key's score is constant
      p *= m;  // dv takes the dropped weights
    }
    tile_p[threadIdx.x] = p;
    tile_ds[threadIdx.x] = dsv;
    __syncthreads();
    const int64_t n = min(int64_t(blockDim.x), d.Tq - i0);
    for (int64_t t = threadIdx.x; t < d.D; t += blockDim.x) {
      float ak = 0, av = 0;
      for (int64_t u = 0; u < n; ++u) {
        av += tile_p[u] * dout.row(b, h, i0 + u)[t];
        ak += tile_ds[u] * q.row(b, h, i0 + u)[t];
      }
      acc_k[t] += ak;
      acc_v[t] += av;
    }
    __syncthreads();
  }
  for (int64_t t = threadIdx.x; t < d.D; t += blockDim.x) {
    dk.row(b, h, j)[t] = acc_k[t];
    dv.row(b, h, j)[t] = acc_v[t];
  }
}

// ---- flash path -----------------------------------------------------------------------------
// Each query row (keys in dK/dV) is split over kSplit = D/32 adjacent lanes, each holding 32
// consecutive dims in registers; dot products are summed over those lanes with shuffles. 128
// threads, so 128/kSplit rows per block. The other side comes in tiles of 32 rows through shared
// memory, each 32-dim chunk padded by 4 floats so the kSplit lanes' float4 reads of one row hit
// different banks. Scores are kept in base 2 (q pre-scaled by scale·log2(e)) for exp2f.
//
// NaN: a masked (causal, windowed, padded) key's weight is skipped, never multiplied in as 0·x, so a NaN
// in a key or value a query cannot see stays out of that query's output and gradients; a NaN
// score is not a mask and spreads through the row's normalizer, output, lse and gradients.

constexpr int kFlashThreads = 128, kFlashTile = 32;
template <int D> __host__ __device__ constexpr int flash_stride() { return D + 4 * (D / 32); }
template <int D> __host__ __device__ constexpr int flash_rows() { return kFlashThreads / (D / 32); }

// Rows [row0, row0 + 32) of head (b, h) of a view into a padded tile; rows >= nrows are 0.
template <int D>
__device__ __forceinline__ void flash_load_tile(float* dst, const AttnView& src, int64_t b, int64_t h, int64_t row0,
                                                int64_t nrows, int tid) {
  for (int c = tid; c < kFlashTile * D / 4; c += kFlashThreads) {
    const int r = c / (D / 4), d = (c % (D / 4)) * 4;
    float4 x = make_float4(0.f, 0.f, 0.f, 0.f);
    if (row0 + r < nrows) x = *reinterpret_cast<const float4*>(src.row(b, h, row0 + r) + d);
    *reinterpret_cast<float4*>(dst + r * flash_stride<D>() + d + 4 * (d / 32)) = x;
  }
}

// a . b over one lane's 32 dims (b: 32 consecutive floats in shared memory, 16-byte aligned).
__device__ __forceinline__ float dot32(const float (&a)[32], const float* b) {
  float acc = 0.f;
#pragma unroll
  for (int d = 0; d < 32; d += 4) {
    const float4 y = *reinterpret_cast<const float4*>(b + d);
    acc += a[d] * y.x + a[d + 1] * y.y + a[d + 2] * y.z + a[d + 3] * y.w;
  }
  return acc;
}

// acc += w · b over one lane's 32 dims.
__device__ __forceinline__ void axpy32(float (&acc)[32], float w, const float* b) {
#pragma unroll
  for (int d = 0; d < 32; d += 4) {
    const float4 y = *reinterpret_cast<const float4*>(b + d);
    acc[d] += w * y.x;
    acc[d + 1] += w * y.y;
    acc[d + 2] += w * y.z;
    acc[d + 3] += w * y.w;
  }
}

template <int kSplit> __device__ __forceinline__ float split_sum(float x) {
#pragma unroll
  for (int o = 1; o < kSplit; o *= 2) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// Dropout keep bits of 32 weights: bit x for query i0 + x·di, key j0 + x·dj. The loop stays rolled
// so the Philox rounds cost registers once, not once per weight.
__device__ uint32_t keep_bits32(const AttnDims& d, int64_t b, int64_t h, int64_t i0, int di, int64_t j0, int dj) {
  uint32_t bits = 0;
#pragma unroll 1
  for (int x = 0; x < 32; ++x) {
    const int64_t i = i0 + x * di, j = j0 + x * dj;
    if (i < d.Tq && j < d.Tk && drop_factor(d, b, h, i, j) != 0.f) bits |= 1u << x;
  }
  return bits;
}

// Grid (B·H, ceil(Tq / Rows)), the last query blocks (most keys when causal) first.
template <int D>
__global__ void __launch_bounds__(kFlashThreads)
    flash_forward_kernel(AttnDims d, AttnView q, AttnView k, AttnView v, const int32_t* __restrict__ keep, AttnView out,
                         float* __restrict__ lse) {
  constexpr int kSplit = D / 32, Rows = flash_rows<D>(), kS = flash_stride<D>();
  extern __shared__ __align__(16) unsigned char flash_smem[];
  float* sK = reinterpret_cast<float*>(flash_smem);
  float* sV = sK + kFlashTile * kS;
  const int tid = threadIdx.x, r = tid / kSplit, cb = (tid % kSplit) * 36;  // cb: this lane's chunk in a tile row
  const int64_t bh = blockIdx.x, b = bh / d.H, h = bh % d.H;
  const int64_t q0 = int64_t(gridDim.y - 1 - blockIdx.y) * Rows, row = q0 + r;
  const bool live = row < d.Tq;
  const int32_t* keep_b = keep ? keep + b * d.Tk : nullptr;
  const float scale_log2 = d.scale * kLog2e;
  float qr[32], acc[32];
  const float* qrow = q.row(b, h, live ? row : 0) + (tid % kSplit) * 32;
#pragma unroll
  for (int t = 0; t < 32; ++t) {
    qr[t] = live ? qrow[t] * scale_log2 : 0.f;
    acc[t] = 0.f;
  }
  float m = -INFINITY, l = 0.f;
  const int64_t kend = d.causal ? min(d.Tk, q0 + Rows + d.Tk - d.Tq) : d.Tk;
  const float kept = d.dropout > 0.f ? 1.f / (1.f - d.dropout) : 1.f;
  for (int64_t k0 = window_start(d, q0); k0 < kend; k0 += kFlashTile) {
    __syncthreads();  // the previous tile is no longer read
    flash_load_tile<D>(sK, k, b, h, k0, d.Tk, tid);
    flash_load_tile<D>(sV, v, b, h, k0, d.Tk, tid);
    __syncthreads();
    float sc[kFlashTile];
    float mx = -INFINITY;  // fmaxf skips a NaN score; it reaches l and acc through exp2f below
#pragma unroll
    for (int j = 0; j < kFlashTile; ++j) {
      const float x = split_sum<kSplit>(dot32(qr, sK + j * kS + cb));
      sc[j] = k0 + j < d.Tk && key_visible(d, keep_b, row, k0 + j) ? x : -INFINITY;
      mx = fmaxf(mx, sc[j]);
    }
    const float m_new = fmaxf(m, mx), base = m_new == -INFINITY ? 0.f : m_new, alpha = exp2f(m - base);
    m = m_new;
    l *= alpha;
#pragma unroll
    for (int t = 0; t < 32; ++t) acc[t] *= alpha;
    const uint32_t bits = d.dropout > 0.f ? keep_bits32(d, b, h, row, 0, k0, 1) : 0xffffffffu;
#pragma unroll
    for (int j = 0; j < kFlashTile; ++j) {
      if (sc[j] == -INFINITY) continue;  // masked: weight exactly 0
      const float p = exp2f(sc[j] - base);
      l += p;  // the normalizer counts the weights before dropout
      axpy32(acc, (bits >> j) & 1u ? p * kept : 0.f, sV + j * kS + cb);
    }
  }
  if (live) {
    const float inv = l == 0.f ? 0.f : 1.f / l;  // l = 0: nothing visible, the row is 0; NaN stays NaN
    float* orow = out.row(b, h, row) + (tid % kSplit) * 32;
#pragma unroll
    for (int t = 0; t < 32; ++t) orow[t] = acc[t] * inv;
    if (tid % kSplit == 0) lse[bh * d.Tq + row] = l == 0.f ? -INFINITY : m * kLn2 + logf(l);
  }
}

// delta_i = dO_i · O_i (= rowsum(P ∘ M ∘ dP)), one warp per query row.
__global__ void flash_delta_kernel(AttnDims d, AttnView out, AttnView dout, float* __restrict__ delta) {
  const int64_t row = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  if (row >= d.B * d.H * d.Tq) return;
  const int64_t i = row % d.Tq, bh = row / d.Tq, b = bh / d.H, h = bh % d.H;
  const float *o = out.row(b, h, i), *g = dout.row(b, h, i);
  float acc = 0.f;
  for (int64_t t = threadIdx.x % 32; t < d.D; t += 32) acc += o[t] * g[t];
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  if (threadIdx.x % 32 == 0) delta[row] = acc;
}

// dQ_i = sum_j dS_ij k_j with dS_ij = P_ij (M_ij dO_i·v_j - delta_i) · scale, one query row per
// kSplit lanes over the key tiles. Grid as the forward.
template <int D>
__global__ void __launch_bounds__(kFlashThreads)
    flash_dq_kernel(AttnDims d, AttnView q, AttnView k, AttnView v, const int32_t* __restrict__ keep,
                    const float* __restrict__ lse, const float* __restrict__ delta, AttnView dout, AttnView dq) {
  constexpr int kSplit = D / 32, Rows = flash_rows<D>(), kS = flash_stride<D>();
  extern __shared__ __align__(16) unsigned char flash_smem[];
  float* sK = reinterpret_cast<float*>(flash_smem);
  float* sV = sK + kFlashTile * kS;
  const int tid = threadIdx.x, r = tid / kSplit, cb = (tid % kSplit) * 36;
  const int64_t bh = blockIdx.x, b = bh / d.H, h = bh % d.H;
  const int64_t q0 = int64_t(gridDim.y - 1 - blockIdx.y) * Rows, row = q0 + r;
  const bool live = row < d.Tq;
  const int64_t ri = bh * d.Tq + (live ? row : 0);
  const int32_t* keep_b = keep ? keep + b * d.Tk : nullptr;
  const float scale_log2 = d.scale * kLog2e;
  const float L = live ? lse[ri] : -INFINITY;
  const float Lx = L == -INFINITY ? INFINITY : L * kLog2e;  // +inf: the row passes no gradient
  const float dl = live ? delta[ri] : 0.f;
  float qr[32], gr[32], acc[32];
  const float* qrow = q.row(b, h, live ? row : 0) + (tid % kSplit) * 32;
  const float* grow = dout.row(b, h, live ? row : 0) + (tid % kSplit) * 32;
#pragma unroll
  for (int t = 0; t < 32; ++t) {
    qr[t] = live ? qrow[t] * scale_log2 : 0.f;
    gr[t] = live ? grow[t] : 0.f;
    acc[t] = 0.f;
  }
  const float kept = d.dropout > 0.f ? 1.f / (1.f - d.dropout) : 1.f;
  const int64_t kend = d.causal ? min(d.Tk, q0 + Rows + d.Tk - d.Tq) : d.Tk;
  for (int64_t k0 = window_start(d, q0); k0 < kend; k0 += kFlashTile) {
    __syncthreads();
    flash_load_tile<D>(sK, k, b, h, k0, d.Tk, tid);
    flash_load_tile<D>(sV, v, b, h, k0, d.Tk, tid);
    __syncthreads();
    const uint32_t bits = d.dropout > 0.f ? keep_bits32(d, b, h, row, 0, k0, 1) : 0xffffffffu;
#pragma unroll 4
    for (int j = 0; j < kFlashTile; ++j) {
      const float* kj = sK + j * kS + cb;
      const float sx = split_sum<kSplit>(dot32(qr, kj));
      const float dp = split_sum<kSplit>(dot32(gr, sV + j * kS + cb));
      if (!live || k0 + j >= d.Tk || !key_visible(d, keep_b, row, k0 + j)) continue;  // a masked score's gradient is 0
      const float p = exp2f(sx - Lx);
      axpy32(acc, p * (dp * ((bits >> j) & 1u ? kept : 0.f) - dl) * d.scale, kj);
    }
  }
  if (live) {
    float* dqrow = dq.row(b, h, row) + (tid % kSplit) * 32;
#pragma unroll
    for (int t = 0; t < 32; ++t) dqrow[t] = acc[t];
  }
}

// dK_j = sum_i dS_ij q_i, dV_j = sum_i P_ij M_ij dO_i, one key row per kSplit lanes over the query
// tiles that see the block's keys. Grid (B·H, ceil(Tk / Rows)). Shared: the q and dO tiles, then
// [32] lse·log2(e) (+inf for rows that pass nothing) and [32] delta.
template <int D>
__global__ void __launch_bounds__(kFlashThreads)
    flash_dkdv_kernel(AttnDims d, AttnView q, AttnView k, AttnView v, const int32_t* __restrict__ keep,
                      const float* __restrict__ lse, const float* __restrict__ delta, AttnView dout, AttnView dk,
                      AttnView dv) {
  constexpr int kSplit = D / 32, Rows = flash_rows<D>(), kS = flash_stride<D>();
  extern __shared__ __align__(16) unsigned char flash_smem[];
  float* sQ = reinterpret_cast<float*>(flash_smem);
  float* sG = sQ + kFlashTile * kS;
  float* sL = sG + kFlashTile * kS;
  float* sD = sL + kFlashTile;
  const int tid = threadIdx.x, r = tid / kSplit, cb = (tid % kSplit) * 36;
  const int64_t bh = blockIdx.x, b = bh / d.H, h = bh % d.H;
  const int64_t k0 = int64_t(blockIdx.y) * Rows, key = k0 + r, shift = d.Tk - d.Tq;
  const int32_t* keep_b = keep ? keep + b * d.Tk : nullptr;
  const bool dead = key >= d.Tk || (keep_b && keep_b[key] == 0);  // passes and receives nothing
  const float scale_log2 = d.scale * kLog2e;
  float kr[32], vr[32], ak[32], av[32];
  const float* krow = k.row(b, h, key < d.Tk ? key : 0) + (tid % kSplit) * 32;
  const float* vrow = v.row(b, h, key < d.Tk ? key : 0) + (tid % kSplit) * 32;
#pragma unroll
  for (int t = 0; t < 32; ++t) {
    kr[t] = dead ? 0.f : krow[t] * scale_log2;
    vr[t] = dead ? 0.f : vrow[t];
    ak[t] = av[t] = 0.f;
  }
  const float kept = d.dropout > 0.f ? 1.f / (1.f - d.dropout) : 1.f;
  // Causal: query i sees key j when i >= j - shift; the block's first key is k0. With a window,
  // key j is seen by queries i < j + window - shift; the block's last key is k0 + Rows - 1.
  const int64_t iend = d.window > 0 ? min(d.Tq, k0 + Rows - 1 + d.window - shift) : d.Tq;
  for (int64_t i0 = d.causal ? max(int64_t(0), k0 - shift) : 0; i0 < iend; i0 += kFlashTile) {
    __syncthreads();
    flash_load_tile<D>(sQ, q, b, h, i0, d.Tq, tid);
    flash_load_tile<D>(sG, dout, b, h, i0, d.Tq, tid);
    if (tid < kFlashTile) {
      const bool valid = i0 + tid < d.Tq;
      const float L = valid ? lse[bh * d.Tq + i0 + tid] : -INFINITY;
      sL[tid] = L == -INFINITY ? INFINITY : L * kLog2e;
      sD[tid] = valid ? delta[bh * d.Tq + i0 + tid] : 0.f;
    }
    __syncthreads();
    const uint32_t bits = d.dropout > 0.f ? keep_bits32(d, b, h, i0, 1, key, 0) : 0xffffffffu;
#pragma unroll 2
    for (int i = 0; i < kFlashTile; ++i) {
      const float* qi = sQ + i * kS + cb;
      const float* gi = sG + i * kS + cb;
      const float sx = split_sum<kSplit>(dot32(kr, qi));
      const float dp = split_sum<kSplit>(dot32(vr, gi));
      if (dead || i0 + i >= d.Tq || !key_visible(d, nullptr, i0 + i, key)) continue;  // padding is in dead
      const float p = exp2f(sx - sL[i]);
      const float mf = (bits >> i) & 1u ? kept : 0.f;
      axpy32(av, p * mf, gi);
      axpy32(ak, p * (dp * mf - sD[i]) * d.scale, qi);
    }
  }
  if (key < d.Tk) {
    float* dkrow = dk.row(b, h, key) + (tid % kSplit) * 32;
    float* dvrow = dv.row(b, h, key) + (tid % kSplit) * 32;
#pragma unroll
    for (int t = 0; t < 32; ++t) {
      dkrow[t] = ak[t];
      dvrow[t] = av[t];
    }
  }
}

// The flash path takes D = 32, 64, 128 and views whose rows start 16-byte aligned (float4 loads).
bool flash_fits(const AttnDims& d, std::initializer_list<AttnView> views) {
  if (d.D != 32 && d.D != 64 && d.D != 128) return false;
  for (const AttnView& v : views)
    if (reinterpret_cast<uintptr_t>(v.data) % 16 || v.sb % 4 || v.sh % 4 || v.st % 4) return false;
  const int64_t rows = kFlashThreads / (d.D / 32), blocks = (std::max(d.Tq, d.Tk) + rows - 1) / rows;
  return d.B * d.H <= INT32_MAX && blocks <= 65535;
}

template <int D>
void flash_forward(const AttnDims& d, AttnView q, AttnView k, AttnView v, const int32_t* keep, AttnView out, float* lse) {
  constexpr int Rows = flash_rows<D>();
  const size_t smem = 2 * kFlashTile * flash_stride<D>() * sizeof(float);
  flash_forward_kernel<D><<<dim3(unsigned(d.B * d.H), unsigned((d.Tq + Rows - 1) / Rows)), kFlashThreads, smem,
                            current_stream()>>>(d, q, k, v, keep, out, lse);
  LR_CUDA_LAUNCH_CHECK("attention_forward_f32 (flash)");
}

template <int D>
void flash_backward(const AttnDims& d, AttnView q, AttnView k, AttnView v, const int32_t* keep, const float* lse,
                    const float* delta, AttnView dout, AttnView dq, AttnView dk, AttnView dv) {
  constexpr int Rows = flash_rows<D>();
  const size_t smem = 2 * kFlashTile * flash_stride<D>() * sizeof(float);
  cudaStream_t stream = current_stream();
  if (d.Tq > 0) {
    flash_dq_kernel<D><<<dim3(unsigned(d.B * d.H), unsigned((d.Tq + Rows - 1) / Rows)), kFlashThreads, smem, stream>>>(
        d, q, k, v, keep, lse, delta, dout, dq);
    LR_CUDA_LAUNCH_CHECK("attention_backward_f32 (flash dq)");
  }
  flash_dkdv_kernel<D><<<dim3(unsigned(d.B * d.H), unsigned((d.Tk + Rows - 1) / Rows)), kFlashThreads,
                         smem + 2 * kFlashTile * sizeof(float), stream>>>(d, q, k, v, keep, lse, delta, dout, dk, dv);
  LR_CUDA_LAUNCH_CHECK("attention_backward_f32 (flash dk, dv)");
}

size_t checked_smem(int64_t floats, const char* op) {
  const size_t bytes = size_t(floats) * sizeof(float);
  if (bytes > 48 * 1024)
    throw std::runtime_error(std::string(op) + ": this CUDA kernel keeps a row of Tk scores in shared memory (48 KB): " +
                             "2·(Tk + D) must stay below 12288");
  return bytes;
}

}  // namespace

void attention_forward_f32(const AttnDims& d, AttnView q, AttnView k, AttnView v, const int32_t* key_keep, AttnView out,
                           float* lse) {
  const int64_t rows = d.B * d.H * d.Tq;
  if (rows == 0) return;
  if (d.precision == DType::BF16 && mma_fits(d, {q, k, v, out})) return mma_forward(d, q, k, v, key_keep, out, lse);
  if (flash_fits(d, {q, k, v, out})) {
    if (d.D == 32) return flash_forward<32>(d, q, k, v, key_keep, out, lse);
    if (d.D == 64) return flash_forward<64>(d, q, k, v, key_keep, out, lse);
    return flash_forward<128>(d, q, k, v, key_keep, out, lse);
  }
  const size_t smem = checked_smem(d.Tk + d.D, "attention_forward_f32");
  attention_forward_kernel<<<unsigned(rows), kThreads, smem, current_stream()>>>(d, q, k, v, key_keep, out, lse);
  LR_CUDA_LAUNCH_CHECK("attention_forward_f32");
}

void attention_backward_f32(const AttnDims& d, AttnView q, AttnView k, AttnView v, const int32_t* key_keep, const float* lse,
                            AttnView out, AttnView dout, AttnView dq, AttnView dk, AttnView dv) {
  const int64_t qrows = d.B * d.H * d.Tq, krows = d.B * d.H * d.Tk;
  if (krows == 0) return;
  cudaStream_t stream = current_stream();
  float* delta = scratch<float>(size_t(qrows > 0 ? qrows : 1));
  const bool mma = d.precision == DType::BF16 && mma_fits(d, {q, k, v, dout, dq, dk, dv});
  if (mma || flash_fits(d, {q, k, v, dout, dq, dk, dv})) {
    if (qrows > 0) {
      flash_delta_kernel<<<unsigned((qrows + 7) / 8), 256, 0, stream>>>(d, out, dout, delta);
      LR_CUDA_LAUNCH_CHECK("attention_backward_f32 (flash delta)");
    }
    if (mma) mma_backward(d, q, k, v, key_keep, lse, delta, dout, dq, dk, dv);
    else if (d.D == 32) flash_backward<32>(d, q, k, v, key_keep, lse, delta, dout, dq, dk, dv);
    else if (d.D == 64) flash_backward<64>(d, q, k, v, key_keep, lse, delta, dout, dq, dk, dv);
    else flash_backward<128>(d, q, k, v, key_keep, lse, delta, dout, dq, dk, dv);
    release(delta);
    return;
  }
  if (qrows > 0) {
    const size_t smem = checked_smem(2 * (d.Tk + d.D), "attention_backward_f32");
    attention_dq_kernel<<<unsigned(qrows), kThreads, smem, stream>>>(d, q, k, v, key_keep, lse, dout, dq, delta);
    LR_CUDA_LAUNCH_CHECK("attention_backward_f32 (dq)");
  }
  attention_dkdv_kernel<<<unsigned(krows), kThreads, checked_smem(4 * d.D, "attention_backward_f32"), stream>>>(
      d, q, k, v, key_keep, lse, delta, dout, dk, dv);
  LR_CUDA_LAUNCH_CHECK("attention_backward_f32 (dk, dv)");
  release(delta);
}

}  // namespace cuda
}  // namespace lowrank
