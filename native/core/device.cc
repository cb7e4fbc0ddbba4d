#include "device.h"

#include <atomic>
#include <mutex>

#include "../backend.h"

namespace lowrank {
namespace {
std::mutex g_mutex;
MemCounters g_counters[1 + kMaxCudaDevices];
MemCounters& slot(Device d) {
  if (d.is_cuda() && (d.index < 0 || d.index >= kMaxCudaDevices))
    throw std::runtime_error("device index out of range: " + d.str());
  return g_counters[d.is_cuda() ? 1 + d.index : 0];
}
}  // namespace

void* device_alloc(Device d, size_t bytes) {
  void* p = nullptr;
  if (d.is_cuda()) {
#ifdef LOWRANK_CUDA
    p = cuda::alloc(d.index, bytes);
#else
    throw std::runtime_error("this build of lowrank has no CUDA backend; use device 'cpu'");
#endif
  } else {
    p = cpu::alloc(bytes);
  }
  std::lock_guard<std::mutex> lock(g_mutex);
  MemCounters& c = slot(d);
  c.bytes += static_cast<int64_t>(bytes);
  c.buffers += 1;
  if (c.bytes > c.peak_bytes) c.peak_bytes = c.bytes;
  return p;
}

void device_free(Device d, void* ptr, size_t bytes) {
  if (d.is_cuda()) {
#ifdef LOWRANK_CUDA
    cuda::free(d.index, ptr);
#endif
  } else {
    cpu::free(ptr, bytes);
  }
  std::lock_guard<std::mutex> lock(g_mutex);
  MemCounters& c = slot(d);
  c.bytes -= static_cast<int64_t>(bytes);
  c.buffers -= 1;
}

MemCounters device_counters(Device d) {
  std::lock_guard<std::mutex> lock(g_mutex);
  return slot(d);
}

}  // namespace lowrank
