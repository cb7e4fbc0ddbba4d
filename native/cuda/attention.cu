// Attention on the GPU, twin of native/cpu/attention.cc: one block per query row (forward, dq) or
// per key row (dk, dv), scores recomputed from q, k and the saved lse.
#include <cfloat>
#include <cmath>

#include "../core/philox.h"
#include "../ops/attention.h"
#include "common.cuh"
#include "reduce.cuh"

namespace lowrank {
namespace cuda {
namespace {

// The masking rules are those of native/ops/attention.h, as on the CPU.
__device__ int64_t visible_keys(const AttnDims& d, int64_t i) { return d.causal ? d.Tk - d.Tq + i + 1 : d.Tk; }

// The score of (query i, key j < visible): -inf for a padded key, else scale · q·k.
__device__ float masked_score(const AttnDims& d, const float* qi, const float* kj, bool padded) {
  if (padded) return -INFINITY;
  float s = 0;
  for (int64_t t = 0; t < d.D; ++t) s += qi[t] * kj[t];
  return s * d.scale;
}

// The probability from a score and its row's lse; a row with nothing to attend to (lse = -inf)
// has probability 0 everywhere.
__device__ float probability(float s, float lse) { return lse == -INFINITY ? 0.0f : expf(s - lse); }

// Attention dropout's factor for weight (b, h, i, j): 1/(1-p) when kept, 0 when dropped (AttnDims).
__device__ float drop_factor(const AttnDims& d, int64_t b, int64_t h, int64_t i, int64_t j) {
  if (d.dropout <= 0) return 1.0f;
  const uint64_t e = static_cast<uint64_t>(((b * d.H + h) * d.Tq + i) * d.Tk + j);
  return philox_keep(d.seed, d.offset, e, d.dropout) ? 1.0f / (1.0f - d.dropout) : 0.0f;
}

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
    s[j] = masked_score(d, qi, k.row(b, h, j), keep && keep[b * d.Tk + j] == 0);
    m = nan_max(m, s[j]);
  }
  m = block_reduce(m, MaxOp(), -INFINITY);
  const bool empty = m == -INFINITY;  // every visible key padded: the output row is 0 (a NaN score makes m NaN, not empty)
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

// Per query row: P, dP = (dO·vᵀ)·M (M: dropout factors), delta = rowsum(P·dP),
// dS = P·(dP - delta)·scale, dq = dS k.
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
  float acc = 0;
  for (int64_t j = threadIdx.x; j < vis; j += blockDim.x) {
    const float* vj = v.row(b, h, j);
    ds[j] = probability(masked_score(d, qi, k.row(b, h, j), keep && keep[b * d.Tk + j] == 0), lse[row]);
    float g = 0;
    for (int64_t t = 0; t < d.D; ++t) g += gi[t] * vj[t];
    dp[j] = g * drop_factor(d, b, h, i, j);
    acc += ds[j] * dp[j];
  }
  const float dl = block_reduce(acc, SumOp(), 0.0f);
  // A padded key's score is a constant -inf: its gradient is exactly 0, even when P is NaN.
  for (int64_t j = threadIdx.x; j < vis; j += blockDim.x)
    ds[j] = keep && keep[b * d.Tk + j] == 0 ? 0.0f : ds[j] * (dp[j] - dl) * d.scale;
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
  const bool padded = keep && keep[b * d.Tk + j] == 0;
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
      p = probability(masked_score(d, qi, kj, padded), lse[r]);
      const float m = drop_factor(d, b, h, i, j);
      float dp = 0;
      for (int64_t t = 0; t < d.D; ++t) dp += gi[t] * vj[t];
      dsv = padded ? 0.0f : p * (dp * m - delta[r]) * d.scale;  // a padded key's score is constant
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
  const size_t smem = checked_smem(d.Tk + d.D, "attention_forward_f32");
  attention_forward_kernel<<<unsigned(rows), kThreads, smem, current_stream()>>>(d, q, k, v, key_keep, out, lse);
  LR_CUDA_LAUNCH_CHECK("attention_forward_f32");
}

void attention_backward_f32(const AttnDims& d, AttnView q, AttnView k, AttnView v, const int32_t* key_keep, const float* lse,
                            AttnView dout, AttnView dq, AttnView dk, AttnView dv) {
  const int64_t qrows = d.B * d.H * d.Tq, krows = d.B * d.H * d.Tk;
  if (krows == 0) return;
  cudaStream_t stream = current_stream();
  float* delta = scratch<float>(size_t(qrows > 0 ? qrows : 1));
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
