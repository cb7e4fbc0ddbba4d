// Helpers shared by the binding files: argument parsing with bounds checks, device dispatch, and
// a registry so each op family's binding file adds its own exports (addon.cc lists none of them).
#pragma once
#include <napi.h>

#include <cstdint>
#include <string>
#include <vector>

#include "../backend.h"
#include "../core/device.h"
#include "storage.h"

namespace lowrank {
namespace binding {

using InitFn = void (*)(Napi::Env, Napi::Object);
std::vector<InitFn>& registry();
struct Registrar {
  explicit Registrar(InitFn f) { registry().push_back(f); }
};

// LR_EXPORTS(name) { exports.Set(...); } registers a block that runs when the addon loads.
#define LR_EXPORTS(name)                                                  \
  static void lr_init_##name(Napi::Env env, Napi::Object exports);        \
  static ::lowrank::binding::Registrar lr_registrar_##name(lr_init_##name); \
  static void lr_init_##name(Napi::Env env, Napi::Object exports)

// A view into a Storage: arguments (storage, byteOffset) at positions i, i+1.
struct Buf {
  Storage* storage;
  char* ptr;
  size_t available;  // bytes from ptr to the end of the storage
  Device device() const { return storage->device(); }
  template <typename T>
  T* as() const { return reinterpret_cast<T*>(ptr); }
  // Throws unless `bytes` bytes from ptr lie inside the storage.
  void need(size_t bytes, const char* op) const;
};

Buf buf_arg(const Napi::CallbackInfo& info, size_t i, const char* op);
int64_t int_arg(const Napi::CallbackInfo& info, size_t i, const char* op);
double num_arg(const Napi::CallbackInfo& info, size_t i, const char* op);
uint64_t u64_arg(const Napi::CallbackInfo& info, size_t i, const char* op);  // BigInt or Number
DType dtype_arg(const Napi::CallbackInfo& info, size_t i, const char* op);
std::vector<int64_t> ints_arg(const Napi::CallbackInfo& info, size_t i, const char* op);
bool bool_arg(const Napi::CallbackInfo& info, size_t i, const char* op);

// An optional buffer: null or undefined at position i gives an empty Buf (storage == nullptr).
Buf opt_buf_arg(const Napi::CallbackInfo& info, size_t i, const char* op);
// A size (an integer >= 0) at position i.
int64_t size_arg(const Napi::CallbackInfo& info, size_t i, const char* op);

// The pointer of a buffer that may be empty (nullptr then).
template <typename T>
T* ptr(const Buf& b) {
  return b.storage ? b.as<T>() : nullptr;
}

// Throws unless all buffers live on one device, and returns it.
Device same_device(const char* op, std::initializer_list<const Buf*> bufs);
// The device of the required buffers, after checking that the present optional ones share it.
Device devices(const char* op, std::initializer_list<const Buf*> required, std::initializer_list<const Buf*> optional);

[[noreturn]] void fail(const std::string& message);

}  // namespace binding

// Runs `call` in the backend namespace of `dev` (cpu:: or cuda::, after selecting the device).
#ifdef LOWRANK_CUDA
#define LR_DISPATCH(dev, call)                     \
  do {                                             \
    ::lowrank::Device lr_dev_ = (dev);             \
    if (lr_dev_.is_cuda()) {                       \
      ::lowrank::cuda::set_device(lr_dev_.index);  \
      ::lowrank::cuda::call;                       \
    } else {                                       \
      ::lowrank::cpu::call;                        \
    }                                              \
  } while (0)
#else
#define LR_DISPATCH(dev, call)                                                                      \
  do {                                                                                              \
    if ((dev).is_cuda()) ::lowrank::binding::fail("this build of lowrank has no CUDA backend");     \
    ::lowrank::cpu::call;                                                                           \
  } while (0)
#endif

}  // namespace lowrank
