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

int64_t int_arg(const Napi::CallbackInfo& info, size_t i, const char* op) {
  if (info.Length() <= i || !info[i].IsNumber()) fail(std::string(op) + ": argument " + std::to_string(i) + " must be a number");
  return info[i].As<Napi::Number>().Int64Value();
}

Args::Args(const Napi::CallbackInfo& info, const char* op_name) : op(op_name) {
  if (info.Length() < 1 || !info[0].IsObject() || info[0].IsArray())
    fail(std::string(op) + ": expects one object of named arguments (see lib/native/addon.ts)");
  fields_ = info[0].As<Napi::Object>();
}

void Args::fail_field(const char* name, const std::string& what) const {
  fail(std::string(op) + ": argument '" + name + "' " + what);
}

Napi::Value Args::get(const char* name) const {
  Napi::Value v = fields_.Get(name);
  if (v.IsUndefined()) fail_field(name, "is missing");
  return v;
}

Buf Args::view_of(Napi::Value v, const char* name) const {
  if (!v.IsObject()) fail_field(name, "must be a tensor view { storage, offset }");
  Napi::Object o = v.As<Napi::Object>();
  Napi::Value sv = o.Get("storage");
  if (!Storage::IsStorage(sv)) fail_field(name, "must be a tensor view whose storage is a Storage");
  Storage* s = Storage::Unwrap(sv.As<Napi::Object>());
  if (s->disposed()) fail_field(name, "is a view of a disposed storage (use after dispose)");
  Napi::Value ov = o.Get("offset");
  if (!ov.IsNumber()) fail_field(name, "must have a numeric byte offset");
  int64_t offset = ov.As<Napi::Number>().Int64Value();
  if (offset < 0 || static_cast<size_t>(offset) > s->bytes())
    fail_field(name, "has byte offset " + std::to_string(offset) + ", outside its storage of " + std::to_string(s->bytes()) + " bytes");
  Buf b{s, s->data() + offset, s->bytes() - static_cast<size_t>(offset), {}};
  Napi::Value st = o.Get("strides");
  if (st.IsArray()) {
    Napi::Array a = st.As<Napi::Array>();
    b.strides.resize(a.Length());
    for (uint32_t k = 0; k < a.Length(); ++k) b.strides[k] = a.Get(k).As<Napi::Number>().Int64Value();
  }
  return b;
}

Buf Args::view(const char* name) const { return view_of(get(name), name); }

Buf Args::opt_view(const char* name) const {
  Napi::Value v = fields_.Get(name);
  if (v.IsNull() || v.IsUndefined()) return Buf{nullptr, nullptr, 0, {}};
  return view_of(v, name);
}

int64_t Args::integer(const char* name) const {
  Napi::Value v = get(name);
  if (!v.IsNumber()) fail_field(name, "must be a number");
  return v.As<Napi::Number>().Int64Value();
}

int64_t Args::size(const char* name) const {
  int64_t v = integer(name);
  if (v < 0) fail_field(name, "must be a size >= 0, got " + std::to_string(v));
  return v;
}

double Args::num(const char* name) const {
  Napi::Value v = get(name);
  if (!v.IsNumber()) fail_field(name, "must be a number");
  return v.As<Napi::Number>().DoubleValue();
}

bool Args::flag(const char* name) const {
  Napi::Value v = get(name);
  if (!v.IsBoolean()) fail_field(name, "must be a boolean");
  return v.As<Napi::Boolean>().Value();
}

uint64_t Args::u64(const char* name) const {
  Napi::Value v = get(name);
  if (v.IsBigInt()) {
    bool lossless = true;
    uint64_t u = v.As<Napi::BigInt>().Uint64Value(&lossless);
    if (!lossless) fail_field(name, "does not fit in 64 bits");
    return u;
  }
  if (!v.IsNumber()) fail_field(name, "must be a BigInt or a number");
  return static_cast<uint64_t>(v.As<Napi::Number>().Int64Value());
}

std::vector<int64_t> Args::ints(const char* name) const {
  Napi::Value v = get(name);
  if (!v.IsArray()) fail_field(name, "must be an array of numbers");
  Napi::Array a = v.As<Napi::Array>();
  std::vector<int64_t> out(a.Length());
  for (uint32_t k = 0; k < a.Length(); ++k) out[k] = a.Get(k).As<Napi::Number>().Int64Value();
  return out;
}

DType Args::dtype(const char* name) const { return code<DType>(name, kDTypeCount); }

std::vector<Buf> Args::views(const char* name, bool allow_null) const {
  Napi::Value v = get(name);
  if (!v.IsArray()) fail_field(name, "must be an array of tensor views");
  Napi::Array list = v.As<Napi::Array>();
  std::vector<Buf> out(list.Length(), Buf{nullptr, nullptr, 0, {}});
  for (uint32_t k = 0; k < list.Length(); ++k) {
    Napi::Value e = list.Get(k);
    if (allow_null && e.IsNull()) continue;
    const std::string entry = std::string(name) + "[" + std::to_string(k) + "]";
    out[k] = view_of(e, entry.c_str());
  }
  return out;
}

const double* Args::f64(const char* name, size_t len) const {
  Napi::Value v = get(name);
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float64_array) fail_field(name, "must be a Float64Array");
  Napi::Float64Array a = v.As<Napi::Float64Array>();
  if (a.ElementLength() != len)
    fail_field(name, "has " + std::to_string(a.ElementLength()) + " values, expected " + std::to_string(len));
  return a.Data();
}

Napi::TypedArray Args::typed_array(const char* name) const {
  Napi::Value v = get(name);
  if (!v.IsTypedArray()) fail_field(name, "must be a typed array");
  return v.As<Napi::TypedArray>();
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
