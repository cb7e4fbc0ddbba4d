// Binding for native/ops/comm.h: the NCCL communicator of a data-parallel rank (lib/train/distributed.ts).
// Builds without NCCL export the same functions; they fail with the reason, so `--gpus N` can say
// why it cannot run.
#include "../ops/comm.h"

#include <cstring>

#include "common.h"

namespace lowrank {
namespace binding {
namespace {

#ifdef LOWRANK_NCCL
constexpr bool kBuilt = true;
#else
constexpr bool kBuilt = false;
[[noreturn]] void no_nccl(const char* op) {
  fail(std::string(op) +
       ": this build of lowrank has no NCCL, which training on several GPUs needs. Rebuild on a machine with NCCL "
       "(nccl.h and libnccl.so, e.g. the libnccl-dev package or the nvidia-nccl-cu12/cu13 pip wheel with NCCL_HOME "
       "set to its folder) and CUDA: LOWRANK_NCCL=1 npm run build:native");
}
#endif

// commInfo() -> { built, version? }
Napi::Value CommInfo(const Napi::CallbackInfo& info) {
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("built", kBuilt);
#ifdef LOWRANK_NCCL
  o.Set("version", cuda::nccl_version());
#endif
  return o;
}

// commUniqueId() -> Uint8Array(128)
Napi::Value CommUniqueId(const Napi::CallbackInfo& info) {
#ifdef LOWRANK_NCCL
  Napi::Uint8Array out = Napi::Uint8Array::New(info.Env(), kCommIdBytes);
  cuda::comm_unique_id(out.Data());
  return out;
#else
  no_nccl("commUniqueId");
#endif
}

// commInit({ id: Uint8Array(128), world, rank, device, timeoutSeconds }) -> handle
Napi::Value CommInit(const Napi::CallbackInfo& info) {
  Args args(info, "commInit");
  Napi::TypedArray id = args.typed_array("id");
  if (id.TypedArrayType() != napi_uint8_array || id.ElementLength() != size_t(kCommIdBytes))
    args.fail_field("id", "must be a Uint8Array of " + std::to_string(kCommIdBytes) + " bytes (from commUniqueId)");
  int64_t world = args.integer("world"), rank = args.integer("rank"), device = args.integer("device");
  double timeout = args.num("timeoutSeconds");
  if (world < 1) args.fail_field("world", "must be >= 1");
  if (rank < 0 || rank >= world) args.fail_field("rank", "must be in [0, world)");
  if (device < 0 || device >= kMaxCudaDevices) args.fail_field("device", "is not a CUDA device index");
  if (!(timeout > 0)) args.fail_field("timeoutSeconds", "must be > 0");
#ifdef LOWRANK_NCCL
  const uint8_t* bytes = static_cast<const uint8_t*>(id.ArrayBuffer().Data()) + id.ByteOffset();
  return Napi::Number::New(info.Env(), cuda::comm_init(int(device), bytes, int(world), int(rank), timeout));
#else
  no_nccl(args.op);
#endif
}

// commAllReduceSum({ comm, buf, count }): buf (float32, on the communicator's GPU) summed over the ranks, in place.
Napi::Value CommAllReduceSum(const Napi::CallbackInfo& info) {
  Args args(info, "commAllReduceSum");
  int64_t handle = args.integer("comm");
  Buf buf = args.view("buf");
  int64_t count = args.size("count");
  buf.need(size_t(count) * sizeof(float), args.op);
  if (!buf.device().is_cuda()) args.fail_field("buf", "must be on a CUDA device (NCCL reduces GPU memory), not " + buf.device().str());
#ifdef LOWRANK_NCCL
  cuda::comm_all_reduce_sum_f32(int(handle), buf.as<float>(), count);
  return info.Env().Undefined();
#else
  (void)handle;
  no_nccl(args.op);
#endif
}

// commDestroy({ comm, abort })
Napi::Value CommDestroy(const Napi::CallbackInfo& info) {
  Args args(info, "commDestroy");
  int64_t handle = args.integer("comm");
  bool abort = args.flag("abort");
#ifdef LOWRANK_NCCL
  cuda::comm_destroy(int(handle), abort);
  return info.Env().Undefined();
#else
  (void)handle;
  (void)abort;
  no_nccl(args.op);
#endif
}

}  // namespace

LR_EXPORTS(comm) {
  exports.Set("commInfo", Napi::Function::New(env, CommInfo, "commInfo"));
  exports.Set("commUniqueId", Napi::Function::New(env, CommUniqueId, "commUniqueId"));
  exports.Set("commInit", Napi::Function::New(env, CommInit, "commInit"));
  exports.Set("commAllReduceSum", Napi::Function::New(env, CommAllReduceSum, "commAllReduceSum"));
  exports.Set("commDestroy", Napi::Function::New(env, CommDestroy, "commDestroy"));
}

}  // namespace binding
}  // namespace lowrank
