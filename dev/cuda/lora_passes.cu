// Where the one-GEMM LoRA's passes spend their time: the addon's own launches (native/cuda/lora.cu,
// compiled into this file) timed by CUDA events at GPT-2's and the 4096 shapes, each beside a copy
// kernel moving the bytes the pass must move (its memory floor). The Dec 7 profiles put these
// passes at ~1 TB/s of the ~2.9 TB/s an H100 copies; this is the table to improve them against.
// Correctness is the twins' and the emulator's job (test/gpu/twins.test.ts, dev/cuda/emu): this
// file only times.
//
// Build and run on the GPU machine:
//   nvcc -O3 -std=c++17 -arch=sm_90 --expt-relaxed-constexpr dev/cuda/lora_passes.cu -o /tmp/lora_passes && /tmp/lora_passes
//
// Rows, per shape (N = 8192 tokens, r = 16, dropout 0 and 0.05):
//   down_aug x   forward: u = drop(x)·Aᵀ, xa = [bf16(x) | bf16(s·u) | 1 | 0]   reads x (f32), writes xa (bf16)
//   down_aug g   backward: v = g·B, ga = [bf16(g) | bf16(s·v) | 0]              reads g (f32), writes ga (bf16)
//   gx update    backward with dropout: gx += s·(v·A) ⊙ mask                    reads and writes gx (f32)
//   gA           s·vᵀ·drop(xa) over the rows                                    reads xa's first k columns (bf16)
//   gB           s·gaᵀ·u over the rows                                          reads ga's first d columns (bf16)
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

// LORA_SOURCE: another copy of the addon's lora.cu to time (a baseline beside the working tree's).
#ifndef LORA_SOURCE
#define LORA_SOURCE "../../native/cuda/lora.cu"
#endif
#include LORA_SOURCE
#include "harness.cuh"

// The addon's stream (native/cuda/device.cu): the default stream here.
cudaStream_t lowrank::cuda::current_stream() { return nullptr; }


namespace {



template <typename T>
T* device_random(size_t n, uint32_t seed, float scale) {
  std::vector<float> h(n);
  for (auto& v : h) {
    seed = seed * 1664525u + 1013904223u;
    v = ((seed >> 8) * (1.0f / 16777216.0f) * 2 - 1) * scale;
  }
  T* d = nullptr;
  CHECK(cudaMalloc(&d, n * sizeof(T)));
  if constexpr (sizeof(T) == 4) {
    CHECK(cudaMemcpy(d, h.data(), n * 4, cudaMemcpyHostToDevice));
  } else {
    std::vector<uint16_t> b(n);
    for (size_t i = 0; i < n; ++i) b[i] = lowrank::f32_to_bf16(h[i]);
    CHECK(cudaMemcpy(d, b.data(), n * 2, cudaMemcpyHostToDevice));
  }
  return d;
}

struct Copier {
  uint4 *src = nullptr, *dst = nullptr;
  int64_t capacity = 0;  // 16-byte words
  int sms = 0;
  explicit Copier(int64_t max_bytes) {
    capacity = max_bytes / 32 + 1;
    CHECK(cudaMalloc(&src, size_t(capacity) * 16));
    CHECK(cudaMalloc(&dst, size_t(capacity) * 16));
    CHECK(cudaMemset(src, 0, size_t(capacity) * 16));
    CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  }
  // The time of reading bytes/2 and writing bytes/2.
  float time_us(double bytes) {
    const int64_t words = std::min<int64_t>(capacity, int64_t(bytes / 32));
    return median_us([&](int) { copy_kernel<<<sms * 8, 256>>>(src, dst, words); }, 31);
  }
};

void row(const char* name, double bytes, float us, Copier& copier) {
  const float floor = copier.time_us(bytes);
  std::printf("  %-12s %8.1f us  %6.0f GB/s   copy of its %6.1f MB: %6.1f us   %.2fx\n", name, us, bytes / us * 1e-3, bytes / 1e6, floor, us / floor);
}

void run_shape(const char* name, int64_t N, int64_t k, int64_t d, int64_t r, float p, Copier& copier) {
  using namespace lowrank;
  const int64_t rp = (r + 1 + 7) / 8 * 8, ldx = k + rp, ldg = d + rp;
  const float s = 2.0f, mask_scale = p > 0 ? 1.0f / (1.0f - p) : 1.0f;
  float *x = device_random<float>(size_t(N * k), 1, 1.0f), *g = device_random<float>(size_t(N * d), 2, 1.0f);
  float *A = device_random<float>(size_t(r * k), 3, 0.05f), *B = device_random<float>(size_t(d * r), 4, 0.05f);
  float *u = nullptr, *v = nullptr, *gx = nullptr, *gA = nullptr, *gB = nullptr;
  uint16_t *xa = nullptr, *ga = nullptr;
  CHECK(cudaMalloc(&u, size_t(N * r) * 4));
  CHECK(cudaMalloc(&v, size_t(N * r) * 4));
  CHECK(cudaMalloc(&gx, size_t(N * k) * 4));
  CHECK(cudaMalloc(&gA, size_t(r * k) * 4));
  CHECK(cudaMalloc(&gB, size_t(d * r) * 4));
  CHECK(cudaMalloc(&xa, size_t(N * ldx) * 2));
  CHECK(cudaMalloc(&ga, size_t(N * ldg) * 2));
  CHECK(cudaMemset(gx, 0, size_t(N * k) * 4));
  std::printf("%s: N=%lld k=%lld d=%lld r=%lld dropout %.2f\n", name, (long long)N, (long long)k, (long long)d, (long long)r, p);

  const LoraAugDims fwd{N, k, r, ldx, s, true, false, p, mask_scale, 7, 64};
  const LoraAugDims bwd{N, d, r, ldg, s, false, true, 0.0f, 1.0f, 0, 0};
  const LoraDims dims{N, k, r, d, s, p, mask_scale, 7, 64};
  row("down_aug x", double(N) * (k * 4 + ldx * 2), median_us([&](int) { cuda::lora_down_aug(fwd, x, A, u, xa); }, 31), copier);
  row("down_aug g", double(N) * (d * 4 + ldg * 2), median_us([&](int) { cuda::lora_down_aug(bwd, g, B, v, ga); }, 31), copier);
  if (p > 0)
    row("gx update", double(N) * k * 8,
        median_us([&](int) { cuda::lora_backward_aug(dims, v, u, xa, ldx, ga, ldg, A, gx, nullptr, nullptr); }, 31), copier);
  row("gA", double(N) * k * 2, median_us([&](int) { cuda::lora_backward_aug(dims, v, u, xa, ldx, ga, ldg, A, nullptr, gA, nullptr); }, 31), copier);
  row("gB", double(N) * d * 2, median_us([&](int) { cuda::lora_backward_aug(dims, v, u, xa, ldx, ga, ldg, A, nullptr, nullptr, gB); }, 31), copier);
  CHECK(cudaGetLastError());
  for (void* ptr : {static_cast<void*>(x), static_cast<void*>(g), static_cast<void*>(A), static_cast<void*>(B), static_cast<void*>(u),
                    static_cast<void*>(v), static_cast<void*>(gx), static_cast<void*>(gA), static_cast<void*>(gB), static_cast<void*>(xa),
                    static_cast<void*>(ga)})
    CHECK(cudaFree(ptr));
}

}  // namespace

int main() {
  cudaDeviceProp prop;
  CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("%s, %d SMs; times are medians of 31 by CUDA events, each pass beside a copy of its bytes\n", prop.name,
              prop.multiProcessorCount);
  // The addon's pool keeps freed blocks (native/cuda/device.cu); by default it would return them at
  // every synchronization, and the passes' scratch buffers would be mapped afresh each call.
  cudaMemPool_t pool;
  CHECK(cudaDeviceGetDefaultMemPool(&pool, 0));
  uint64_t keep_all = UINT64_MAX;
  CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep_all));
  Copier copier(int64_t(8192) * 4096 * 8);
  for (float p : {0.0f, 0.05f}) {
    run_shape("GPT-2 c_attn", 8192, 768, 2304, 16, p, copier);
    run_shape("GPT-2 attn.c_proj", 8192, 768, 768, 16, p, copier);
    run_shape("GPT-2 mlp.c_proj", 8192, 3072, 768, 16, p, copier);
    run_shape("4096", 8192, 4096, 4096, 16, p, copier);
  }
  return 0;
}
