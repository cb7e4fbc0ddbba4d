// Where a buffer lives, and the byte accounting behind lowrank.memory().
#pragma once
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace lowrank {

constexpr int kMaxCudaDevices = 16;

struct Device {
  enum Type : int32_t { CPU = 0, CUDA = 1 } type = CPU;
  int32_t index = 0;
  bool is_cuda() const { return type == CUDA; }
  std::string str() const { return is_cuda() ? "cuda:" + std::to_string(index) : std::string("cpu"); }
};

struct MemCounters {
  int64_t bytes = 0;        // bytes held by live buffers
  int64_t buffers = 0;      // live buffers
  int64_t peak_bytes = 0;   // high-water mark of `bytes`
};

// Allocation through the owning backend; every byte is counted so tests can prove no leaks.
void* device_alloc(Device d, size_t bytes);
void device_free(Device d, void* ptr, size_t bytes);
MemCounters device_counters(Device d);

}  // namespace lowrank
