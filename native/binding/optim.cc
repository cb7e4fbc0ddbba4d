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

// The tensors of one multi-tensor call: one array of views per role (param, grad, ...), index t
// of each array belonging to tensor t, plus their sizes; bounds-checked, all on one device.
class TensorList {
 public:
  TensorList(const Args& a, std::initializer_list<const char*> roles, bool last_optional = false) : per_(int(roles.size())) {
    std::vector<std::vector<Buf>> by_role;
    int r = 0;
    for (const char* role : roles) by_role.push_back(a.views(role, last_optional && ++r == per_));
    count_ = static_cast<int>(by_role[0].size());
    for (size_t k = 0; k < by_role.size(); ++k)
      if (static_cast<int>(by_role[k].size()) != count_)
        a.fail_field(*(roles.begin() + k), "must list as many tensors as '" + std::string(*roles.begin()) + "'");
    const double* sizes = a.f64("sizes", size_t(count_));
    bufs_.resize(size_t(count_) * per_);
    sizes_.resize(count_);
    bool have_device = false;
    for (int t = 0; t < count_; ++t) {
      if (!(sizes[t] >= 0) || sizes[t] != std::floor(sizes[t])) a.fail_field("sizes", "has an invalid size at " + std::to_string(t));
      sizes_[t] = static_cast<int64_t>(sizes[t]);
      for (int k = 0; k < per_; ++k) {
        const Buf& b = by_role[k][t];
        if (!b.storage) continue;  // an absent optional role
        const std::string what = std::string(a.op) + " (" + *(roles.begin() + k) + "[" + std::to_string(t) + "])";
        b.need(static_cast<size_t>(sizes_[t]) * sizeof(float), what.c_str());
        if (!have_device) device_ = b.device(), have_device = true;
        if (b.device().type != device_.type || b.device().index != device_.index)
          fail(what + ": tensors are on different devices (" + device_.str() + " and " + b.device().str() +
               "); move them with .to(device) first");
        bufs_[size_t(t) * per_ + k] = b.as<float>();
      }
    }
  }

  int count() const { return count_; }
  int64_t size(int t) const { return sizes_[t]; }
  // The float pointer of role r of tensor t (null for an absent optional role).
  float* ptr(int t, int r) const { return bufs_[static_cast<size_t>(t) * per_ + r]; }
  Device device() const { return device_; }

 private:
  int per_;
  int count_ = 0;
  std::vector<float*> bufs_;
  std::vector<int64_t> sizes_;
  Device device_{};
};

// adamw({ params, grads, expAvgs, expAvgSqs, sizes, hyper }): hyper holds [lr, beta1, beta2, eps,
// weightDecay, step] per tensor.
// The scalars follow torch's _single_tensor_adam: computed in double as Python does, then
// rounded to float32 as torch does when it hands a Python float to a float32 kernel.
Napi::Value AdamW(const Napi::CallbackInfo& info) {
  Args a(info, "adamw");
  TensorList list(a, {"params", "grads", "expAvgs", "expAvgSqs"});
  const double* h = a.f64("hyper", static_cast<size_t>(list.count()) * 6);
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

// sgd({ params, grads, momentumBuffers (null entries without momentum), sizes, hyper }): hyper holds
// [lr, momentum, dampening, weightDecay, nesterov, firstStep] per tensor.
Napi::Value SGD(const Napi::CallbackInfo& info) {
  Args a(info, "sgd");
  const char* op = a.op;
  TensorList list(a, {"params", "grads", "momentumBuffers"}, true);
  const double* h = a.f64("hyper", static_cast<size_t>(list.count()) * 6);
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

// sumPow({ tensors, sizes, p }) -> Float64Array: per tensor, sum |x|^p (p = Infinity: max |x|)
Napi::Value SumPow(const Napi::CallbackInfo& info) {
  Args a(info, "sumPow");
  const char* op = a.op;
  TensorList list(a, {"tensors"});
  const double p = a.num("p");
  if (!(p > 0)) fail(std::string(op) + ": p must be > 0 or Infinity");
  std::vector<FloatSpan> spans = spans_of(list);
  Napi::Float64Array out = Napi::Float64Array::New(info.Env(), list.count());
  if (list.count() > 0) LR_DISPATCH(list.device(), sum_pow_f32(spans.data(), list.count(), p, out.Data()));
  return out;
}

// scaleSpans({ tensors, sizes, alpha }): x *= alpha in place
Napi::Value ScaleSpans(const Napi::CallbackInfo& info) {
  Args a(info, "scaleSpans");
  TensorList list(a, {"tensors"});
  const float alpha = static_cast<float>(a.num("alpha"));
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
