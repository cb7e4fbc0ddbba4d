// Bindings for native/ops/optim.h. Each call takes a list of tensors at once:
//   storages: Storage[] (`per` per tensor, in a fixed role order; null where a role is optional)
//   byteOffsets: Float64Array (one per storage)
//   sizes: Float64Array (elements per tensor)
// plus per-tensor hyperparameters as a Float64Array. Every storage is bounds-checked and all must
// be on one device (lib/optim groups tensors by device before calling).
#include <cmath>

#include "../ops/optim.h"
#include "common.h"

namespace lowrank {
namespace binding {
namespace {

const double* f64_arg(const Napi::CallbackInfo& info, size_t i, const char* op, size_t len) {
  if (info.Length() <= i || !info[i].IsTypedArray() || info[i].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array)
    fail(std::string(op) + ": argument " + std::to_string(i) + " must be a Float64Array");
  Napi::Float64Array a = info[i].As<Napi::Float64Array>();
  if (a.ElementLength() != len)
    fail(std::string(op) + ": argument " + std::to_string(i) + " has " + std::to_string(a.ElementLength()) + " values, expected " +
         std::to_string(len));
  return a.Data();
}

// The tensors of one call: their storages (bounds-checked, one device) and sizes.
class TensorList {
 public:
  TensorList(const Napi::CallbackInfo& info, const char* op, int per, std::initializer_list<const char*> roles, bool last_optional = false)
      : per_(per) {
    if (info.Length() < 3 || !info[0].IsArray()) fail(std::string(op) + ": argument 0 must be an array of storages");
    Napi::Array storages = info[0].As<Napi::Array>();
    if (storages.Length() % per != 0) fail(std::string(op) + ": the storage list must hold " + std::to_string(per) + " per tensor");
    count_ = static_cast<int>(storages.Length() / per);
    const double* offsets = f64_arg(info, 1, op, storages.Length());
    const double* sizes = f64_arg(info, 2, op, count_);
    bufs_.resize(storages.Length());
    sizes_.resize(count_);
    bool have_device = false;
    for (int t = 0; t < count_; ++t) {
      if (!(sizes[t] >= 0) || sizes[t] != std::floor(sizes[t])) fail(std::string(op) + ": tensor " + std::to_string(t) + " has an invalid size");
      sizes_[t] = static_cast<int64_t>(sizes[t]);
      int r = 0;
      for (const char* role : roles) {
        const size_t k = static_cast<size_t>(t) * per + r;
        const std::string what = std::string(op) + " (tensor " + std::to_string(t) + ", " + role + ")";
        Napi::Value v = storages.Get(static_cast<uint32_t>(k));
        const bool optional = last_optional && r == per - 1;
        ++r;
        if (optional && v.IsNull()) continue;
        Buf b = buf_at(v, offsets[k], what);
        b.need(static_cast<size_t>(sizes_[t]) * sizeof(float), what.c_str());
        if (!have_device) device_ = b.device(), have_device = true;
        if (b.device().type != device_.type || b.device().index != device_.index)
          fail(what + ": tensors are on different devices (" + device_.str() + " and " + b.device().str() +
               "); move them with .to(device) first");
        bufs_[k] = b.as<float>();
      }
    }
  }

  int count() const { return count_; }
  int64_t size(int t) const { return sizes_[t]; }
  // The float pointer of role r of tensor t (null for an absent optional role).
  float* ptr(int t, int r) const { return bufs_[static_cast<size_t>(t) * per_ + r]; }
  Device device() const { return device_; }

 private:
  static Buf buf_at(const Napi::Value& v, double offset, const std::string& what) {
    if (!Storage::IsStorage(v)) fail(what + ": expected a Storage");
    Storage* s = Storage::Unwrap(v.As<Napi::Object>());
    if (s->disposed()) fail(what + ": the tensor's storage was already disposed (use after dispose)");
    if (!(offset >= 0) || offset > static_cast<double>(s->bytes()) || offset != std::floor(offset))
      fail(what + ": byte offset " + std::to_string(offset) + " is outside a storage of " + std::to_string(s->bytes()) + " bytes");
    const size_t off = static_cast<size_t>(offset);
    return Buf{s, s->data() + off, s->bytes() - off};
  }

  int per_;
  int count_ = 0;
  std::vector<float*> bufs_;
  std::vector<int64_t> sizes_;
  Device device_{};
};

// adamw(storages[param, grad, expAvg, expAvgSq]*, byteOffsets, sizes, hyper[lr, beta1, beta2, eps, weightDecay, step]*)
// The scalars follow torch's _single_tensor_adam: computed in double as Python does, then
// rounded to float32 as torch does when it hands a Python float to a float32 kernel.
Napi::Value AdamW(const Napi::CallbackInfo& info) {
  const char* op = "adamw";
  TensorList list(info, op, 4, {"param", "grad", "exp_avg", "exp_avg_sq"});
  const double* h = f64_arg(info, 3, op, static_cast<size_t>(list.count()) * 6);
  std::vector<AdamWTensor> tensors(list.count());
  for (int t = 0; t < list.count(); ++t) {
    const double lr = h[6 * t], beta1 = h[6 * t + 1], beta2 = h[6 * t + 2], eps = h[6 * t + 3], wd = h[6 * t + 4], step = h[6 * t + 5];
    const double bias_correction1 = 1 - std::pow(beta1, step);
    const double bias_correction2 = 1 - std::pow(beta2, step);
    tensors[t] = AdamWTensor{list.ptr(t, 0), list.ptr(t, 1), list.ptr(t, 2), list.ptr(t, 3), list.size(t),
                             static_cast<float>(1 - lr * wd), static_cast<float>(1 - beta1), static_cast<float>(beta2),
                             static_cast<float>(1 - beta2), static_cast<float>(std::pow(bias_correction2, 0.5)),
                             static_cast<float>(eps), static_cast<float>(-(lr / bias_correction1))};
  }
  if (list.count() > 0) LR_DISPATCH(list.device(), adamw_step_f32(tensors.data(), list.count()));
  return info.Env().Undefined();
}

// sgd(storages[param, grad, momentumBuffer | null]*, byteOffsets, sizes, hyper[lr, momentum, dampening, weightDecay, nesterov, firstStep]*)
Napi::Value SGD(const Napi::CallbackInfo& info) {
  const char* op = "sgd";
  TensorList list(info, op, 3, {"param", "grad", "momentum_buffer"}, true);
  const double* h = f64_arg(info, 3, op, static_cast<size_t>(list.count()) * 6);
  std::vector<SGDTensor> tensors(list.count());
  for (int t = 0; t < list.count(); ++t) {
    const double lr = h[6 * t], momentum = h[6 * t + 1], dampening = h[6 * t + 2], wd = h[6 * t + 3];
    if ((momentum != 0) != (list.ptr(t, 2) != nullptr))
      fail(std::string(op) + ": tensor " + std::to_string(t) + " needs a momentum buffer exactly when momentum != 0");
    tensors[t] = SGDTensor{list.ptr(t, 0), list.ptr(t, 1), list.ptr(t, 2), list.size(t), static_cast<float>(wd),
                           static_cast<float>(momentum), static_cast<float>(1 - dampening), static_cast<float>(-lr),
                           h[6 * t + 4] != 0, h[6 * t + 5] != 0};
  }
  if (list.count() > 0) LR_DISPATCH(list.device(), sgd_step_f32(tensors.data(), list.count()));
  return info.Env().Undefined();
}

std::vector<FloatSpan> spans_of(const TensorList& list) {
  std::vector<FloatSpan> spans(list.count());
  for (int t = 0; t < list.count(); ++t) spans[t] = FloatSpan{list.ptr(t, 0), list.size(t)};
  return spans;
}

// sumPow(storages, byteOffsets, sizes, p) -> Float64Array: per tensor, sum |x|^p (p = Infinity: max |x|)
Napi::Value SumPow(const Napi::CallbackInfo& info) {
  const char* op = "sumPow";
  TensorList list(info, op, 1, {"tensor"});
  const double p = num_arg(info, 3, op);
  if (!(p > 0)) fail(std::string(op) + ": p must be > 0 or Infinity");
  std::vector<FloatSpan> spans = spans_of(list);
  Napi::Float64Array out = Napi::Float64Array::New(info.Env(), list.count());
  if (list.count() > 0) LR_DISPATCH(list.device(), sum_pow_f32(spans.data(), list.count(), p, out.Data()));
  return out;
}

// scaleSpans(storages, byteOffsets, sizes, alpha): x *= alpha in place
Napi::Value ScaleSpans(const Napi::CallbackInfo& info) {
  const char* op = "scaleSpans";
  TensorList list(info, op, 1, {"tensor"});
  const float alpha = static_cast<float>(num_arg(info, 3, op));
  std::vector<FloatSpan> spans = spans_of(list);
  if (list.count() > 0) LR_DISPATCH(list.device(), scale_spans_f32(spans.data(), list.count(), alpha));
  return info.Env().Undefined();
}

}  // namespace

LR_EXPORTS(optim) {
  exports.Set("adamw", Napi::Function::New(env, AdamW, "adamw"));
  exports.Set("sgd", Napi::Function::New(env, SGD, "sgd"));
  exports.Set("sumPow", Napi::Function::New(env, SumPow, "sumPow"));
  exports.Set("scaleSpans", Napi::Function::New(env, ScaleSpans, "scaleSpans"));
}

}  // namespace binding
}  // namespace lowrank
