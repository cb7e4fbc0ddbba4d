// The LoRA merge W += s·P·Q (P = B [rows, r], Q = A [r, cols]; W bf16 or float32, in place),
// developed llm.c dev/cuda style: the CPU reference, several kernel versions, one call that checks
// and times them all against a copy of W (the merge's memory floor: one read and one write of W).
//
// Build and run on the GPU machine:  nvcc -O3 -std=c++17 -arch=sm_90 dev/cuda/merge.cu -o /tmp/merge && /tmp/merge
//
// Versions:
//   0  the addon's lora_merge (native/cuda/lora.cu, compiled into this file).
//   1  the addon's kernel before Dec 7 16:00: a lane takes 4 consecutive columns, a warp 4 rows at a
//      time, 8 warps a block; Q's columns staged in shared memory when r <= 16.
//   2  a lane takes 8 columns (one 16-byte load of bf16), 4 rows at a time: twice the bytes in flight.
//   3  8 columns and 8 rows at a time: four times the bytes in flight per lane of version 1.
//   4  version 3 with P's rows for the block staged in shared memory (no per-t global loads of P).
//   5  4 columns and 8 rows at a time, P staged (the addon's design since Dec 7 16:00).
//   6  version 5 reading and writing W through the addon's load4/store4 (bounds and alignment checks).
//   7  4 columns and 16 rows at a time; 8 and 9: version 5 with blocks of 4 and of 16 warps (not yet
//      run on a GPU: candidates for the last 3 us to the 1.5x target).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

#include "../../native/cuda/lora.cu"
#include "harness.cuh"

// The addon's stream (native/cuda/device.cu): the default stream here.
cudaStream_t lowrank::cuda::current_stream() { return nullptr; }


constexpr int kRankTile = 16;  // ranks staged in shared memory (the usual adapters' r <= 16)
constexpr int kWarps = 8;

// ---- element access: 4 or 8 consecutive values of a row, widened to float and back

__device__ __forceinline__ void load_n(const float* p, float* v, int n) {
  if (n == 4) {
    const float4 a = *reinterpret_cast<const float4*>(p);
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w;
  } else {
    const float4 a = *reinterpret_cast<const float4*>(p), b = *reinterpret_cast<const float4*>(p + 4);
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
  }
}
__device__ __forceinline__ void store_n(float* p, const float* v, int n) {
  *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
  if (n == 8) *reinterpret_cast<float4*>(p + 4) = make_float4(v[4], v[5], v[6], v[7]);
}
__device__ __forceinline__ void load_n(const __nv_bfloat16* p, float* v, int n) {
  if (n == 4) {
    const uint2 a = *reinterpret_cast<const uint2*>(p);
    const uint32_t w[2] = {a.x, a.y};
    for (int i = 0; i < 4; ++i) v[i] = __uint_as_float((w[i / 2] >> (16 * (i % 2))) << 16);
  } else {
    const uint4 a = *reinterpret_cast<const uint4*>(p);
    const uint32_t w[4] = {a.x, a.y, a.z, a.w};
    for (int i = 0; i < 8; ++i) v[i] = __uint_as_float((w[i / 2] >> (16 * (i % 2))) << 16);
  }
}
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&h);
}
__device__ __forceinline__ void store_n(__nv_bfloat16* p, const float* v, int n) {
  if (n == 4) *reinterpret_cast<uint2*>(p) = make_uint2(pack2(v[0], v[1]), pack2(v[2], v[3]));
  else *reinterpret_cast<uint4*>(p) = make_uint4(pack2(v[0], v[1]), pack2(v[2], v[3]), pack2(v[4], v[5]), pack2(v[6], v[7]));
}

// ---- the kernels (shapes: cols a multiple of the warp's columns, r <= kRankTile; the bench's)

// kCols columns per lane, kRows rows per warp step; P from global (kStageP false) or staged.
template <typename T>
__device__ __forceinline__ void addon_load(const T* row, int cols, int c0, float* v) {
  float w[4];
  lowrank::cuda::load4<false>(reinterpret_cast<const std::conditional_t<sizeof(T) == 2, uint16_t, float>*>(row), cols, c0, true, w);
  for (int i = 0; i < 4; ++i) v[i] = w[i];
}
template <typename T>
__device__ __forceinline__ void addon_store(T* row, int cols, int c0, const float* v) {
  const float w[4] = {v[0], v[1], v[2], v[3]};
  lowrank::cuda::store4(reinterpret_cast<std::conditional_t<sizeof(T) == 2, uint16_t, float>*>(row), cols, c0, true, w);
}

template <typename T, int kCols, int kRows, bool kStageP, bool kAddonAccess = false, int kBlockWarps = kWarps>
__global__ void __launch_bounds__(32 * kBlockWarps) merge_kernel(T* W, int rows, int cols, int r, const float* __restrict__ P,
                                                           const float* __restrict__ Q, float s) {
  constexpr int kBlockCols = 32 * kCols, kBlockRows = kRows * kBlockWarps;
  __shared__ __align__(16) float q_tile[kRankTile][kBlockCols];
  __shared__ float p_tile[kStageP ? kBlockRows : 1][kRankTile];
  const int col_block = blockIdx.x * kBlockCols, lane = threadIdx.x & 31, warp = threadIdx.x / 32;
  for (int e = threadIdx.x; e < kRankTile * kBlockCols; e += blockDim.x) {
    const int t = e / kBlockCols, c = e % kBlockCols;
    q_tile[t][c] = t < r ? Q[int64_t(t) * cols + col_block + c] : 0.0f;
  }
  const int c0 = col_block + kCols * lane;
  for (int block_row = blockIdx.y * kBlockRows; block_row < rows; block_row += gridDim.y * kBlockRows) {
    if constexpr (kStageP) {
      __syncthreads();  // the previous rows' P is no longer read
      for (int e = threadIdx.x; e < kBlockRows * kRankTile; e += blockDim.x) {
        const int rr = e / kRankTile, t = e % kRankTile;
        p_tile[rr][t] = t < r && block_row + rr < rows ? P[int64_t(block_row + rr) * r + t] : 0.0f;
      }
    }
    __syncthreads();
    const int i0 = block_row + warp * kRows;
    float w[kRows][kCols];
#pragma unroll
    for (int a = 0; a < kRows; ++a)
      if (i0 + a < rows) {
        if constexpr (kAddonAccess) addon_load(W + int64_t(i0 + a) * cols, cols, c0, w[a]);
        else load_n(W + int64_t(i0 + a) * cols + c0, w[a], kCols);
      }
    float acc[kRows][kCols] = {};
    for (int t = 0; t < r; ++t) {
      float q[kCols];
#pragma unroll
      for (int b = 0; b < kCols; b += 4) {
        const float4 qv = *reinterpret_cast<const float4*>(&q_tile[t][kCols * lane + b]);
        q[b] = qv.x, q[b + 1] = qv.y, q[b + 2] = qv.z, q[b + 3] = qv.w;
      }
#pragma unroll
      for (int a = 0; a < kRows; ++a) {
        const float p = kStageP ? p_tile[warp * kRows + a][t] : (i0 + a < rows ? __ldg(P + int64_t(i0 + a) * r + t) : 0.0f);
#pragma unroll
        for (int b = 0; b < kCols; ++b) acc[a][b] = fmaf(p, q[b], acc[a][b]);
      }
    }
#pragma unroll
    for (int a = 0; a < kRows; ++a) {
      if (i0 + a >= rows) break;
#pragma unroll
      for (int b = 0; b < kCols; ++b) w[a][b] = s * acc[a][b] + w[a][b];
      if constexpr (kAddonAccess) addon_store(W + int64_t(i0 + a) * cols, cols, c0, w[a]);
      else store_n(W + int64_t(i0 + a) * cols + c0, w[a], kCols);
    }
  }
}


template <typename T, int kCols, int kRows, bool kStageP, bool kAddonAccess = false, int kBlockWarps = kWarps>
void launch(T* W, int rows, int cols, int r, const float* P, const float* Q, float s, int blocks_per_sm, int sms) {
  const int col_blocks = cols / (32 * kCols), row_blocks = (rows + kRows * kBlockWarps - 1) / (kRows * kBlockWarps);
  int grid_rows = (blocks_per_sm * sms * 2 + col_blocks - 1) / col_blocks;  // ~2 waves
  grid_rows = std::min(grid_rows, row_blocks);
  merge_kernel<T, kCols, kRows, kStageP, kAddonAccess, kBlockWarps><<<dim3(col_blocks, grid_rows), 32 * kBlockWarps>>>(W, rows, cols, r, P, Q, s);
}

// The addon's merge: W [rows, cols] += s·B·A with B = P [rows, r], A = Q [r, cols] (a Linear layout).
template <typename T>
void native_merge(T* W, int rows, int cols, int r, const float* P, const float* Q, float s, int, int) {
  const lowrank::LoraMergeDims m{rows, cols, r, s, false, cols};
  lowrank::cuda::lora_merge(m, W, sizeof(T) == 2 ? lowrank::DType::BF16 : lowrank::DType::F32, Q, P);
}

// ---- the harness

float bf16_round(float x) { return __bfloat162float(__float2bfloat16(x)); }

template <typename T>
struct Host;
template <>
struct Host<float> {
  static float to(float x) { return x; }
  static float from(float x) { return x; }
  static const char* name() { return "float32"; }
};
template <>
struct Host<__nv_bfloat16> {
  static __nv_bfloat16 to(float x) { return __float2bfloat16(x); }
  static float from(__nv_bfloat16 x) { return __bfloat162float(x); }
  static const char* name() { return "bf16"; }
};


template <typename T>
void run_all(int rows, int cols, int r) {
  int sms = 0;
  CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  const size_t n = size_t(rows) * cols;
  std::vector<float> W(n), P(size_t(rows) * r), Q(size_t(r) * cols);
  uint32_t seed = 12345;
  auto rnd = [&] { seed = seed * 1664525u + 1013904223u; return (seed >> 8) * (1.0f / 16777216.0f) * 2 - 1; };
  for (auto& v : W) v = rnd();
  for (auto& v : P) v = rnd();
  for (auto& v : Q) v = rnd();
  const float s = 2.0f;
  std::vector<T> Wt(n);
  for (size_t i = 0; i < n; ++i) Wt[i] = Host<T>::to(W[i]);
  // Reference: W + s·P·Q in double from the stored W, rounded to T once; the check allows one T
  // rounding step of |W| + s·Σ|P·Q| (the GPU sums in float32, in its own order).
  T *dW, *dW2;
  float *dP, *dQ;
  CHECK(cudaMalloc(&dW, n * sizeof(T)));
  CHECK(cudaMalloc(&dW2, n * sizeof(T)));
  CHECK(cudaMalloc(&dP, P.size() * 4));
  CHECK(cudaMalloc(&dQ, Q.size() * 4));
  CHECK(cudaMemcpy(dP, P.data(), P.size() * 4, cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(dQ, Q.data(), Q.size() * 4, cudaMemcpyHostToDevice));
  const double eps = sizeof(T) == 2 ? std::ldexp(1.0, -8) : std::ldexp(1.0, -20);  // a bf16 rounding; float32: a few ulps of the sums
  auto check = [&](const char* name) {
    std::vector<T> out(n);
    CHECK(cudaMemcpy(out.data(), dW, n * sizeof(T), cudaMemcpyDeviceToHost));
    int bad = 0;
    double worst = 0;
    for (int i = 0; i < rows; i += (rows > 512 ? 7 : 1)) {  // every 7th row of the big shapes
      for (int c = 0; c < cols; ++c) {
        double sum = 0, mag = 0;
        for (int t = 0; t < r; ++t) sum += double(P[size_t(i) * r + t]) * Q[size_t(t) * cols + c], mag += std::fabs(double(P[size_t(i) * r + t]) * Q[size_t(t) * cols + c]);
        const double w0 = Host<T>::from(Wt[size_t(i) * cols + c]);
        const double want = w0 + s * sum, got = Host<T>::from(out[size_t(i) * cols + c]);
        const double err = std::fabs(got - want) / (std::fabs(w0) + s * mag + 1e-30);
        worst = std::max(worst, err);
        if (err > eps) ++bad;
      }
    }
    std::printf("  %-34s %s (worst error %.2g of |W| + s·Σ|PQ|, limit %.2g)\n", name, bad ? "FAIL" : "ok", worst, eps);
    return bad == 0;
  };
  const double bytes = 2.0 * n * sizeof(T);
  std::printf("%s W [%d, %d], r = %d: %.1f MB read + written\n", Host<T>::name(), rows, cols, r, bytes / 1e6);
  bool ok = true;
  const float t_memcpy = median_us([&](int) { CHECK(cudaMemcpyAsync(dW2, dW, n * sizeof(T), cudaMemcpyDeviceToDevice)); });
  const float t_copy = median_us([&](int) {
    copy_kernel<<<sms * 8, 256>>>(reinterpret_cast<const uint4*>(dW), reinterpret_cast<uint4*>(dW2), int64_t(n * sizeof(T) / 16));
  });
  std::printf("  d2d memcpy %.1f us (%.0f GB/s), 16-byte copy kernel %.1f us (%.0f GB/s)\n", t_memcpy, bytes / t_memcpy * 1e-3, t_copy,
              bytes / t_copy * 1e-3);
  struct Version {
    const char* name;
    void (*run)(T*, int, int, int, const float*, const float*, float, int, int);
  };
  const Version versions[] = {
      {"0: the addon's lora_merge", native_merge<T>},
      {"1: 4 cols x 4 rows (addon before)", launch<T, 4, 4, false>},
      {"2: 8 cols x 4 rows", launch<T, 8, 4, false>},
      {"3: 8 cols x 8 rows", launch<T, 8, 8, false>},
      {"4: 8 cols x 8 rows, P staged", launch<T, 8, 8, true>},
      {"5: 4 cols x 8 rows, P staged", launch<T, 4, 8, true>},
      {"6: 5 with the addon's load4/store4", launch<T, 4, 8, true, true>},
      {"7: 4 cols x 16 rows, P staged", launch<T, 4, 16, true>},
      {"8: 5 with 4 warps a block", launch<T, 4, 8, true, false, 4>},
      {"9: 5 with 16 warps a block", launch<T, 4, 8, true, false, 16>},
  };
  for (const Version& v : versions) {
    for (int bps : {2, 4}) {
      CHECK(cudaMemcpy(dW, Wt.data(), n * sizeof(T), cudaMemcpyHostToDevice));
      v.run(dW, rows, cols, r, dP, dQ, s, bps, sms);
      CHECK(cudaGetLastError());
      CHECK(cudaDeviceSynchronize());
      char label[96];
      std::snprintf(label, sizeof label, "%s, %d blocks/SM grid", v.name, bps);
      ok &= check(label);
      // merge then unmerge (s, -s) so W stays near its start
      const float t = median_us([&](int i) { v.run(dW, rows, cols, r, dP, dQ, i % 2 ? -s : s, bps, sms); });
      std::printf("  %-34s %.1f us (%.0f GB/s) = %.2fx the memcpy, %.2fx the copy kernel\n", label, t, bytes / t * 1e-3, t / t_memcpy,
                  t / t_copy);
    }
  }
  CHECK(cudaFree(dW));
  CHECK(cudaFree(dW2));
  CHECK(cudaFree(dP));
  CHECK(cudaFree(dQ));
  if (!ok) std::printf("  SOME VERSIONS FAILED\n");
}

int main() {
  cudaDeviceProp prop;
  CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("%s, %d SMs, L2 %d MB\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20);
  run_all<__nv_bfloat16>(256, 512, 16);
  run_all<__nv_bfloat16>(4096, 4096, 16);
  run_all<float>(4096, 4096, 16);
  run_all<__nv_bfloat16>(4096, 4096, 8);
  run_all<__nv_bfloat16>(768, 2304, 8);
  return 0;
}
