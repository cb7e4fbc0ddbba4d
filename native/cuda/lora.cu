// The fused LoRA forward and backward and the merge on the GPU (native/ops/lora.h), twin of
// native/cpu/lora.cc.
//
// The factor products are thin (r of a few dozen at most): passes over x, g and the outputs with r
// multiply-adds per element, bound by memory and, with dropout, by the Philox evaluations, never by
// the FP32 units. So they are hand-written passes, one per product, with the mask applied in
// registers (no mask tensor, no masked copy of x), instead of GEMMs tuned for large tiles.
// Ranks are taken kRank = 16 at a time (a tile of u, v, rows of A and of Bᵀ); larger ranks loop
// over tiles, each re-reading its input (from L2 when it fits).
//   forward   Bt = Bᵀ                          (r×d: every factor read runs along a row)
//             u = drop(x)·Aᵀ                  lora_down_kernel: a warp per 4 rows of x, lanes across k
//             out = y + s·u·Bᵀ                lora_up_kernel:   a warp per 4 rows of out, lanes across d
//   backward  v = g·B = g·Btᵀ                 lora_down_kernel over g
//             gx = s·(v·A) ⊙ mask/(1-p)        lora_up_kernel, masked
//             the slabs' partial sums of vᵀ·drop(x)   lora_rows_grad_kernel over x (the mask again)
//             the slabs' partial sums of uᵀ·g  lora_rows_grad_kernel over g
//             gA, gB = s·(partials added in slab order)   (lora_sum_partials_kernel; gB transposed)
//   merge     W += s·B·A (or its transpose), in place       lora_merge_kernel: W read and written once
// The slabs are fixed by the shapes alone, so gA and gB do not depend on the GPU.
//
// Dropout (core/philox.h): each lane takes its columns the way the stream groups its elements —
// lane l of a half-warp takes columns l, l+16, l+32 and l+48 of a 64-column group — so that one
// Philox block gives all four decisions whenever the row's groups line up with the stream's
// (every row when k is a multiple of 64; otherwise the lane evaluates four blocks).
#include <cstdint>

#include "../core/philox.h"
#include "../ops/lora.h"
#include "common.cuh"

namespace lowrank {
namespace cuda {
namespace {

constexpr int kRank = 16;        // rank columns per launch
constexpr int kRowsPerWarp = 4;  // rows a warp of lora_down/lora_up takes
constexpr int kWarps = 4;
constexpr int kBlock = 32 * kWarps;
constexpr int kStep = 128;      // columns a warp covers per step: 2 half-warps × 64
constexpr int kSlabBlocks = 512;  // lora_rows_grad_kernel's blocks to aim for (with the column steps): ~4 per SM
constexpr int kMinSlabRows = 32;

struct Dropout {
  float p, scale;  // drop probability; the kept elements' multiplier 1/(1-p)
  uint64_t seed, offset;
};

// A lane's first column in each step: columns are step + lane_column() + 16·w, w = 0..3.
__device__ __forceinline__ int64_t lane_column() {
  const int lane = threadIdx.x & 31;
  return 64 * (lane >> 4) + (lane & 15);
}

// The first step's column: with dropout, row 0's 64-column groups start on the stream's groups.
__host__ __device__ __forceinline__ int64_t first_step(bool masked, uint64_t offset) {
  return masked ? -int64_t(offset & 63) : 0;
}

// Dropout's multipliers (scale or 0) for row i's columns c, c+16, c+32, c+48 of a [rows, cols]
// operand (stream element i·cols + c). Columns outside the row get a decision that is not used.
__device__ __forceinline__ void keep4(const Dropout& m, int64_t i, int64_t cols, int64_t c, float mult[4]) {
  const uint64_t j = m.offset + uint64_t(i * cols + c);
  if ((j & 63) < 16) {
    const Philox4 b = philox_keep_block(m.seed, j);
#pragma unroll
    for (int w = 0; w < 4; ++w) mult[w] = philox_unit(b.v[w]) >= m.p ? m.scale : 0.0f;
  } else {
#pragma unroll
    for (int w = 0; w < 4; ++w) mult[w] = philox_keep(m.seed, 0, j + 16 * w, m.p) ? m.scale : 0.0f;
  }
}

__device__ __forceinline__ bool in_row(int64_t c, int64_t cols) { return c >= 0 && c < cols; }

// Row i of x [.., K] at the lane's columns c + 16·w (0 outside the row, or everywhere when !valid),
// times dropout's multipliers when kMasked.
template <bool kMasked>
__device__ __forceinline__ void load_lane_row(const float* __restrict__ x, int64_t i, bool valid, int64_t K, int64_t c,
                                              const Dropout& m, float (&v)[4]) {
#pragma unroll
  for (int w = 0; w < 4; ++w) v[w] = valid && in_row(c + 16 * w, K) ? x[i * K + c + 16 * w] : 0.0f;
  if constexpr (kMasked) {
    if (!valid) return;
    float mult[4];
    keep4(m, i, K, c, mult);
#pragma unroll
    for (int w = 0; w < 4; ++w) v[w] *= mult[w];
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

// u[i, j] = Σ_c drop(x)[i, c]·f[j, c]   x [N, K], f [rt, K] (rt ≤ kRank), u's rows ld apart.
// A warp takes 4 rows; its lanes sum their own columns, then the warp adds the lanes' sums.
template <bool kMasked>
__global__ void __launch_bounds__(kBlock) lora_down_kernel(const float* __restrict__ x, int64_t N, int64_t K,
                                                           const float* __restrict__ f, int rt, float* __restrict__ u,
                                                           int64_t ldu, Dropout m) {
  const int64_t row0 = (int64_t(blockIdx.x) * kWarps + threadIdx.x / 32) * kRowsPerWarp;
  if (row0 >= N) return;  // the whole warp
  float acc[kRowsPerWarp * kRank] = {};  // [row * kRank + j]
  for (int64_t step = first_step(kMasked, m.offset); step < K; step += kStep) {
    const int64_t c = step + lane_column();
    float xv[kRowsPerWarp][4];
#pragma unroll
    for (int rr = 0; rr < kRowsPerWarp; ++rr) load_lane_row<kMasked>(x, row0 + rr, row0 + rr < N, K, c, m, xv[rr]);
#pragma unroll
    for (int j = 0; j < kRank; ++j) {
      if (j >= rt) break;
      float fv[4];
#pragma unroll
      for (int w = 0; w < 4; ++w) fv[w] = in_row(c + 16 * w, K) ? __ldg(f + j * K + c + 16 * w) : 0.0f;
#pragma unroll
      for (int rr = 0; rr < kRowsPerWarp; ++rr)
#pragma unroll
        for (int w = 0; w < 4; ++w) acc[rr * kRank + j] = fmaf(xv[rr][w], fv[w], acc[rr * kRank + j]);
    }
  }
  reduce_across_lanes(acc);
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int t = 0; t < 2; ++t) {
    const int idx = 2 * lane + t, rr = idx / kRank, j = idx % kRank;
    if (row0 + rr < N && j < rt) u[(row0 + rr) * ldu + j] = acc[t];
  }
}

// out[i, c] = y[i, c] + mask(s·Σ_j u[i, j]·f[j, c])   u [N, rt] (rows ld apart), f [rt, K], out [N, K];
// y may be out or null (0); the mask is dropout's multipliers of element i·K + c when kMasked (the
// input gradient), else 1. A warp takes 4 rows, its lanes across the columns.
template <bool kMasked>
__global__ void __launch_bounds__(kBlock) lora_up_kernel(const float* __restrict__ u, int64_t ldu, int rt,
                                                         const float* __restrict__ f, const float* y, float* out, int64_t N,
                                                         int64_t K, float s, Dropout m) {
  const int64_t row0 = (int64_t(blockIdx.x) * kWarps + threadIdx.x / 32) * kRowsPerWarp;
  if (row0 >= N) return;
  float ur[kRowsPerWarp][kRank];
#pragma unroll
  for (int rr = 0; rr < kRowsPerWarp; ++rr)
#pragma unroll
    for (int j = 0; j < kRank; ++j) ur[rr][j] = row0 + rr < N && j < rt ? u[(row0 + rr) * ldu + j] : 0.0f;
  for (int64_t step = first_step(kMasked, m.offset); step < K; step += kStep) {
    const int64_t c = step + lane_column();
    // y first: its loads are in flight while the products run
    float yv[kRowsPerWarp][4];
#pragma unroll
    for (int rr = 0; rr < kRowsPerWarp; ++rr)
#pragma unroll
      for (int w = 0; w < 4; ++w) yv[rr][w] = y && row0 + rr < N && in_row(c + 16 * w, K) ? y[(row0 + rr) * K + c + 16 * w] : 0.0f;
    float o[kRowsPerWarp][4] = {};
#pragma unroll
    for (int j = 0; j < kRank; ++j) {
      if (j >= rt) break;
      float fv[4];
#pragma unroll
      for (int w = 0; w < 4; ++w) fv[w] = in_row(c + 16 * w, K) ? __ldg(f + j * K + c + 16 * w) : 0.0f;
#pragma unroll
      for (int rr = 0; rr < kRowsPerWarp; ++rr)
#pragma unroll
        for (int w = 0; w < 4; ++w) o[rr][w] = fmaf(ur[rr][j], fv[w], o[rr][w]);
    }
#pragma unroll
    for (int rr = 0; rr < kRowsPerWarp; ++rr) {
      const int64_t i = row0 + rr;
      if (i >= N) break;
      float mult[4] = {1.0f, 1.0f, 1.0f, 1.0f};
      if constexpr (kMasked) keep4(m, i, K, c, mult);
#pragma unroll
      for (int w = 0; w < 4; ++w)
        if (in_row(c + 16 * w, K)) out[i * K + c + 16 * w] = yv[rr][w] + s * o[rr][w] * mult[w];
    }
  }
}

// partial[slab, j, c] = Σ_{i in slab} v[i, j]·drop(x)[i, c] (j < rt) for slab blockIdx.y of slab_rows
// rows and the kStep columns of step blockIdx.x. v [N, rt] (rows ld apart), x [N, K], partial
// [slabs, kRank, K]. The block's 4 warps take every 4th row of the slab, each 4 rows at a time (their
// loads issued together); warp 0 adds the warps' sums.
template <bool kMasked>
__global__ void __launch_bounds__(kBlock) lora_rows_grad_kernel(const float* __restrict__ v, int64_t ldv, int rt,
                                                                const float* __restrict__ x, int64_t N, int64_t K, Dropout m,
                                                                int64_t slab_rows, float* __restrict__ partial) {
  __shared__ float others[kWarps - 1][4 * kRank][32];  // warps 1..3's sums, lane-minor (no bank conflicts)
  const int warp = threadIdx.x / 32, lane = threadIdx.x & 31;
  const int64_t c = first_step(kMasked, m.offset) + int64_t(blockIdx.x) * kStep + lane_column();
  const int64_t i0 = int64_t(blockIdx.y) * slab_rows, i1 = i0 + slab_rows < N ? i0 + slab_rows : N;
  float acc[4 * kRank] = {};  // [j * 4 + w]
  for (int64_t i = i0 + warp; i < i1; i += kWarps * kRowsPerWarp) {
    float xv[kRowsPerWarp][4];
#pragma unroll
    for (int rr = 0; rr < kRowsPerWarp; ++rr) load_lane_row<kMasked>(x, i + kWarps * rr, i + kWarps * rr < i1, K, c, m, xv[rr]);
#pragma unroll
    for (int rr = 0; rr < kRowsPerWarp; ++rr) {
      const int64_t ii = i + kWarps * rr;
      if (ii >= i1) break;
#pragma unroll
      for (int j = 0; j < kRank; ++j) {
        const float vj = j < rt ? __ldg(v + ii * ldv + j) : 0.0f;
#pragma unroll
        for (int w = 0; w < 4; ++w) acc[j * 4 + w] = fmaf(vj, xv[rr][w], acc[j * 4 + w]);
      }
    }
  }
  if (warp > 0) {
#pragma unroll
    for (int t = 0; t < 4 * kRank; ++t) others[warp - 1][t][lane] = acc[t];
  }
  __syncthreads();
  if (warp != 0) return;
#pragma unroll
  for (int t = 0; t < 4 * kRank; ++t) {
    const int j = t / 4, w = t % 4;
    const float sum = acc[t] + others[0][t][lane] + others[1][t][lane] + others[2][t][lane];
    const int64_t cw = c + 16 * w;
    if (j < rt && in_row(cw, K)) partial[(int64_t(blockIdx.y) * kRank + j) * K + cw] = sum;
  }
}

// out[j, c] (transposed: out[c, j]) = s·Σ_slab partial[slab, j, c] over the slabs in order; rows ld apart.
__global__ void lora_sum_partials_kernel(const float* __restrict__ partial, int64_t slabs, int rt, int64_t K, float s,
                                         float* __restrict__ out, int64_t ld, bool transposed) {
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= rt * K) return;
  const int64_t j = idx / K, c = idx % K;
  float sum = 0.0f;
  for (int64_t q = 0; q < slabs; ++q) sum += partial[(q * kRank + j) * K + c];
  out[transposed ? c * ld + j : j * ld + c] = s * sum;
}

// dst [cols, rows] = src [rows, cols]ᵀ
__global__ void lora_transpose_kernel(const float* __restrict__ src, int64_t rows, int64_t cols, float* __restrict__ dst) {
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= rows * cols) return;
  const int64_t i = idx / cols, c = idx % cols;
  dst[c * rows + i] = src[idx];
}

// W [rows, cols] += s·Σ_t P(i, t)·Q(t, c), with P(i, t) = P[i·p_i + t·p_t] and Q(t, c) = Q[t·q_t + c·q_c]
// (lora_merge's two layouts). W's elements are float or bfloat16 bits (uint16_t), each read and
// written once. A warp takes 4 rows and 128 columns (lane + 32·b: every access coalesced), a
// block 8 warps; blocks step down the rows by the grid's height.
__device__ __forceinline__ float widen(float v) { return v; }
__device__ __forceinline__ float widen(uint16_t v) { return bf16_to_f32(v); }
__device__ __forceinline__ void narrow(float v, float& out) { out = v; }
__device__ __forceinline__ void narrow(float v, uint16_t& out) { out = f32_to_bf16(v); }

constexpr int kMergeWarps = 8, kMergeRows = 4 * kMergeWarps, kMergeCols = 128;

template <typename T>
__global__ void __launch_bounds__(32 * kMergeWarps) lora_merge_kernel(T* W, int64_t rows, int64_t cols, int64_t r,
                                                                      const float* __restrict__ P, int64_t p_i, int64_t p_t,
                                                                      const float* __restrict__ Q, int64_t q_t, int64_t q_c, float s) {
  const int lane = threadIdx.x & 31;
  const int64_t c0 = int64_t(blockIdx.x) * kMergeCols + lane;
  for (int64_t i0 = int64_t(blockIdx.y) * kMergeRows + 4 * (threadIdx.x / 32); i0 < rows; i0 += int64_t(gridDim.y) * kMergeRows) {
    float acc[4][4] = {};  // [row][b]
    for (int64_t t = 0; t < r; ++t) {
      float p[4], q[4];
#pragma unroll
      for (int a = 0; a < 4; ++a) p[a] = i0 + a < rows ? __ldg(P + (i0 + a) * p_i + t * p_t) : 0.0f;
#pragma unroll
      for (int b = 0; b < 4; ++b) q[b] = c0 + 32 * b < cols ? __ldg(Q + t * q_t + (c0 + 32 * b) * q_c) : 0.0f;
#pragma unroll
      for (int a = 0; a < 4; ++a)
#pragma unroll
        for (int b = 0; b < 4; ++b) acc[a][b] = fmaf(p[a], q[b], acc[a][b]);
    }
#pragma unroll
    for (int a = 0; a < 4; ++a) {
      if (i0 + a >= rows) break;
#pragma unroll
      for (int b = 0; b < 4; ++b) {
        const int64_t c = c0 + 32 * b;
        if (c < cols) narrow(s * acc[a][b] + widen(W[(i0 + a) * cols + c]), W[(i0 + a) * cols + c]);
      }
    }
  }
}

// ---- launches

Dropout dropout_of(const LoraDims& d) { return Dropout{d.p, d.mask_scale, d.seed, d.offset}; }
const Dropout kNoDropout{0.0f, 1.0f, 0, 0};

unsigned row_blocks(int64_t N) { return unsigned((N + kWarps * kRowsPerWarp - 1) / (kWarps * kRowsPerWarp)); }
int tile_rank(const LoraDims& d, int64_t j0) { return int(d.r - j0 < kRank ? d.r - j0 : kRank); }

void down(const float* x, int64_t N, int64_t K, const float* f, int rt, float* u, int64_t ldu, const Dropout& m) {
  if (m.p > 0)
    lora_down_kernel<true><<<row_blocks(N), kBlock, 0, current_stream()>>>(x, N, K, f, rt, u, ldu, m);
  else
    lora_down_kernel<false><<<row_blocks(N), kBlock, 0, current_stream()>>>(x, N, K, f, rt, u, ldu, m);
  LR_CUDA_LAUNCH_CHECK("lora_down_kernel");
}

void up(const float* u, int64_t ldu, int rt, const float* f, const float* y, float* out, int64_t N, int64_t K, float s,
        const Dropout& m) {
  if (m.p > 0)
    lora_up_kernel<true><<<row_blocks(N), kBlock, 0, current_stream()>>>(u, ldu, rt, f, y, out, N, K, s, m);
  else
    lora_up_kernel<false><<<row_blocks(N), kBlock, 0, current_stream()>>>(u, ldu, rt, f, y, out, N, K, s, m);
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

// out = s·vᵀ·drop(x) for one rank tile (rt ≤ kRank rows of vᵀ): the slabs' partial sums, then their sum.
void rows_grad(const float* v, int64_t ldv, int rt, const float* x, int64_t N, int64_t K, float s, const Dropout& m,
               float* partial, float* out, int64_t ld, bool transposed) {
  const Slabs slabs(N, K);
  const bool masked = m.p > 0;
  const dim3 grid(unsigned((K + (masked ? int64_t(m.offset & 63) : 0) + kStep - 1) / kStep), unsigned(slabs.count));
  const cudaStream_t stream = current_stream();
  if (masked)
    lora_rows_grad_kernel<true><<<grid, kBlock, 0, stream>>>(v, ldv, rt, x, N, K, m, slabs.rows, partial);
  else
    lora_rows_grad_kernel<false><<<grid, kBlock, 0, stream>>>(v, ldv, rt, x, N, K, m, slabs.rows, partial);
  LR_CUDA_LAUNCH_CHECK("lora_rows_grad_kernel");
  lora_sum_partials_kernel<<<grid_for(rt * K, 256), 256, 0, stream>>>(partial, slabs.count, rt, K, s, out, ld, transposed);
  LR_CUDA_LAUNCH_CHECK("lora_sum_partials_kernel");
}

// Bᵀ [r, d] of B [d, r], in a scratch buffer the caller releases.
float* transposed_B(const LoraDims& d, const float* B) {
  float* Bt = scratch<float>(size_t(d.r * d.d));
  if (d.r * d.d > 0) {
    lora_transpose_kernel<<<grid_for(d.r * d.d, 256), 256, 0, current_stream()>>>(B, d.d, d.r, Bt);
    LR_CUDA_LAUNCH_CHECK("lora_transpose_kernel");
  }
  return Bt;
}

}  // namespace

void lora_forward_f32(const LoraDims& d, const float* x, const float* A, const float* B, const float* y, float* out, float* u) {
  if (d.N == 0) return;
  if (d.r == 0) {  // no update
    if (out != y) LR_CUDA_CHECK(cudaMemcpyAsync(out, y, size_t(d.N * d.d) * sizeof(float), cudaMemcpyDeviceToDevice, current_stream()));
    return;
  }
  float* Bt = transposed_B(d, B);
  for (int64_t j0 = 0; j0 < d.r; j0 += kRank) down(x, d.N, d.k, A + j0 * d.k, tile_rank(d, j0), u + j0, d.r, dropout_of(d));
  for (int64_t j0 = 0; j0 < d.r; j0 += kRank)
    up(u + j0, d.r, tile_rank(d, j0), Bt + j0 * d.d, j0 == 0 ? y : out, out, d.N, d.d, d.scaling, kNoDropout);
  release(Bt);
}

void lora_backward_f32(const LoraDims& d, const float* g, const float* x, const float* A, const float* B, const float* u,
                       float* gx, float* gA, float* gB) {
  const cudaStream_t stream = current_stream();
  if (d.N == 0 || d.r == 0) {  // empty sums
    if (gA) LR_CUDA_CHECK(cudaMemsetAsync(gA, 0, size_t(d.r * d.k) * sizeof(float), stream));
    if (gB) LR_CUDA_CHECK(cudaMemsetAsync(gB, 0, size_t(d.d * d.r) * sizeof(float), stream));
    if (gx) LR_CUDA_CHECK(cudaMemsetAsync(gx, 0, size_t(d.N * d.k) * sizeof(float), stream));
    return;
  }
  const Dropout m = dropout_of(d);
  const Slabs slabs_x(d.N, d.k), slabs_g(d.N, d.d);
  const int64_t partial_size = kRank * (slabs_x.count * d.k > slabs_g.count * d.d ? slabs_x.count * d.k : slabs_g.count * d.d);
  float* partial = gA || gB ? scratch<float>(size_t(partial_size)) : nullptr;
  if (gx || gA) {
    float* Bt = transposed_B(d, B);
    float* v = scratch<float>(size_t(d.N * d.r));
    for (int64_t j0 = 0; j0 < d.r; j0 += kRank) down(g, d.N, d.d, Bt + j0 * d.d, tile_rank(d, j0), v + j0, d.r, kNoDropout);
    for (int64_t j0 = 0; j0 < d.r; j0 += kRank) {
      const int rt = tile_rank(d, j0);
      if (gx) up(v + j0, d.r, rt, A + j0 * d.k, j0 > 0 ? gx : nullptr, gx, d.N, d.k, d.scaling, m);
      if (gA) rows_grad(v + j0, d.r, rt, x, d.N, d.k, d.scaling, m, partial, gA + j0 * d.k, d.k, false);
    }
    release(v);
    release(Bt);
  }
  if (gB) {
    for (int64_t j0 = 0; j0 < d.r; j0 += kRank)
      rows_grad(u + j0, d.r, tile_rank(d, j0), g, d.N, d.d, d.scaling, kNoDropout, partial, gB + j0, d.r, true);
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
  const int64_t row_blocks = (m.rows + kMergeRows - 1) / kMergeRows;
  const dim3 grid(unsigned((m.cols + kMergeCols - 1) / kMergeCols), unsigned(row_blocks < 65535 ? row_blocks : 65535));
  if (w_dtype == DType::BF16)
    lora_merge_kernel<<<grid, 32 * kMergeWarps, 0, current_stream()>>>(static_cast<uint16_t*>(W), m.rows, m.cols, m.r, P, p_i, p_t, Q, q_t, q_c, m.scaling);
  else
    lora_merge_kernel<<<grid, 32 * kMergeWarps, 0, current_stream()>>>(static_cast<float*>(W), m.rows, m.cols, m.r, P, p_i, p_t, Q, q_t, q_c, m.scaling);
  LR_CUDA_LAUNCH_CHECK("lora_merge_kernel");
}

}  // namespace cuda
}  // namespace lowrank
