// Bindings for native/ops/layernorm.h: layer norm and its backward.
// Buffers are (storage, byteOffset) pairs; an optional one is passed as (null, 0). Every buffer is
// bounds-checked before a kernel sees it.
#include "../ops/layernorm.h"
#include "common.h"

namespace lowrank {
namespace binding {
namespace {

// layerNorm(x, xo, w|null, wo, b|null, bo, y, yo, mean, mo, rstd, ro, N, C, eps)
Napi::Value LayerNorm(const Napi::CallbackInfo& info) {
  const char* op = "layerNorm";
  Buf x = buf_arg(info, 0, op), w = opt_buf_arg(info, 2, op), b = opt_buf_arg(info, 4, op);
  Buf y = buf_arg(info, 6, op), mean = buf_arg(info, 8, op), rstd = buf_arg(info, 10, op);
  int64_t N = size_arg(info, 12, op), C = size_arg(info, 13, op);
  x.need(N * C * 4, op);
  y.need(N * C * 4, op);
  mean.need(N * 4, op);
  rstd.need(N * 4, op);
  if (w.storage) w.need(C * 4, op);
  if (b.storage) b.need(C * 4, op);
  LR_DISPATCH(devices(op, {&x, &y, &mean, &rstd}, {&w, &b}),
              layer_norm_f32(x.as<float>(), ptr<float>(w), ptr<float>(b), y.as<float>(), mean.as<float>(), rstd.as<float>(),
                             N, C, float(num_arg(info, 14, op))));
  return info.Env().Undefined();
}

// layerNormBackward(x, xo, w|null, wo, mean, mo, rstd, ro, dy, dyo, dx, dxo, dw|null, dwo, db|null, dbo, N, C)
Napi::Value LayerNormBackward(const Napi::CallbackInfo& info) {
  const char* op = "layerNormBackward";
  Buf x = buf_arg(info, 0, op), w = opt_buf_arg(info, 2, op), mean = buf_arg(info, 4, op), rstd = buf_arg(info, 6, op);
  Buf dy = buf_arg(info, 8, op), dx = buf_arg(info, 10, op), dw = opt_buf_arg(info, 12, op), db = opt_buf_arg(info, 14, op);
  int64_t N = size_arg(info, 16, op), C = size_arg(info, 17, op);
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
