// nn kernels on the GPU, twins of native/cpu/nn.cc and attention.cc (test/gpu/nn.test.ts checks
// each against the CPU). Straightforward, correct kernels: one block per row for the row-wise
// ops, fixed reduction trees so that every result is deterministic.
#include <cfloat>
#include <cmath>

#include "../core/philox.h"
#include "../ops/nn.h"
#include "common.cuh"

namespace lowrank {
namespace cuda {
namespace {
constexpr int kThreads = 256;  // per block; a multiple of 32
constexpr int kWarps = kThreads / 32;

struct SumOp {
  template <typename T>
  __device__ T operator()(T a, T b) const { return a + b; }
};
struct MaxOp {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

// Reduces v over the block (blockDim.x == kThreads) in a fixed tree; every thread gets the result.
template <typename T, typename Op>
__device__ T block_reduce(T v, Op op, T identity) {
  __shared__ T partial[kWarps];
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();  // an earlier call may still be reading partial
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = v;
  __syncthreads();
  v = identity;
  for (int w = 0; w < kWarps; ++w) v = op(v, partial[w]);
  return v;
}

// ---- layer norm ---------------------------------------------------------------------------------

__global__ void layer_norm_kernel(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd,
                                  int64_t C, float eps) {
  const float* xr = x + blockIdx.x * C;
  float* yr = y + blockIdx.x * C;
  float s = 0;
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x) s += xr[j];
  const float m = block_reduce(s, SumOp(), 0.0f) / float(C);
  float v = 0;
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x) v += (xr[j] - m) * (xr[j] - m);
  const float r = rsqrtf(block_reduce(v, SumOp(), 0.0f) / float(C) + eps);
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x)
    yr[j] = (xr[j] - m) * r * (w ? w[j] : 1.0f) + (b ? b[j] : 0.0f);
  if (threadIdx.x == 0) {
    mean[blockIdx.x] = m;
    rstd[blockIdx.x] = r;
  }
}

// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * w.
__global__ void layer_norm_dx_kernel(const float* x, const float* w, const float* mean, const float* rstd, const float* dy,
                                     float* dx, int64_t C) {
  const int64_t off = blockIdx.x * C;
  const float m = mean[blockIdx.x], r = rstd[blockIdx.x];
  float sg = 0, sgx = 0;
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x) {
    const float g = dy[off + j] * (w ? w[j] : 1.0f);
    sg += g;
    sgx += g * (x[off + j] - m) * r;
  }
  const float g_mean = block_reduce(sg, SumOp(), 0.0f) / float(C);
  const float gx_mean = block_reduce(sgx, SumOp(), 0.0f) / float(C);
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x) {
    const float g = dy[off + j] * (w ? w[j] : 1.0f);
    dx[off + j] = r * (g - g_mean - (x[off + j] - m) * r * gx_mean);
  }
}

// dw, db: block (32, kRowSplit) sums 32 columns; thread row ty takes rows ty, ty + kRowSplit, ...
// and the kRowSplit partial sums are added in order by ty == 0.
constexpr int kRowSplit = 16;
__global__ void layer_norm_dwdb_kernel(const float* x, const float* mean, const float* rstd, const float* dy, float* dw,
                                       float* db, int64_t N, int64_t C) {
  __shared__ float pw[kRowSplit][32], pb[kRowSplit][32];
  const int64_t c = blockIdx.x * 32 + threadIdx.x;
  float sw = 0, sb = 0;
  if (c < C) {
    for (int64_t n = threadIdx.y; n < N; n += kRowSplit) {
      const float g = dy[n * C + c];
      sw += g * (x[n * C + c] - mean[n]) * rstd[n];
      sb += g;
    }
  }
  pw[threadIdx.y][threadIdx.x] = sw;
  pb[threadIdx.y][threadIdx.x] = sb;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    for (int k = 1; k < kRowSplit; ++k) {
      sw += pw[k][threadIdx.x];
      sb += pb[k][threadIdx.x];
    }
    if (dw) dw[c] = sw;
    if (db) db[c] = sb;
  }
}

// ---- softmax --------------------------------------------------------------------------------------

__global__ void softmax_kernel(const float* x, float* y, int64_t cols, bool log) {
  const float* xr = x + blockIdx.x * cols;
  float* yr = y + blockIdx.x * cols;
  float m = -INFINITY;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) m = fmaxf(m, xr[j]);
  m = block_reduce(m, MaxOp(), -INFINITY);
  float s = 0;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) s += expf(xr[j] - m);
  s = block_reduce(s, SumOp(), 0.0f);
  const float lse = m + logf(s);
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) yr[j] = log ? xr[j] - lse : expf(xr[j] - lse);
}

__global__ void softmax_backward_kernel(const float* y, const float* dy, float* dx, int64_t cols, bool log) {
  const int64_t off = blockIdx.x * cols;
  float s = 0;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) s += log ? dy[off + j] : dy[off + j] * y[off + j];
  s = block_reduce(s, SumOp(), 0.0f);
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x)
    dx[off + j] = log ? dy[off + j] - expf(y[off + j]) * s : y[off + j] * (dy[off + j] - s);
}

// ---- cross-entropy --------------------------------------------------------------------------------

__device__ bool bad_target(int32_t t, int64_t V, int32_t ignore) { return t != ignore && (t < 0 || t >= V); }

__global__ void cross_entropy_kernel(const float* logits, const int32_t* targets, float* lse, float* loss, int64_t V,
                                     int32_t ignore, unsigned long long* first_bad) {
  const int64_t n = blockIdx.x;
  const int32_t t = targets[n];
  if (t == ignore || bad_target(t, V, ignore)) {
    if (threadIdx.x == 0) {
      lse[n] = loss[n] = 0.0f;
      if (t != ignore) atomicMin(first_bad, static_cast<unsigned long long>(n));
    }
    return;
  }
  const float* xr = logits + n * V;
  float m = -INFINITY;
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) m = fmaxf(m, xr[j]);
  m = block_reduce(m, MaxOp(), -INFINITY);
  float s = 0;
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) s += expf(xr[j] - m);
  s = block_reduce(s, SumOp(), 0.0f);
  if (threadIdx.x == 0) {
    lse[n] = m + logf(s);
    loss[n] = lse[n] - xr[t];
  }
}

// One block: the sum of loss (double, fixed order) and of counted rows.
__global__ void cross_entropy_total_kernel(const float* loss, const int32_t* targets, float* total, int64_t N, int32_t ignore,
                                           Reduction reduction) {
  double s = 0, c = 0;
  for (int64_t n = threadIdx.x; n < N; n += blockDim.x) {
    s += loss[n];
    c += targets[n] != ignore;
  }
  s = block_reduce(s, SumOp(), 0.0);
  c = block_reduce(c, SumOp(), 0.0);
  if (threadIdx.x == 0) total[0] = reduction == Reduction::Sum ? float(s) : c > 0 ? float(s / c) : NAN;
}

// g_all = dout[0] (Sum) or dout[0] / count (Mean; 0 when nothing is counted, then every row is ignored).
__global__ void cross_entropy_scale_kernel(const int32_t* targets, const float* dout, float* g_all, int64_t N, int32_t ignore,
                                           Reduction reduction) {
  float c = 0;
  for (int64_t n = threadIdx.x; n < N; n += blockDim.x) c += targets[n] != ignore;
  c = block_reduce(c, SumOp(), 0.0f);
  if (threadIdx.x == 0) g_all[0] = reduction == Reduction::Sum ? dout[0] : c > 0 ? dout[0] / c : 0.0f;
}

__global__ void cross_entropy_backward_kernel(const float* logits, const int32_t* targets, const float* lse, const float* dout,
                                              const float* g_all, float* dlogits, int64_t V, int32_t ignore) {
  const int64_t n = blockIdx.x;
  const int32_t t = targets[n];
  float* dr = dlogits + n * V;
  const float* xr = logits + n * V;
  if (t == ignore) {
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) dr[j] = 0.0f;
    return;
  }
  const float g = g_all ? g_all[0] : dout[n];
  const float l = lse[n];
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) dr[j] = g * (expf(xr[j] - l) - (j == t ? 1.0f : 0.0f));
}

// ---- dropout --------------------------------------------------------------------------------------

__global__ void dropout_kernel(const float* x, float* y, int64_t n, float p, float scale, uint64_t seed, uint64_t offset) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)blockDim.x * gridDim.x)
    y[i] = philox_keep(seed, offset, static_cast<uint64_t>(i), p) ? x[i] * scale : 0.0f;
}

// ---- attention ------------------------------------------------------------------------------------
// One block per query row (forward, dq) or per key row (dk, dv). Scores are recomputed from
// q, k and the saved lse with the masking rules of native/ops/nn.h, as on the CPU.

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
    m = fmaxf(m, s[j]);
  }
  m = block_reduce(m, MaxOp(), -INFINITY);
  const bool empty = m == -INFINITY;  // every visible key padded: the output row is 0
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
  for (int64_t j = threadIdx.x; j < vis; j += blockDim.x) ds[j] = ds[j] * (dp[j] - dl) * d.scale;
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
      dsv = p * (dp * m - delta[r]) * d.scale;
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

template <typename T>
T* scratch(size_t n) {
  void* p = nullptr;
  LR_CUDA_CHECK(cudaMallocAsync(&p, n * sizeof(T), current_stream()));
  return static_cast<T*>(p);
}
void release(void* p) { LR_CUDA_CHECK(cudaFreeAsync(p, current_stream())); }

}  // namespace

void layer_norm_f32(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd, int64_t N, int64_t C,
                    float eps) {
  if (N == 0) return;
  layer_norm_kernel<<<unsigned(N), kThreads, 0, current_stream()>>>(x, w, b, y, mean, rstd, C, eps);
  LR_CUDA_LAUNCH_CHECK("layer_norm_f32");
}

void layer_norm_backward_f32(const float* x, const float* w, const float* mean, const float* rstd, const float* dy, float* dx,
                             float* dw, float* db, int64_t N, int64_t C) {
  if (N > 0) {
    layer_norm_dx_kernel<<<unsigned(N), kThreads, 0, current_stream()>>>(x, w, mean, rstd, dy, dx, C);
    LR_CUDA_LAUNCH_CHECK("layer_norm_backward_f32 (dx)");
  }
  if ((dw || db) && C > 0) {
    layer_norm_dwdb_kernel<<<unsigned((C + 31) / 32), dim3(32, kRowSplit), 0, current_stream()>>>(x, mean, rstd, dy, dw, db, N, C);
    LR_CUDA_LAUNCH_CHECK("layer_norm_backward_f32 (dw, db)");
  }
}

void softmax_f32(const float* x, float* y, int64_t rows, int64_t cols, bool log) {
  if (rows == 0) return;
  softmax_kernel<<<unsigned(rows), kThreads, 0, current_stream()>>>(x, y, cols, log);
  LR_CUDA_LAUNCH_CHECK("softmax_f32");
}

void softmax_backward_f32(const float* y, const float* dy, float* dx, int64_t rows, int64_t cols, bool log) {
  if (rows == 0) return;
  softmax_backward_kernel<<<unsigned(rows), kThreads, 0, current_stream()>>>(y, dy, dx, cols, log);
  LR_CUDA_LAUNCH_CHECK("softmax_backward_f32");
}

// Reporting an invalid target needs its row on the host: one small copy and a wait per call.
void cross_entropy_f32(const float* logits, const int32_t* targets, float* lse, float* loss, float* total, int64_t N, int64_t V,
                       int32_t ignore_index, Reduction reduction, int64_t* invalid) {
  if (N == 0) {
    if (reduction != Reduction::None) {
      fill(total, DType::F32, 1, reduction == Reduction::Sum ? 0.0 : NAN);
    }
    return;
  }
  cudaStream_t stream = current_stream();
  unsigned long long* first_bad = scratch<unsigned long long>(1);
  LR_CUDA_CHECK(cudaMemsetAsync(first_bad, 0xFF, sizeof(unsigned long long), stream));
  cross_entropy_kernel<<<unsigned(N), kThreads, 0, stream>>>(logits, targets, lse, loss, V, ignore_index, first_bad);
  LR_CUDA_LAUNCH_CHECK("cross_entropy_f32");
  if (reduction != Reduction::None) {
    cross_entropy_total_kernel<<<1, kThreads, 0, stream>>>(loss, targets, total, N, ignore_index, reduction);
    LR_CUDA_LAUNCH_CHECK("cross_entropy_f32 (total)");
  }
  unsigned long long bad = 0;
  LR_CUDA_CHECK(cudaMemcpyAsync(&bad, first_bad, sizeof(bad), cudaMemcpyDeviceToHost, stream));
  release(first_bad);
  LR_CUDA_CHECK(cudaStreamSynchronize(stream));
  if (bad == ~0ull) return;
  int32_t target = 0;
  LR_CUDA_CHECK(cudaMemcpyAsync(&target, targets + bad, sizeof(target), cudaMemcpyDeviceToHost, stream));
  LR_CUDA_CHECK(cudaStreamSynchronize(stream));
  invalid[0] = static_cast<int64_t>(bad);
  invalid[1] = target;
}

void cross_entropy_backward_f32(const float* logits, const int32_t* targets, const float* lse, const float* dout, float* dlogits,
                                int64_t N, int64_t V, int32_t ignore_index, Reduction reduction) {
  if (N == 0) return;
  cudaStream_t stream = current_stream();
  float* g_all = nullptr;
  if (reduction != Reduction::None) {
    g_all = scratch<float>(1);
    cross_entropy_scale_kernel<<<1, kThreads, 0, stream>>>(targets, dout, g_all, N, ignore_index, reduction);
    LR_CUDA_LAUNCH_CHECK("cross_entropy_backward_f32 (scale)");
  }
  cross_entropy_backward_kernel<<<unsigned(N), kThreads, 0, stream>>>(logits, targets, lse, dout, g_all, dlogits, V, ignore_index);
  LR_CUDA_LAUNCH_CHECK("cross_entropy_backward_f32");
  if (g_all) release(g_all);
}

void dropout_f32(const float* x, float* y, int64_t n, float p, float scale, uint64_t seed, uint64_t offset) {
  if (n == 0) return;
  dropout_kernel<<<grid_for(n, kThreads), kThreads, 0, current_stream()>>>(x, y, n, p, scale, seed, offset);
  LR_CUDA_LAUNCH_CHECK("dropout_f32");
}

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
