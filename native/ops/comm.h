// Collective communication between processes, one per GPU (data-parallel training): NCCL, whose
// every call lives in native/cuda/comm.cu, as cuBLAS's do in matmul.cu. Only builds that found
// NCCL (LOWRANK_NCCL, see CMakeLists.txt) have these; the binding (binding/comm.cc) says why not
// otherwise. A communicator is named by a small integer handle.
#pragma once
#include <cstdint>
#include <string>

namespace lowrank {

// Bytes of an NCCL unique id (NCCL_UNIQUE_ID_BYTES), the token the launcher hands every rank.
constexpr int kCommIdBytes = 128;

#ifdef LOWRANK_NCCL
namespace cuda {
std::string nccl_version();
// A fresh unique id (made once, by the launcher) into out[kCommIdBytes].
void comm_unique_id(uint8_t* out);
// Joins the communicator of `world` ranks named by `id` as `rank`, on `device`. Every call that
// waits (this one, all-reduce, destroy) gives up after timeout_s seconds, aborts the communicator
// and throws, so a dead peer cannot hang the survivors. Returns the handle.
int comm_init(int device, const uint8_t* id, int world, int rank, double timeout_s);
// data[0, count) = the sum over ranks, in place, on lowrank's stream of the communicator's
// device; returns when it is done on the device (the caller reads the result right after).
void comm_all_reduce_sum_f32(int handle, float* data, int64_t count);
// Frees the communicator: after flushing it with the peers (finalize, bounded by the timeout), or
// at once (abort: after an error, when the peers may be gone or stuck).
void comm_destroy(int handle, bool abort);
}  // namespace cuda
#endif

}  // namespace lowrank
