// Bindings for native/ops/softmax.h: softmax / log-softmax and backward.
// Buffers are (storage, byteOffset) pairs; an optional one is passed as (null, 0). Every buffer is
// bounds-checked before a kernel sees it.
#include "../ops/softmax.h"
#include "common.h"

namespace lowrank {
namespace binding {
namespace {

// softmax(x, xo, y, yo, rows, cols, log)
Napi::Value Softmax(const Napi::CallbackInfo& info) {
  const char* op = "softmax";
  Buf x = buf_arg(info, 0, op), y = buf_arg(info, 2, op);
  int64_t rows = size_arg(info, 4, op), cols = size_arg(info, 5, op);
  x.need(rows * cols * 4, op);
  y.need(rows * cols * 4, op);
  LR_DISPATCH(same_device(op, {&x, &y}), softmax_f32(x.as<float>(), y.as<float>(), rows, cols, bool_arg(info, 6, op)));
  return info.Env().Undefined();
}

// softmaxBackward(y, yo, dy, dyo, dx, dxo, rows, cols, log)
Napi::Value SoftmaxBackward(const Napi::CallbackInfo& info) {
  const char* op = "softmaxBackward";
  Buf y = buf_arg(info, 0, op), dy = buf_arg(info, 2, op), dx = buf_arg(info, 4, op);
  int64_t rows = size_arg(info, 6, op), cols = size_arg(info, 7, op);
  for (const Buf* t : {&y, &dy, &dx}) t->need(rows * cols * 4, op);
  LR_DISPATCH(same_device(op, {&y, &dy, &dx}),
              softmax_backward_f32(y.as<float>(), dy.as<float>(), dx.as<float>(), rows, cols, bool_arg(info, 8, op)));
  return info.Env().Undefined();
}

}  // namespace

LR_EXPORTS(softmax) {
  exports.Set("softmax", Napi::Function::New(env, Softmax, "softmax"));
  exports.Set("softmaxBackward", Napi::Function::New(env, SoftmaxBackward, "softmaxBackward"));
}

}  // namespace binding
}  // namespace lowrank
