// Device selection, streams, stream-ordered allocation and copies, profiling marks.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "common.cuh"

namespace lowrank {
namespace cuda {
namespace {
cudaStream_t g_streams[kMaxCudaDevices] = {};
std::mutex g_stream_mutex;
// The device this host thread last selected, and its stream: every op calls set_device and
// current_stream, so they answer from these instead of a driver call (and a lock) each time.
thread_local int t_device = -1;
thread_local cudaStream_t t_stream = nullptr;
}  // namespace

void set_device(int device) {
  if (device == t_device) return;
  LR_CUDA_CHECK(cudaSetDevice(device));
  t_device = device;
  t_stream = nullptr;
}

// The device's default stream-ordered pool keeps what is freed into it. Its release threshold is 0
// by default: at every synchronization (each step's loss.item(), and after every launch under
// CUDA_LAUNCH_BLOCKING) the driver unmaps all unused pool memory, so the next step maps its
// activations from the OS again, block by block. Keeping everything makes a step's allocations
// pool hits; alloc() trims the pool when the device runs out instead.
static void keep_freed_memory(int device) {
  cudaMemPool_t pool = nullptr;
  LR_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device));
  uint64_t keep_all = UINT64_MAX;
  LR_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep_all));
}

cudaStream_t current_stream() {
  if (t_stream) return t_stream;
  if (t_device < 0) LR_CUDA_CHECK(cudaGetDevice(&t_device));
  std::lock_guard<std::mutex> lock(g_stream_mutex);
  if (!g_streams[t_device]) {
    keep_freed_memory(t_device);
    LR_CUDA_CHECK(cudaStreamCreateWithFlags(&g_streams[t_device], cudaStreamNonBlocking));
  }
  t_stream = g_streams[t_device];
  return t_stream;
}

// cudaMallocAsync draws from the driver's stream-ordered pool, which caches freed blocks, so a
// training step that frees and re-allocates the same sizes does not go back to the driver.
//
// Out of memory: the failed call's error is cleared (left pending, it made the next, unrelated
// launch fail too), the stream is drained so that blocks freed by queued work return to the
// pool, the pool's unused memory is handed back to the device (it keeps all of it otherwise, see
// keep_freed_memory: its free blocks may be the wrong sizes, and cuBLAS allocates outside it), and
// the allocation is tried once more; if it still fails, the error says how much was asked and
// how much is free.
void* alloc(int device, size_t bytes) {
  set_device(device);
  const size_t n = bytes == 0 ? 256 : bytes;
  void* p = nullptr;
  cudaError_t err = cudaMallocAsync(&p, n, current_stream());
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    LR_CUDA_CHECK(cudaStreamSynchronize(current_stream()));
    cudaMemPool_t pool = nullptr;
    LR_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device));
    LR_CUDA_CHECK(cudaMemPoolTrimTo(pool, 0));
    err = cudaMallocAsync(&p, n, current_stream());
  }
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    size_t free_bytes = 0, total_bytes = 0;
    cudaMemGetInfo(&free_bytes, &total_bytes);
    cudaGetLastError();
    constexpr double kMiB = 1024.0 * 1024.0;
    char msg[320];
    std::snprintf(msg, sizeof msg,
                  "CUDA out of memory on cuda:%d: asked for %.1f MiB, %.1f MiB free of %.1f MiB. Free tensors you no "
                  "longer need (dispose() / tidy()), or lower the batch size or sequence length.",
                  device, double(n) / kMiB, double(free_bytes) / kMiB, double(total_bytes) / kMiB);
    throw std::runtime_error(msg);
  }
  LR_CUDA_CHECK(err);
  return p;
}

void free(int device, void* ptr) {
  set_device(device);
  LR_CUDA_CHECK(cudaFreeAsync(ptr, current_stream()));
}

void copy_host_to_device(int device, void* dst, const void* src, size_t bytes) {
  set_device(device);
  // Pageable host memory: the copy is staged and returns once `src` may be reused.
  LR_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, current_stream()));
  LR_CUDA_CHECK(cudaStreamSynchronize(current_stream()));
}

void copy_device_to_host(int device, void* dst, const void* src, size_t bytes) {
  set_device(device);
  LR_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, current_stream()));
  LR_CUDA_CHECK(cudaStreamSynchronize(current_stream()));
}

void copy_device_to_device(int device, void* dst, const void* src, size_t bytes) {
  set_device(device);
  LR_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, current_stream()));
}

void synchronize(int device) {
  set_device(device);
  LR_CUDA_CHECK(cudaStreamSynchronize(current_stream()));
}

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error: no driver or no device means zero devices
    return 0;
  }
  return n;
}

std::string device_name(int device) {
  cudaDeviceProp prop;
  LR_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  return std::string(prop.name) + " (sm_" + std::to_string(prop.major) + std::to_string(prop.minor) + ", " +
         std::to_string(prop.totalGlobalMem >> 20) + " MiB)";
}

size_t pool_reserved_bytes(int device) {
  cudaMemPool_t pool = nullptr;
  LR_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device));
  uint64_t reserved = 0;
  LR_CUDA_CHECK(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemCurrent, &reserved));
  return size_t(reserved);
}

namespace {
struct Mark {
  cudaEvent_t event;
  int device;  // events belong to the device they were created on
};
std::vector<Mark> g_marks;  // created on first use, kept for the next round of marks
size_t g_marks_used = 0;
}  // namespace

int record_mark(int device) {
  set_device(device);
  if (g_marks_used == g_marks.size()) g_marks.push_back({nullptr, -1});
  Mark& m = g_marks[g_marks_used];
  if (m.device != device) {
    if (m.event) LR_CUDA_CHECK(cudaEventDestroy(m.event));
    LR_CUDA_CHECK(cudaEventCreate(&m.event));
    m.device = device;
  }
  LR_CUDA_CHECK(cudaEventRecord(m.event, current_stream()));
  return int(g_marks_used++);
}

double mark_elapsed_ms(int from, int to) {
  if (from < 0 || to < 0 || size_t(std::max(from, to)) >= g_marks_used) {
    throw std::runtime_error("profile marks " + std::to_string(from) + ", " + std::to_string(to) + ": only " +
                             std::to_string(g_marks_used) + " recorded since the last reset");
  }
  const Mark &a = g_marks[size_t(from)], &b = g_marks[size_t(to)];
  set_device(b.device);
  LR_CUDA_CHECK(cudaEventSynchronize(b.event));
  float ms = 0;
  LR_CUDA_CHECK(cudaEventElapsedTime(&ms, a.event, b.event));
  return ms;
}

void reset_marks() { g_marks_used = 0; }

std::string runtime_version() {
  int v = 0;
  cudaRuntimeGetVersion(&v);
  return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
}

}  // namespace cuda
}  // namespace lowrank
