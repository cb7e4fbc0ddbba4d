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

// A tensor operand: a view into a Storage, passed from JS as { storage, offset[, strides] } (offset
// in bytes, strides in elements). An absent optional operand has storage == nullptr.
struct Buf {
  Storage* storage;
  char* ptr;
  size_t available;              // bytes from ptr to the end of the storage
  std::vector<int64_t> strides;  // when the view carries them
  Device device() const { return storage->device(); }
  template <typename T>
  T* as() const { return reinterpret_cast<T*>(ptr); }
  // Throws unless `bytes` bytes from ptr lie inside the storage.
  void need(size_t bytes, const char* op) const;
};

// The pointer of a buffer that may be empty (nullptr then).
template <typename T>
T* ptr(const Buf& b) {
  return b.storage ? b.as<T>() : nullptr;
}

// The arguments of a kernel call: one object whose fields are the operands (views) and the sizes
// and options, by name (lib/native/addon.ts types each call). Every getter fails with the op's
// and the field's name when the field is missing or has the wrong type.
class Args {
 public:
  Args(const Napi::CallbackInfo& info, const char* op);
  const char* op;

  Buf view(const char* name) const;      // a required operand
  Buf opt_view(const char* name) const;  // null or undefined: an empty Buf
  int64_t integer(const char* name) const;
  int64_t size(const char* name) const;  // an integer >= 0
  double num(const char* name) const;
  bool flag(const char* name) const;
  uint64_t u64(const char* name) const;  // a BigInt (or a safe integer Number)
  std::vector<int64_t> ints(const char* name) const;
  DType dtype(const char* name) const;
  Napi::TypedArray typed_array(const char* name) const;
  // An array of views (the tensors of a multi-tensor kernel); null entries give empty Bufs when
  // allow_null, and fail otherwise.
  std::vector<Buf> views(const char* name, bool allow_null = false) const;
  // A Float64Array of exactly len values.
  const double* f64(const char* name, size_t len) const;
  // An enum code in [0, count): the enums' names and codes are exported by enums() (runtime.cc)
  // and checked against lib/ by a test.
  template <typename E>
  E code(const char* name, int count) const {
    int64_t v = integer(name);
    if (v < 0 || v >= count) fail_field(name, "is not a known code (got " + std::to_string(v) + ")");
    return static_cast<E>(v);
  }
  [[noreturn]] void fail_field(const char* name, const std::string& what) const;

 private:
  Napi::Object fields_;
  Napi::Value get(const char* name) const;
  Buf view_of(Napi::Value v, const char* name) const;
};

// A number at position i, for the few calls that take one scalar (setNumThreads, synchronize, the
// Storage constructor).
int64_t int_arg(const Napi::CallbackInfo& info, size_t i, const char* op);

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
