// CPU emulation of the CUDA subset dev/cuda/lora.cu uses, to run its correctness sweep on a host
// without a GPU (x86-64 Linux, g++ >= 10). Each CUDA thread of a block is a fiber on one OS
// thread, switched cooperatively at __syncthreads and warp shuffles (a generation barrier each);
// blocks run one after another, so `static` stands in for __shared__. Device memory is host
// memory, so AddressSanitizer sees out-of-bounds accesses to it and to the shared arrays.
// Not emulated: timing, alignment faults, races between fibers inside one barrier interval (a
// fiber runs until it waits), anything lora.cu does not use.
#pragma once
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>
#include <algorithm>
#include "../../../native/core/dtype.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
inline dim3 threadIdx{0}, blockIdx{0};
inline dim3 blockDim, gridDim;

struct float2 { float x, y; };
struct float4 { float x, y, z, w; };
struct uint4 { unsigned x, y, z, w; };
struct uint2 { unsigned x, y; };
inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }
inline int min(int a, int b) { return a < b ? a : b; }
template <typename T> T __ldg(const T* p) { return *p; }
// Rounded float32 arithmetic: the emulator builds for baseline x86-64, which has no FMA to contract into.
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }

struct __nv_bfloat16 { uint16_t bits; };
struct __nv_bfloat162 { __nv_bfloat16 x, y; };
inline float __bfloat162float(__nv_bfloat16 h) { return lowrank::bf16_to_f32(h.bits); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return {lowrank::f32_to_bf16(f)}; }
inline float2 __bfloat1622float2(__nv_bfloat162 h) { return {__bfloat162float(h.x), __bfloat162float(h.y)}; }
inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) { return {__float2bfloat16_rn(a), __float2bfloat16_rn(b)}; }

// Launch state: one fiber per CUDA thread of a block, switched cooperatively on one OS thread.
extern "C" void emu_switch(void** from_sp, void* to_sp);
asm(R"(
.text
.globl emu_switch
.type emu_switch,@function
emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
)");

struct EmuFiber { void* sp; bool done; std::unique_ptr<char[]> stack; };
constexpr size_t kEmuStack = 512 * 1024;
inline std::vector<EmuFiber> g_fibers;
inline unsigned g_cur = 0, g_nt = 0;
inline void* g_sched_sp = nullptr;
inline const std::function<void()>* g_body = nullptr;
inline unsigned g_bcount = 0, g_bgen = 0;
inline unsigned g_wcount[32], g_wgen[32];
inline uint64_t g_slots[1024];  // one per thread, wide enough for a double

inline void emu_yield() { emu_switch(&g_fibers[g_cur].sp, g_sched_sp); }
[[noreturn]] inline void emu_trampoline() {
  (*g_body)();
  g_fibers[g_cur].done = true;
  emu_switch(&g_fibers[g_cur].sp, g_sched_sp);
  __builtin_unreachable();
}
inline void __syncthreads() {
  const unsigned g = g_bgen;
  if (++g_bcount == g_nt) { g_bcount = 0; ++g_bgen; return; }
  while (g_bgen == g) emu_yield();
}
inline void emu_warp_barrier(unsigned w) {
  const unsigned g = g_wgen[w];
  if (++g_wcount[w] == 32) { g_wcount[w] = 0; ++g_wgen[w]; return; }
  while (g_wgen[w] == g) emu_yield();
}
inline void __syncwarp(unsigned = 0xffffffffu) { emu_warp_barrier(threadIdx.x / 32); }
// Lane `from(lane)`'s v for every lane of the warp (all 32 lanes must call it together).
template <typename T, typename From>
T emu_shuffle(T v, From from) {
  static_assert(sizeof(T) <= sizeof(uint64_t), "32- and 64-bit shuffles");
  const unsigned t = threadIdx.x, lane = t % 32, w = t / 32;
  memcpy(&g_slots[t], &v, sizeof v);
  emu_warp_barrier(w);
  T r;
  memcpy(&r, &g_slots[w * 32 + (from(lane) & 31)], sizeof r);
  emu_warp_barrier(w);
  return r;
}
template <typename T>
T __shfl_xor_sync(unsigned, T v, int off) { return emu_shuffle(v, [off](unsigned lane) { return lane ^ unsigned(off); }); }
template <typename T>
T __shfl_sync(unsigned, T v, int src) { return emu_shuffle(v, [src](unsigned) { return unsigned(src); }); }

inline std::pair<dim3, dim3> emu_dims(dim3 g, dim3 b) { return {g, b}; }
inline void emu_launch(std::pair<dim3, dim3> cfg, const std::function<void()>& body) {
  const dim3 g = cfg.first, b = cfg.second;
  const unsigned nt = b.x * b.y * b.z;
  if (b.y != 1 || b.z != 1 || nt > 1024 || nt % 32) { fprintf(stderr, "emu: unsupported block\n"); abort(); }
  gridDim = g;
  blockDim = b;
  g_nt = nt;
  g_body = &body;
  if (g_fibers.size() < nt) {
    size_t old = g_fibers.size();
    g_fibers.resize(nt);
    for (size_t i = old; i < nt; ++i) g_fibers[i].stack.reset(new char[kEmuStack]);
  }
  for (unsigned bz = 0; bz < g.z; ++bz)
    for (unsigned by = 0; by < g.y; ++by)
      for (unsigned bx = 0; bx < g.x; ++bx) {
        blockIdx = dim3(bx, by, bz);
        g_bcount = 0;
        for (unsigned w = 0; w < 32; ++w) g_wcount[w] = 0;
        for (unsigned t = 0; t < nt; ++t) {
          EmuFiber& f = g_fibers[t];
          f.done = false;
          uintptr_t top = (reinterpret_cast<uintptr_t>(f.stack.get()) + kEmuStack) & ~uintptr_t(15);
          void** sp = reinterpret_cast<void**>(top - 16);  // return slot, 16-byte aligned
          *sp = reinterpret_cast<void*>(&emu_trampoline);
          sp -= 6;                                          // r15 r14 r13 r12 rbx rbp
          for (int i = 0; i < 6; ++i) sp[i] = nullptr;
          f.sp = sp;
        }
        unsigned live = nt;
        while (live > 0) {
          for (unsigned t = 0; t < nt; ++t) {
            if (g_fibers[t].done) continue;
            g_cur = t;
            threadIdx = dim3(t);
            emu_switch(&g_sched_sp, g_fibers[t].sp);
            if (g_fibers[t].done) --live;
          }
        }
      }
  g_body = nullptr;
}

// Runtime API
typedef int cudaError_t;
constexpr cudaError_t cudaSuccess = 0;
enum cudaMemcpyKind { cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice };
typedef int cudaEvent_t;
struct cudaDeviceProp { char name[256]; int multiProcessorCount; int l2CacheSize; };
inline const char* cudaGetErrorString(cudaError_t) { return "emu error"; }
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
template <typename P> cudaError_t cudaMalloc(P** p, size_t n) { *p = static_cast<P*>(malloc(n)); return cudaSuccess; }
inline cudaError_t cudaFree(void* p) { free(p); return cudaSuccess; }
inline cudaError_t cudaMemset(void* p, int v, size_t n) { memset(p, v, n); return cudaSuccess; }
inline cudaError_t cudaMemcpy(void* d, const void* s, size_t n, cudaMemcpyKind) { memcpy(d, s, n); return cudaSuccess; }
inline cudaError_t cudaMemcpyAsync(void* d, const void* s, size_t n, cudaMemcpyKind) { memcpy(d, s, n); return cudaSuccess; }
inline cudaError_t cudaEventCreate(cudaEvent_t*) { return cudaSuccess; }
inline cudaError_t cudaEventDestroy(cudaEvent_t) { return cudaSuccess; }
inline cudaError_t cudaEventRecord(cudaEvent_t) { return cudaSuccess; }
inline cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
inline cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t, cudaEvent_t) { *ms = 1; return cudaSuccess; }
inline cudaError_t cudaGetDevice(int* d) { *d = 0; return cudaSuccess; }
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int) { strcpy(p->name, "emu"); p->multiProcessorCount = 4; p->l2CacheSize = 1 << 20; return cudaSuccess; }
