// Build features, devices, memory counters, threads, synchronization and profiling marks.
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

// Profiling marks (lib/profile.ts, LOWRANK_PROFILE=cuda); see backend.h.
[[noreturn]] void no_cuda_marks(const char* op) {
  fail(std::string(op) + ": this addon was built without CUDA; LOWRANK_PROFILE=cuda needs the CUDA build");
}

// profileMark(device) -> the mark's number
Napi::Value ProfileMark(const Napi::CallbackInfo& info) {
#ifdef LOWRANK_CUDA
  return Napi::Number::New(info.Env(), cuda::record_mark(static_cast<int>(int_arg(info, 0, "profileMark"))));
#else
  no_cuda_marks("profileMark");
#endif
}

// profileElapsed(marks: Int32Array of pairs [from, to, ...]) -> Float64Array: ms from each pair's
// first mark to its second, once both are done on the device.
Napi::Value ProfileElapsed(const Napi::CallbackInfo& info) {
#ifndef LOWRANK_CUDA
  no_cuda_marks("profileElapsed");
#else
  if (info.Length() < 1 || !info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array ||
      info[0].As<Napi::Int32Array>().ElementLength() % 2 != 0) {
    fail("profileElapsed: expects an Int32Array of mark pairs [from, to, ...]");
  }
  const Napi::Int32Array marks = info[0].As<Napi::Int32Array>();
  Napi::Float64Array out = Napi::Float64Array::New(info.Env(), marks.ElementLength() / 2);
  for (size_t i = 0; i < out.ElementLength(); ++i) out[i] = cuda::mark_elapsed_ms(marks[2 * i], marks[2 * i + 1]);
  return out;
#endif
}

Napi::Value ProfileResetMarks(const Napi::CallbackInfo& info) {
#ifdef LOWRANK_CUDA
  cuda::reset_marks();
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
  exports.Set("profileMark", Napi::Function::New(env, ProfileMark, "profileMark"));
  exports.Set("profileElapsed", Napi::Function::New(env, ProfileElapsed, "profileElapsed"));
  exports.Set("profileResetMarks", Napi::Function::New(env, ProfileResetMarks, "profileResetMarks"));
}

}  // namespace binding
}  // namespace lowrank
