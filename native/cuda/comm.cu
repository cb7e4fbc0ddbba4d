// Every NCCL call in lowrank lives in this file, so the kernels in the other .cu files compile on
// hosts that have nvcc but not NCCL (CI compiles them without this one), and builds without NCCL
// leave it out (CMakeLists.txt).
//
// Communicators are non-blocking (config.blocking = 0): each call returns at once and the host
// polls ncclCommGetAsyncError (and, for the all-reduce, the stream) with a deadline, so a peer
// that died or hangs makes the survivors abort the communicator and throw instead of waiting
// forever (what NCCL_ASYNC_ERROR_HANDLING / the process-group timeout do in PyTorch).
#include <nccl.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "../ops/comm.h"
#include "common.cuh"

namespace lowrank {
namespace cuda {
namespace {

static_assert(NCCL_UNIQUE_ID_BYTES == kCommIdBytes, "NCCL's unique id size changed");

struct Comm {
  ncclComm_t comm = nullptr;
  int device = 0, world = 0, rank = 0;
  double timeout_s = 0;
};

std::mutex g_mutex;
std::vector<Comm*> g_comms;  // by handle; nullptr once destroyed

std::string describe(const Comm& c) {
  return "rank " + std::to_string(c.rank) + " of " + std::to_string(c.world) + " (cuda:" + std::to_string(c.device) + ")";
}

void check_nccl(ncclResult_t r, const char* what) {
  if (r != ncclSuccess && r != ncclInProgress)
    throw std::runtime_error(std::string("NCCL error in ") + what + ": " + ncclGetErrorString(r));
}

Comm& get(int handle) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (handle < 0 || handle >= static_cast<int>(g_comms.size()) || !g_comms[handle])
    throw std::runtime_error("NCCL communicator " + std::to_string(handle) + " does not exist (destroyed, or never made)");
  return *g_comms[handle];
}

// Aborts the communicator (its resources are freed, pending work is cancelled) and throws `why`.
[[noreturn]] void abort_and_throw(Comm& c, const std::string& why) {
  ncclCommAbort(c.comm);
  c.comm = nullptr;
  throw std::runtime_error(why);
}

// Polls until `done()` and NCCL reports no call in progress, an error, or the deadline.
template <typename Done>
void wait(Comm& c, const char* what, Done done) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(c.timeout_s);
  for (;;) {
    ncclResult_t state = ncclSuccess;
    check_nccl(ncclCommGetAsyncError(c.comm, &state), "ncclCommGetAsyncError");
    if (state != ncclSuccess && state != ncclInProgress)
      abort_and_throw(c, std::string("NCCL ") + what + " failed on " + describe(c) + ": " + ncclGetErrorString(state) +
                             " (another rank probably died; its own error names the cause)");
    if (state == ncclSuccess && done()) return;
    if (std::chrono::steady_clock::now() > deadline)
      abort_and_throw(c, std::string("NCCL ") + what + " on " + describe(c) + " did not complete within " +
                             std::to_string(static_cast<int>(c.timeout_s)) +
                             " s: another rank died or hangs (LOWRANK_NCCL_TIMEOUT sets the limit in seconds)");
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

}  // namespace

std::string nccl_version() {
  int v = 0;
  check_nccl(ncclGetVersion(&v), "ncclGetVersion");
  return std::to_string(v / 10000) + "." + std::to_string((v / 100) % 100) + "." + std::to_string(v % 100);
}

void comm_unique_id(uint8_t* out) {
  ncclUniqueId id;
  check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
  std::memcpy(out, id.internal, kCommIdBytes);
}

int comm_init(int device, const uint8_t* id, int world, int rank, double timeout_s) {
  set_device(device);
  auto c = new Comm{nullptr, device, world, rank, timeout_s};
  ncclUniqueId uid;
  std::memcpy(uid.internal, id, kCommIdBytes);
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  try {
    ncclResult_t r = ncclCommInitRankConfig(&c->comm, world, uid, rank, &config);
    if (r != ncclSuccess && r != ncclInProgress) {
      if (c->comm) ncclCommAbort(c->comm);
      throw std::runtime_error("NCCL error in ncclCommInitRankConfig on " + describe(*c) + ": " + ncclGetErrorString(r));
    }
    wait(*c, "communicator setup (ncclCommInitRank)", [] { return true; });
  } catch (...) {
    delete c;
    throw;
  }
  std::lock_guard<std::mutex> lock(g_mutex);
  g_comms.push_back(c);
  return static_cast<int>(g_comms.size()) - 1;
}

void comm_all_reduce_sum_f32(int handle, float* data, int64_t count) {
  Comm& c = get(handle);
  if (!c.comm) throw std::runtime_error("NCCL communicator of " + describe(c) + " was aborted after an earlier error");
  set_device(c.device);
  cudaStream_t stream = current_stream();
  check_nccl(ncclAllReduce(data, data, static_cast<size_t>(count), ncclFloat32, ncclSum, c.comm, stream), "ncclAllReduce");
  cudaEvent_t done = nullptr;
  LR_CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
  try {
    wait(c, "all-reduce (enqueue)", [] { return true; });
    LR_CUDA_CHECK(cudaEventRecord(done, stream));
    wait(c, "all-reduce", [&] {
      cudaError_t e = cudaEventQuery(done);
      if (e == cudaErrorNotReady) return false;
      LR_CUDA_CHECK(e);
      return true;
    });
  } catch (...) {
    cudaEventDestroy(done);
    throw;
  }
  LR_CUDA_CHECK(cudaEventDestroy(done));
}

void comm_destroy(int handle, bool abort) {
  Comm* c = nullptr;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    if (handle < 0 || handle >= static_cast<int>(g_comms.size()) || !g_comms[handle]) return;
    c = g_comms[handle];
    g_comms[handle] = nullptr;
  }
  std::unique_ptr<Comm> owner(c);
  if (!c->comm) return;  // aborted already
  set_device(c->device);
  if (abort) {
    check_nccl(ncclCommAbort(c->comm), "ncclCommAbort");
    return;
  }
  // Finalize flushes the communicator's outstanding work and syncs with the peers (bounded by the
  // timeout); then destroy frees it.
  check_nccl(ncclCommFinalize(c->comm), "ncclCommFinalize");
  wait(*c, "shutdown (ncclCommFinalize)", [] { return true; });
  check_nccl(ncclCommDestroy(c->comm), "ncclCommDestroy");
}

}  // namespace cuda
}  // namespace lowrank
