// Build features, devices, memory counters, threads and synchronization.
#include "../ops/crossentropy.h"
#include "../ops/elementwise.h"
#include "common.h"

#ifndef LOWRANK_VERSION
#define LOWRANK_VERSION "dev"
#endif

namespace lowrank {
namespace binding {
namespace {

int cuda_devices() {
#ifdef LOWRANK_CUDA
  return cuda::device_count();
#else
  return 0;
#endif
}

Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("version", LOWRANK_VERSION);
  o.Set("simd", cpu::simd_level());
  o.Set("threads", cpu::num_threads());
#ifdef LOWRANK_CUDA
  o.Set("cudaBuilt", true);
  int n = cuda::device_count();
  Napi::Array gpus = Napi::Array::New(env, n);
  for (int i = 0; i < n; ++i) gpus.Set(uint32_t(i), cuda::device_name(i));
  o.Set("gpus", gpus);
  o.Set("cudaRuntime", cuda::runtime_version());
  o.Set("cublas", n > 0 ? cuda::blas_version() : std::string("no device"));
#else
  o.Set("cudaBuilt", false);
  o.Set("gpus", Napi::Array::New(env, 0));
#endif
  return o;
}

Napi::Value Memory(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array out = Napi::Array::New(env);
  int n = cuda_devices();
  for (int d = -1; d < n && d < kMaxCudaDevices; ++d) {
    Device dev;
    if (d >= 0) {
      dev.type = Device::CUDA;
      dev.index = d;
    }
    MemCounters c = device_counters(dev);
    Napi::Object o = Napi::Object::New(env);
    o.Set("device", dev.str());
    o.Set("bytes", double(c.bytes));
    o.Set("buffers", double(c.buffers));
    o.Set("peakBytes", double(c.peak_bytes));
#ifdef LOWRANK_CUDA
    o.Set("reservedBytes", double(d >= 0 ? cuda::pool_reserved_bytes(d) : c.bytes));
#else
    o.Set("reservedBytes", double(c.bytes));
#endif
    out.Set(out.Length(), o);
  }
  return out;
}

template <size_t N>
Napi::Array names(Napi::Env env, const char* const (&list)[N]) {
  Napi::Array a = Napi::Array::New(env, N);
  for (size_t i = 0; i < N; ++i) a.Set(uint32_t(i), list[i]);
  return a;
}

// enums() -> { DType, BinaryOp, UnaryOp, Reduction }: each enum's member names in code order.
Napi::Value Enums(const Napi::CallbackInfo& info) {
  static const char* const dtypes[] = {LOWRANK_DTYPES(LR_ENUM_NAME)};
  static const char* const binary[] = {LOWRANK_BINARY_OPS(LR_ENUM_NAME)};
  static const char* const unary[] = {LOWRANK_UNARY_OPS(LR_ENUM_NAME)};
  static const char* const reductions[] = {LOWRANK_REDUCTIONS(LR_ENUM_NAME)};
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("DType", names(env, dtypes));
  o.Set("BinaryOp", names(env, binary));
  o.Set("UnaryOp", names(env, unary));
  o.Set("Reduction", names(env, reductions));
  return o;
}

Napi::Value Synchronize(const Napi::CallbackInfo& info) {
#ifdef LOWRANK_CUDA
  cuda::synchronize(static_cast<int>(int_arg(info, 0, "synchronize")));
#endif
  return info.Env().Undefined();
}

Napi::Value SetNumThreads(const Napi::CallbackInfo& info) {
  int64_t n = int_arg(info, 0, "setNumThreads");
  if (n < 1 || n > 1024) fail("setNumThreads: thread count must be between 1 and 1024, got " + std::to_string(n));
  cpu::set_num_threads(static_cast<int>(n));
  return info.Env().Undefined();
}

}  // namespace

LR_EXPORTS(runtime) {
  exports.Set("info", Napi::Function::New(env, Info, "info"));
  exports.Set("enums", Napi::Function::New(env, Enums, "enums"));
  exports.Set("memory", Napi::Function::New(env, Memory, "memory"));
  exports.Set("synchronize", Napi::Function::New(env, Synchronize, "synchronize"));
  exports.Set("setNumThreads", Napi::Function::New(env, SetNumThreads, "setNumThreads"));
}

}  // namespace binding
}  // namespace lowrank
