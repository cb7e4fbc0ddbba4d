// Bindings for native/ops/softmax.h: softmax / log-softmax and backward.
// Buffers are (storage, byteOffset) pairs; an optional one is passed as (null, 0). Every buffer is
// bounds-checked before a kernel sees it.
#include "../ops/softmax.h"
#include "common.h"

namespace lowrank {
namespace binding {
namespace {

// softmax({ x, y, rows, cols, log })
Napi::Value Softmax(const Napi::CallbackInfo& info) {
  Args a(info, "softmax");
  const char* op = a.op;
  Buf x = a.view("x"), y = a.view("y");
  int64_t rows = a.size("rows"), cols = a.size("cols");
  x.need(rows * cols * 4, op);
  y.need(rows * cols * 4, op);
  LR_DISPATCH(same_device(op, {&x, &y}), softmax_f32(x.as<float>(), y.as<float>(), rows, cols, a.flag("log")));
  return info.Env().Undefined();
}

// softmaxBackward({ y, dy, dx, rows, cols, log })
Napi::Value SoftmaxBackward(const Napi::CallbackInfo& info) {
  Args a(info, "softmaxBackward");
  const char* op = a.op;
  Buf y = a.view("y"), dy = a.view("dy"), dx = a.view("dx");
  int64_t rows = a.size("rows"), cols = a.size("cols");
  for (const Buf* t : {&y, &dy, &dx}) t->need(rows * cols * 4, op);
  LR_DISPATCH(same_device(op, {&y, &dy, &dx}),
              softmax_backward_f32(y.as<float>(), dy.as<float>(), dx.as<float>(), rows, cols, a.flag("log")));
  return info.Env().Undefined();
}

}  // namespace

LR_EXPORTS(softmax) {
  exports.Set("softmax", Napi::Function::New(env, Softmax, "softmax"));
  exports.Set("softmaxBackward", Napi::Function::New(env, SoftmaxBackward, "softmaxBackward"));
}

}  // namespace binding
}  // namespace lowrank
