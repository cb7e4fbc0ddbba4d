// Bindings for moving bytes in and out of storages, and the creation kernels (native/ops/creation.h).
#include <cstring>
#include <vector>

#include "../ops/creation.h"
#include "common.h"

namespace lowrank {
namespace binding {
namespace {

// write({ dst, data }): the host bytes of a typed array into a storage on any device.
Napi::Value Write(const Napi::CallbackInfo& info) {
  Args a(info, "write");
  Buf dst = a.view("dst");
  Napi::TypedArray src = a.typed_array("data");
  Napi::ArrayBuffer ab = src.ArrayBuffer();
  const char* bytes = static_cast<const char*>(ab.Data()) + src.ByteOffset();
  size_t n = src.ByteLength();
  dst.need(n, "write");
  if (dst.device().is_cuda()) {
#ifdef LOWRANK_CUDA
    cuda::copy_host_to_device(dst.device().index, dst.ptr, bytes, n);
#endif
  } else {
    std::memcpy(dst.ptr, bytes, n);
  }
  return info.Env().Undefined();
}

// read({ src, bytes }) -> ArrayBuffer: a host copy (waits for queued GPU work).
Napi::Value Read(const Napi::CallbackInfo& info) {
  Args a(info, "read");
  Buf src = a.view("src");
  int64_t n = a.size("bytes");
  src.need(static_cast<size_t>(n), "read");
  Napi::ArrayBuffer out = Napi::ArrayBuffer::New(info.Env(), static_cast<size_t>(n));
  if (src.device().is_cuda()) {
#ifdef LOWRANK_CUDA
    cuda::copy_device_to_host(src.device().index, out.Data(), src.ptr, static_cast<size_t>(n));
#endif
  } else {
    std::memcpy(out.Data(), src.ptr, static_cast<size_t>(n));
  }
  return out;
}

// readAsync(src, byteOffset, byteLength) -> Promise<ArrayBuffer>: the copy (and the wait for queued
// GPU work) runs on a libuv worker thread, so the event loop keeps running meanwhile.
class ReadWorker : public Napi::AsyncWorker {
 public:
  ReadWorker(Napi::Env env, Napi::Object owner, Device device, const char* src, size_t bytes)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), device_(device), src_(src), host_(bytes) {
    owner_ = Napi::Persistent(owner);  // keeps the storage alive until the copy is done
  }
  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    if (device_.is_cuda()) {
#ifdef LOWRANK_CUDA
      cuda::copy_device_to_host(device_.index, host_.data(), src_, host_.size());
#endif
    } else {
      std::memcpy(host_.data(), src_, host_.size());
    }
  }
  void OnOK() override {
    Napi::ArrayBuffer out = Napi::ArrayBuffer::New(Env(), host_.size());
    std::memcpy(out.Data(), host_.data(), host_.size());
    deferred_.Resolve(out);
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  Napi::ObjectReference owner_;
  Device device_;
  const char* src_;
  std::vector<char> host_;
};

// readAsync({ src, bytes }) -> Promise<ArrayBuffer>
Napi::Value ReadAsync(const Napi::CallbackInfo& info) {
  Args a(info, "readAsync");
  Buf src = a.view("src");
  int64_t n = a.size("bytes");
  src.need(static_cast<size_t>(n), "readAsync");
  auto* worker = new ReadWorker(info.Env(), src.storage->Value(), src.device(), src.ptr, static_cast<size_t>(n));
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

// copyBytes({ dst, src, bytes }): between any two devices.
Napi::Value CopyBytes(const Napi::CallbackInfo& info) {
  Args a(info, "copyBytes");
  Buf dst = a.view("dst"), src = a.view("src");
  int64_t n = a.size("bytes");
  dst.need(static_cast<size_t>(n), "copyBytes");
  src.need(static_cast<size_t>(n), "copyBytes");
  Device dd = dst.device(), sd = src.device();
  if (!dd.is_cuda() && !sd.is_cuda()) {
    std::memmove(dst.ptr, src.ptr, static_cast<size_t>(n));
    return info.Env().Undefined();
  }
#ifdef LOWRANK_CUDA
  if (dd.is_cuda() && sd.is_cuda()) {
    if (dd.index != sd.index) {
      std::vector<char> staging(static_cast<size_t>(n));
      cuda::copy_device_to_host(sd.index, staging.data(), src.ptr, staging.size());
      cuda::copy_host_to_device(dd.index, dst.ptr, staging.data(), staging.size());
    } else {
      cuda::copy_device_to_device(dd.index, dst.ptr, src.ptr, static_cast<size_t>(n));
    }
  } else if (dd.is_cuda()) {
    cuda::copy_host_to_device(dd.index, dst.ptr, src.ptr, static_cast<size_t>(n));
  } else {
    cuda::copy_device_to_host(sd.index, dst.ptr, src.ptr, static_cast<size_t>(n));
  }
#endif
  return info.Env().Undefined();
}

// fill({ dst, dtype, n, value })
Napi::Value Fill(const Napi::CallbackInfo& info) {
  Args a(info, "fill");
  Buf dst = a.view("dst");
  DType t = a.dtype("dtype");
  int64_t n = a.size("n");
  dst.need(n * dtype_size(t), "fill");
  LR_DISPATCH(dst.device(), fill(dst.ptr, t, n, a.num("value")));
  return info.Env().Undefined();
}

// arange({ dst, dtype, n, start, step })
Napi::Value Arange(const Napi::CallbackInfo& info) {
  Args a(info, "arange");
  Buf dst = a.view("dst");
  DType t = a.dtype("dtype");
  int64_t n = a.size("n");
  dst.need(n * dtype_size(t), "arange");
  LR_DISPATCH(dst.device(), arange(dst.ptr, t, n, a.num("start"), a.num("step")));
  return info.Env().Undefined();
}

// cast({ src, srcDtype, dst, dstDtype, n })
Napi::Value Cast(const Napi::CallbackInfo& info) {
  Args a(info, "cast");
  Buf src = a.view("src"), dst = a.view("dst");
  DType st = a.dtype("srcDtype"), dt = a.dtype("dstDtype");
  int64_t n = a.size("n");
  src.need(n * dtype_size(st), "cast");
  dst.need(n * dtype_size(dt), "cast");
  LR_DISPATCH(same_device("cast", {&src, &dst}), cast(src.ptr, st, dst.ptr, dt, n));
  return info.Env().Undefined();
}

// Highest element offset a view reaches, plus one (0 for an empty view).
int64_t view_extent(const std::vector<int64_t>& shape, const std::vector<int64_t>& strides) {
  int64_t max_off = 0;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 0) return 0;
    if (strides[d] < 0) fail("copyStrided: negative strides are not supported");
    max_off += (shape[d] - 1) * strides[d];
  }
  return max_off + 1;
}

// copyStrided({ src, dst, shape, elemSize }): copies one view into another of the same shape.
// Both views carry strides (in elements); source strides may be zero (broadcast).
Napi::Value CopyStrided(const Napi::CallbackInfo& info) {
  Args a(info, "copyStrided");
  Buf src = a.view("src"), dst = a.view("dst");
  const std::vector<int64_t>&ss = src.strides, &ds = dst.strides;
  std::vector<int64_t> shape = a.ints("shape");
  int64_t elem = a.integer("elemSize");
  if (shape.size() != ss.size() || shape.size() != ds.size() || shape.size() > kMaxDims)
    fail("copyStrided: shape and strides must have the same length, at most " + std::to_string(kMaxDims));
  if (elem != 2 && elem != 4) fail("copyStrided: element size must be 2 or 4");
  src.need(view_extent(shape, ss) * elem, "copyStrided");
  dst.need(view_extent(shape, ds) * elem, "copyStrided");
  LR_DISPATCH(same_device("copyStrided", {&src, &dst}),
              copy_strided(src.ptr, ss.data(), dst.ptr, ds.data(), static_cast<size_t>(elem), static_cast<int>(shape.size()), shape.data()));
  return info.Env().Undefined();
}

// randomUniform({ dst, n, seed, offset, low, high }) / randomNormal({ dst, n, seed, offset, mean, std }): float32.
Napi::Value RandomUniform(const Napi::CallbackInfo& info) {
  Args a(info, "randomUniform");
  Buf dst = a.view("dst");
  int64_t n = a.size("n");
  dst.need(n * 4, "randomUniform");
  LR_DISPATCH(dst.device(), random_uniform(dst.as<float>(), n, a.u64("seed"), a.u64("offset"), float(a.num("low")), float(a.num("high"))));
  return info.Env().Undefined();
}

Napi::Value RandomNormal(const Napi::CallbackInfo& info) {
  Args a(info, "randomNormal");
  Buf dst = a.view("dst");
  int64_t n = a.size("n");
  dst.need(n * 4, "randomNormal");
  LR_DISPATCH(dst.device(), random_normal(dst.as<float>(), n, a.u64("seed"), a.u64("offset"), float(a.num("mean")), float(a.num("std"))));
  return info.Env().Undefined();
}

}  // namespace

LR_EXPORTS(creation) {
  exports.Set("write", Napi::Function::New(env, Write, "write"));
  exports.Set("read", Napi::Function::New(env, Read, "read"));
  exports.Set("readAsync", Napi::Function::New(env, ReadAsync, "readAsync"));
  exports.Set("copyBytes", Napi::Function::New(env, CopyBytes, "copyBytes"));
  exports.Set("fill", Napi::Function::New(env, Fill, "fill"));
  exports.Set("arange", Napi::Function::New(env, Arange, "arange"));
  exports.Set("cast", Napi::Function::New(env, Cast, "cast"));
  exports.Set("copyStrided", Napi::Function::New(env, CopyStrided, "copyStrided"));
  exports.Set("randomUniform", Napi::Function::New(env, RandomUniform, "randomUniform"));
  exports.Set("randomNormal", Napi::Function::New(env, RandomNormal, "randomNormal"));
}

}  // namespace binding
}  // namespace lowrank
