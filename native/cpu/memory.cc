// Host buffers: 64-byte aligned so SIMD kernels may use aligned loads on fresh tensors.
//
// Large buffers are cached after free and handed out again for the same rounded size: a training
// step allocates the same activation and gradient sizes every step, and fresh large allocations
// come from mmap, so without the cache every step pays page faults on hundreds of megabytes
// (measured: ~1 s to allocate and fill 206 MB on this VM). LOWRANK_CPU_CACHE_MB caps the cache
// (default 2048; 0 disables it). memory() counts live buffers only, never cached ones.
//
// Buffers of 2 MiB and more start on a 2 MiB boundary and ask Linux for transparent huge pages
// (MADV_HUGEPAGE; most distributions enable THP only where asked, "madvise" mode). A training step
// streams every weight twice (forward and the input gradient) and its activations several times:
// with 4 KiB pages each 4 KiB costs a TLB miss, a page walk that the GEMMs' packing loops wait
// on. Measured on a GPT-2 124M LoRA step (2 Zen 5 cores, interleaved profiles): the m = 256 GEMMs
// 297-345 -> 310-360 GFLOP/s, the step's native calls 544-571 -> 513-544 ms.
#include <cstdlib>
#include <map>
#include <mutex>
#include <new>

#ifdef __linux__
#include <sys/mman.h>
#endif

#include "../backend.h"

namespace lowrank {
namespace cpu {
namespace {
constexpr size_t kCacheMinBytes = size_t(1) << 16;  // smaller blocks are malloc's business
constexpr size_t kHugePage = size_t(2) << 20;        // x86-64's transparent huge page

size_t cache_limit() {
  static const size_t limit = [] {
    const char* env = std::getenv("LOWRANK_CPU_CACHE_MB");
    long mb = env ? std::atol(env) : 2048;
    return mb > 0 ? size_t(mb) << 20 : size_t(0);
  }();
  return limit;
}

// Rounded sizes: 64 bytes for small blocks, 64 KiB for cached ones (bounded waste, more reuse).
size_t rounded(size_t bytes) {
  size_t unit = bytes >= kCacheMinBytes ? kCacheMinBytes : 64;
  size_t r = (bytes + unit - 1) / unit * unit;
  return r == 0 ? 64 : r;
}

std::mutex g_mutex;
std::multimap<size_t, void*> g_cached;  // rounded size -> free block
size_t g_cached_bytes = 0;
}  // namespace

void* alloc(size_t bytes) {
  size_t size = rounded(bytes);
  if (size >= kCacheMinBytes) {
    std::lock_guard<std::mutex> lock(g_mutex);
    auto it = g_cached.find(size);
    if (it != g_cached.end()) {
      void* p = it->second;
      g_cached.erase(it);
      g_cached_bytes -= size;
      return p;
    }
  }
  const bool huge = size >= kHugePage;
  void* p = nullptr;
  if (posix_memalign(&p, huge ? kHugePage : 64, size) != 0) throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
  if (huge) madvise(p, size, MADV_HUGEPAGE);  // a hint: where THP is off, 4 KiB pages as before
#endif
  return p;
}

void free(void* ptr, size_t bytes) {
  size_t size = rounded(bytes);
  if (size >= kCacheMinBytes) {
    std::lock_guard<std::mutex> lock(g_mutex);
    if (g_cached_bytes + size <= cache_limit()) {
      g_cached.emplace(size, ptr);
      g_cached_bytes += size;
      return;
    }
  }
  std::free(ptr);
}

}  // namespace cpu
}  // namespace lowrank
