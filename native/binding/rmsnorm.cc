// Bindings for native/ops/rmsnorm.h: RMS norm and its backward.
// Buffers are (storage, byteOffset) pairs; an optional one is passed as (null, 0). Every buffer is
// bounds-checked before a kernel sees it.
#include "../ops/rmsnorm.h"
#include "common.h"

namespace lowrank {
namespace binding {
namespace {

// rmsNorm({ x, weight?, y, rstd, N, C, eps })
Napi::Value RmsNorm(const Napi::CallbackInfo& info) {
  Args a(info, "rmsNorm");
  const char* op = a.op;
  Buf x = a.view("x"), w = a.opt_view("weight"), y = a.view("y"), rstd = a.view("rstd");
  int64_t N = a.size("N"), C = a.size("C");
  x.need(N * C * 4, op);
  y.need(N * C * 4, op);
  rstd.need(N * 4, op);
  if (w.storage) w.need(C * 4, op);
  LR_DISPATCH(devices(op, {&x, &y, &rstd}, {&w}),
              rms_norm_f32(x.as<float>(), ptr<float>(w), y.as<float>(), rstd.as<float>(), N, C, float(a.num("eps"))));
  return info.Env().Undefined();
}

// rmsNormBackward({ x, weight?, rstd, dy, dx, dweight?, N, C })
Napi::Value RmsNormBackward(const Napi::CallbackInfo& info) {
  Args a(info, "rmsNormBackward");
  const char* op = a.op;
  Buf x = a.view("x"), w = a.opt_view("weight"), rstd = a.view("rstd");
  Buf dy = a.view("dy"), dx = a.view("dx"), dw = a.opt_view("dweight");
  int64_t N = a.size("N"), C = a.size("C");
  for (const Buf* t : {&x, &dy, &dx}) t->need(N * C * 4, op);
  rstd.need(N * 4, op);
  for (const Buf* t : {&w, &dw})
    if (t->storage) t->need(C * 4, op);
  LR_DISPATCH(devices(op, {&x, &rstd, &dy, &dx}, {&w, &dw}),
              rms_norm_backward_f32(x.as<float>(), ptr<float>(w), rstd.as<float>(), dy.as<float>(), dx.as<float>(),
                                    ptr<float>(dw), N, C));
  return info.Env().Undefined();
}

}  // namespace

LR_EXPORTS(rmsnorm) {
  exports.Set("rmsNorm", Napi::Function::New(env, RmsNorm, "rmsNorm"));
  exports.Set("rmsNormBackward", Napi::Function::New(env, RmsNormBackward, "rmsNormBackward"));
}

}  // namespace binding
}  // namespace lowrank
