#include "common.h"

namespace lowrank {
namespace binding {

std::vector<InitFn>& registry() {
  static std::vector<InitFn> fns;
  return fns;
}

void fail(const std::string& message) { throw std::runtime_error(message); }

void Buf::need(size_t bytes, const char* op) const {
  if (bytes > available)
    fail(std::string(op) + ": needs " + std::to_string(bytes) + " bytes but the storage has only " +
         std::to_string(available) + " from this offset (a view larger than its storage?)");
}

Buf buf_arg(const Napi::CallbackInfo& info, size_t i, const char* op) {
  if (info.Length() <= i + 1 || !Storage::IsStorage(info[i]))
    fail(std::string(op) + ": argument " + std::to_string(i) + " must be a Storage");
  Storage* s = Storage::Unwrap(info[i].As<Napi::Object>());
  if (s->disposed()) fail(std::string(op) + ": the tensor's storage was already disposed (use after dispose)");
  int64_t offset = int_arg(info, i + 1, op);
  if (offset < 0 || static_cast<size_t>(offset) > s->bytes())
    fail(std::string(op) + ": byte offset " + std::to_string(offset) + " is outside a storage of " +
         std::to_string(s->bytes()) + " bytes");
  return Buf{s, s->data() + offset, s->bytes() - static_cast<size_t>(offset)};
}

int64_t int_arg(const Napi::CallbackInfo& info, size_t i, const char* op) {
  if (info.Length() <= i || !info[i].IsNumber()) fail(std::string(op) + ": argument " + std::to_string(i) + " must be a number");
  return info[i].As<Napi::Number>().Int64Value();
}

double num_arg(const Napi::CallbackInfo& info, size_t i, const char* op) {
  if (info.Length() <= i || !info[i].IsNumber()) fail(std::string(op) + ": argument " + std::to_string(i) + " must be a number");
  return info[i].As<Napi::Number>().DoubleValue();
}

uint64_t u64_arg(const Napi::CallbackInfo& info, size_t i, const char* op) {
  if (info.Length() > i && info[i].IsBigInt()) {
    bool lossless = true;
    uint64_t v = info[i].As<Napi::BigInt>().Uint64Value(&lossless);
    if (!lossless) fail(std::string(op) + ": argument " + std::to_string(i) + " does not fit in 64 bits");
    return v;
  }
  return static_cast<uint64_t>(int_arg(info, i, op));
}

DType dtype_arg(const Napi::CallbackInfo& info, size_t i, const char* op) {
  int64_t v = int_arg(info, i, op);
  if (v < 0 || v > 2) fail(std::string(op) + ": unknown dtype code " + std::to_string(v));
  return static_cast<DType>(v);
}

std::vector<int64_t> ints_arg(const Napi::CallbackInfo& info, size_t i, const char* op) {
  if (info.Length() <= i || !info[i].IsArray()) fail(std::string(op) + ": argument " + std::to_string(i) + " must be an array of numbers");
  Napi::Array a = info[i].As<Napi::Array>();
  std::vector<int64_t> out(a.Length());
  for (uint32_t k = 0; k < a.Length(); ++k) out[k] = a.Get(k).As<Napi::Number>().Int64Value();
  return out;
}

bool bool_arg(const Napi::CallbackInfo& info, size_t i, const char* op) {
  if (info.Length() <= i || !info[i].IsBoolean()) fail(std::string(op) + ": argument " + std::to_string(i) + " must be a boolean");
  return info[i].As<Napi::Boolean>().Value();
}

Buf opt_buf_arg(const Napi::CallbackInfo& info, size_t i, const char* op) {
  if (info.Length() > i && (info[i].IsNull() || info[i].IsUndefined())) return Buf{nullptr, nullptr, 0};
  return buf_arg(info, i, op);
}

int64_t size_arg(const Napi::CallbackInfo& info, size_t i, const char* op) {
  int64_t v = int_arg(info, i, op);
  if (v < 0) fail(std::string(op) + ": argument " + std::to_string(i) + " must be a size >= 0, got " + std::to_string(v));
  return v;
}

Device devices(const char* op, std::initializer_list<const Buf*> required, std::initializer_list<const Buf*> optional) {
  Device d = same_device(op, required);
  for (const Buf* b : optional)
    if (b->storage) same_device(op, {*required.begin(), b});
  return d;
}

Device same_device(const char* op, std::initializer_list<const Buf*> bufs) {
  Device d = (*bufs.begin())->device();
  for (const Buf* b : bufs) {
    Device e = b->device();
    if (e.type != d.type || e.index != d.index)
      fail(std::string(op) + ": tensors are on different devices (" + d.str() + " and " + e.str() +
           "); move them with .to(device) first");
  }
  return d;
}

}  // namespace binding
}  // namespace lowrank
