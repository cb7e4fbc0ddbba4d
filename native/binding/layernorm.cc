// Bindings for native/ops/layernorm.h: layer norm and its backward.
// Buffers are (storage, byteOffset) pairs; an optional one is passed as (null, 0). Every buffer is
// bounds-checked before a kernel sees it.
#include "../ops/layernorm.h"
#include "common.h"

namespace lowrank {
namespace binding {
namespace {

// layerNorm({ x, weight?, bias?, y, mean, rstd, N, C, eps })
Napi::Value LayerNorm(const Napi::CallbackInfo& info) {
  Args a(info, "layerNorm");
  const char* op = a.op;
  Buf x = a.view("x"), w = a.opt_view("weight"), b = a.opt_view("bias");
  Buf y = a.view("y"), mean = a.view("mean"), rstd = a.view("rstd");
  int64_t N = a.size("N"), C = a.size("C");
  x.need(N * C * 4, op);
  y.need(N * C * 4, op);
  mean.need(N * 4, op);
  rstd.need(N * 4, op);
  if (w.storage) w.need(C * 4, op);
  if (b.storage) b.need(C * 4, op);
  LR_DISPATCH(devices(op, {&x, &y, &mean, &rstd}, {&w, &b}),
              layer_norm_f32(x.as<float>(), ptr<float>(w), ptr<float>(b), y.as<float>(), mean.as<float>(), rstd.as<float>(),
                             N, C, float(a.num("eps"))));
  return info.Env().Undefined();
}

// layerNormBackward({ x, weight?, mean, rstd, dy, dx, dweight?, dbias?, N, C })
Napi::Value LayerNormBackward(const Napi::CallbackInfo& info) {
  Args a(info, "layerNormBackward");
  const char* op = a.op;
  Buf x = a.view("x"), w = a.opt_view("weight"), mean = a.view("mean"), rstd = a.view("rstd");
  Buf dy = a.view("dy"), dx = a.view("dx"), dw = a.opt_view("dweight"), db = a.opt_view("dbias");
  int64_t N = a.size("N"), C = a.size("C");
  for (const Buf* t : {&x, &dy, &dx}) t->need(N * C * 4, op);
  mean.need(N * 4, op);
  rstd.need(N * 4, op);
  for (const Buf* t : {&w, &dw, &db})
    if (t->storage) t->need(C * 4, op);
  LR_DISPATCH(devices(op, {&x, &mean, &rstd, &dy, &dx}, {&w, &dw, &db}),
              layer_norm_backward_f32(x.as<float>(), ptr<float>(w), mean.as<float>(), rstd.as<float>(), dy.as<float>(),
                                      dx.as<float>(), ptr<float>(dw), ptr<float>(db), N, C));
  return info.Env().Undefined();
}

}  // namespace

LR_EXPORTS(layernorm) {
  exports.Set("layerNorm", Napi::Function::New(env, LayerNorm, "layerNorm"));
  exports.Set("layerNormBackward", Napi::Function::New(env, LayerNormBackward, "layerNormBackward"));
}

}  // namespace binding
}  // namespace lowrank
