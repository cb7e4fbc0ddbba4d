// Storage: one native buffer on one device, owned by native code and freed by dispose() (the
// garbage-collector finalizer is only a safety net). JS tensors are views over a Storage.
#pragma once
#include <napi.h>

#include "../core/device.h"

namespace lowrank {
namespace binding {

class Storage : public Napi::ObjectWrap<Storage> {
 public:
  static Napi::Function Define(Napi::Env env);
  static bool IsStorage(Napi::Value v);
  explicit Storage(const Napi::CallbackInfo& info);  // new Storage(deviceType, deviceIndex, bytes)
  ~Storage() override;

  Device device() const { return device_; }
  char* data() const { return static_cast<char*>(data_); }
  size_t bytes() const { return bytes_; }
  bool disposed() const { return released_; }

 private:
  void release();
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value ByteLength(const Napi::CallbackInfo& info);
  Napi::Value DeviceName(const Napi::CallbackInfo& info);
  Napi::Value Disposed(const Napi::CallbackInfo& info);

  Device device_;
  void* data_ = nullptr;
  size_t bytes_ = 0;
  bool released_ = false;
};

}  // namespace binding
}  // namespace lowrank
