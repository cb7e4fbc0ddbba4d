// The CUDA surface of the attention kernels on the CPU, shared by attention_emu.cpp (the kernels
// of dev/cuda/attention.cu) and attention_mma_emu.cpp (the addon's, native/cuda/attention_mma.cu):
// each CUDA block runs as one host thread per CUDA thread, __syncthreads is a barrier over them, and the
// warp-collective primitives (mma.sync m16n8k16, ldmatrix.x4 [.trans], shuffles) exchange values
// through per-warp slots between two warp barriers, following the PTX ISA fragment layouts.
// cp.async copies run either when issued or as late as cp.async.wait_group allows (g_deferred),
// the two extremes of what the hardware may do; shared memory starts as NaN for every block.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <barrier>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

// ---- CUDA C++ surface on the host -------------------------------------------------------------------

#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __launch_bounds__
#undef __restrict__
#undef __align__
#undef __shared__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __restrict__
#define __align__(n)
#define __shared__

using std::max;
using std::min;
using bf16 = __nv_bfloat16;

struct EmuDim {
  unsigned x = 1, y = 1, z = 1;
};
thread_local EmuDim threadIdx;
EmuDim blockIdx, gridDim, blockDim;

alignas(128) unsigned char smem_raw[228 * 1024];
size_t g_smem_bytes = 0;  // the launch's dynamic shared memory: accesses past it are errors

// A shared-memory access of `bytes` at p must lie in the launch's allocation, aligned to `align`.
static void check_smem(const void* p, size_t bytes, size_t align, const char* what) {
  const auto* c = static_cast<const unsigned char*>(p);
  if (c < smem_raw || c + bytes > smem_raw + g_smem_bytes || reinterpret_cast<uintptr_t>(p) % align != 0) {
    fprintf(stderr, "%s: shared-memory access at offset %td (%zu bytes, alignment %zu) outside [0, %zu) or misaligned\n",
            what, c - smem_raw, bytes, align, g_smem_bytes);
    exit(1);
  }
}

struct WarpSlots {
  uint32_t u[32][6];
  const void* p[32];
  float f[32];
};

struct BlockCtx {
  std::unique_ptr<std::barrier<>> block;
  std::vector<std::unique_ptr<std::barrier<>>> warp;
  std::vector<WarpSlots> slots;
};
BlockCtx g_block;
thread_local int t_lane, t_warp;
bool g_deferred = false;
std::mutex g_atomic;

void __syncthreads() { g_block.block->arrive_and_wait(); }
static void warp_sync() { g_block.warp[t_warp]->arrive_and_wait(); }
static WarpSlots& my_slots() { return g_block.slots[t_warp]; }

float __shfl_xor_sync(unsigned, float v, int m) {
  WarpSlots& S = my_slots();
  S.f[t_lane] = v;
  warp_sync();
  const float r = S.f[t_lane ^ m];
  warp_sync();
  return r;
}

static uint16_t bf16_bits(const bf16* p) {
  uint16_t u;
  std::memcpy(&u, p, 2);
  return u;
}
static float bits_to_float(uint32_t half) {
  const uint32_t u = (half & 0xffffu) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Register m of lane l: row l/4, columns 2(l%4), 2(l%4)+1 of matrix m, whose rows lanes 8m..8m+7 address.
void ldmatrix_x4(uint32_t (&r)[4], const bf16* p) {
  check_smem(p, 16, 16, "ldmatrix");
  WarpSlots& S = my_slots();
  S.p[t_lane] = p;
  warp_sync();
  for (int m = 0; m < 4; ++m) {
    const bf16* row = static_cast<const bf16*>(S.p[8 * m + t_lane / 4]);
    r[m] = uint32_t(bf16_bits(row + 2 * (t_lane % 4))) | uint32_t(bf16_bits(row + 2 * (t_lane % 4) + 1)) << 16;
  }
  warp_sync();
}

// .trans: lane l gets row l/4 of the transposed matrix: elements [2(l%4)][l/4] and [2(l%4)+1][l/4].
void ldmatrix_x4_trans(uint32_t (&r)[4], const bf16* p) {
  check_smem(p, 16, 16, "ldmatrix.trans");
  WarpSlots& S = my_slots();
  S.p[t_lane] = p;
  warp_sync();
  for (int m = 0; m < 4; ++m) {
    const bf16* r0 = static_cast<const bf16*>(S.p[8 * m + 2 * (t_lane % 4)]);
    const bf16* r1 = static_cast<const bf16*>(S.p[8 * m + 2 * (t_lane % 4) + 1]);
    r[m] = uint32_t(bf16_bits(r0 + t_lane / 4)) | uint32_t(bf16_bits(r1 + t_lane / 4)) << 16;
  }
  warp_sync();
}

// PTX ISA, m16n8k16 .bf16: A reg r of lane l holds row l/4 + 8(r%2), columns 2(l%4) + 8(r/2) + {0,1};
// B reg r holds column (n) l/4, rows (k) 2(l%4) + 8r + {0,1}; C element e holds row l/4 + 8(e/2),
// column 2(l%4) + e%2.
void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  WarpSlots& S = my_slots();
  for (int r = 0; r < 4; ++r) S.u[t_lane][r] = a[r];
  S.u[t_lane][4] = b0;
  S.u[t_lane][5] = b1;
  warp_sync();
  auto A = [&](int row, int k) {
    const uint32_t w = S.u[4 * (row % 8) + (k % 8) / 2][(row / 8) + 2 * (k / 8)];
    return bits_to_float(k % 2 ? w >> 16 : w);
  };
  auto B = [&](int k, int n) {
    const uint32_t w = S.u[4 * n + (k % 8) / 2][4 + k / 8];
    return bits_to_float(k % 2 ? w >> 16 : w);
  };
  float out[4];
  for (int e = 0; e < 4; ++e) {
    const int row = t_lane / 4 + 8 * (e / 2), col = 2 * (t_lane % 4) + e % 2;
    float acc = c[e];
    for (int k = 0; k < 16; ++k) acc += A(row, k) * B(k, col);
    out[e] = acc;
  }
  warp_sync();
  for (int e = 0; e < 4; ++e) c[e] = out[e];
}

struct Copy {
  void* dst;
  const void* src;
  int bytes;
};
thread_local std::vector<Copy> t_open;                 // issued, not yet committed
thread_local std::vector<std::vector<Copy>> t_groups;  // committed groups, oldest first

static void do_copy(const Copy& c) {
  std::memset(c.dst, 0, 16);
  std::memcpy(c.dst, c.src, c.bytes);
}
void cp_async16(void* smem, const void* gmem, int src_bytes) {
  check_smem(smem, 16, 16, "cp.async");
  if (reinterpret_cast<uintptr_t>(gmem) % 16 != 0) {
    fprintf(stderr, "cp.async: global source not 16-byte aligned\n");
    exit(1);
  }
  const Copy c{smem, gmem, src_bytes};
  if (g_deferred) t_open.push_back(c);
  else do_copy(c);
}
void cp_async_commit() {
  t_groups.push_back(std::move(t_open));
  t_open.clear();
}
template <int N> void cp_async_wait() {
  while (int(t_groups.size()) > N) {
    for (const Copy& c : t_groups.front()) do_copy(c);
    t_groups.erase(t_groups.begin());
  }
}

void atomic_add2(float* p, float a, float b) {
  std::lock_guard<std::mutex> lock(g_atomic);
  p[0] += a;
  p[1] += b;
}

// The launch's dynamic shared memory (what `extern __shared__` names on the GPU).
inline unsigned char* dynamic_smem() { return smem_raw; }

// ---- launching ------------------------------------------------------------------------------------

// ---- launching ------------------------------------------------------------------------------------

template <typename Kernel, typename... Args>
void emu_launch(EmuDim grid, int threads, size_t smem_bytes, Kernel kernel, Args... args) {
  g_smem_bytes = smem_bytes;
  gridDim = grid;
  blockDim = EmuDim{unsigned(threads), 1, 1};
  for (unsigned by = 0; by < grid.y; ++by)
    for (unsigned bx = 0; bx < grid.x; ++bx) {
      blockIdx = EmuDim{bx, by, 0};
      std::memset(smem_raw, 0xff, sizeof(smem_raw));  // NaN: a read of unwritten shared memory shows
      g_block.block = std::make_unique<std::barrier<>>(threads);
      g_block.warp.clear();
      for (int w = 0; w < threads / 32; ++w) g_block.warp.push_back(std::make_unique<std::barrier<>>(32));
      g_block.slots.assign(threads / 32, WarpSlots{});
      std::vector<std::thread> pool;
      for (int t = 0; t < threads; ++t)
        pool.emplace_back([=] {
          threadIdx = EmuDim{unsigned(t), 0, 0};
          t_lane = t % 32;
          t_warp = t / 32;
          t_groups.clear();
          t_open.clear();
          kernel(args...);
          if (!t_groups.empty() || !t_open.empty()) {
            fprintf(stderr, "thread %d exits with cp.async copies never waited for\n", t);
            exit(1);
          }
        });
      for (auto& th : pool) th.join();
    }
}
