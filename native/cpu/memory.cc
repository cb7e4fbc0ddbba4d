// Host buffers: 64-byte aligned so SIMD kernels may use aligned loads on fresh tensors.
#include <cstdlib>
#include <new>

#include "../backend.h"

namespace lowrank {
namespace cpu {

void* alloc(size_t bytes) {
  size_t rounded = ((bytes + 63) / 64) * 64;
  void* p = std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
  if (!p) throw std::bad_alloc();
  return p;
}

void free(void* ptr) { std::free(ptr); }

}  // namespace cpu
}  // namespace lowrank
