#include "storage.h"

#include "common.h"

namespace lowrank {
namespace binding {
namespace {
Napi::FunctionReference* g_constructor = nullptr;
}

Napi::Function Storage::Define(Napi::Env env) {
  Napi::Function ctor = DefineClass(env, "Storage",
                                    {InstanceMethod("dispose", &Storage::Dispose),
                                     InstanceAccessor("byteLength", &Storage::ByteLength, nullptr),
                                     InstanceAccessor("device", &Storage::DeviceName, nullptr),
                                     InstanceAccessor("disposed", &Storage::Disposed, nullptr)});
  g_constructor = new Napi::FunctionReference(Napi::Persistent(ctor));
  env.SetInstanceData(g_constructor);
  return ctor;
}

bool Storage::IsStorage(Napi::Value v) {
  return g_constructor && v.IsObject() && v.As<Napi::Object>().InstanceOf(g_constructor->Value());
}

Storage::Storage(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Storage>(info) {
  int64_t type = int_arg(info, 0, "Storage"), index = int_arg(info, 1, "Storage"), bytes = int_arg(info, 2, "Storage");
  if (bytes < 0) fail("Storage: byte length must be >= 0, got " + std::to_string(bytes));
  device_.type = type == 1 ? Device::CUDA : Device::CPU;
  device_.index = static_cast<int32_t>(index);
  bytes_ = static_cast<size_t>(bytes);
  data_ = device_alloc(device_, bytes_);
}

Storage::~Storage() { release(); }

void Storage::release() {
  if (released_) return;
  released_ = true;
  device_free(device_, data_, bytes_);
  data_ = nullptr;
}

Napi::Value Storage::Dispose(const Napi::CallbackInfo& info) {
  release();
  return info.Env().Undefined();
}

Napi::Value Storage::ByteLength(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), double(bytes_)); }
Napi::Value Storage::DeviceName(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), device_.str()); }
Napi::Value Storage::Disposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), released_); }

LR_EXPORTS(storage) { exports.Set("Storage", Storage::Define(env)); }

}  // namespace binding
}  // namespace lowrank
