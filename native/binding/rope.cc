// Bindings for native/ops/rope.h: rotary position embeddings and their transpose (the backward).
// Every buffer is bounds-checked before a kernel sees it.
#include "../ops/rope.h"
#include "common.h"

namespace lowrank {
namespace binding {
namespace {

// rope({ x, cos, sin, y, rows, T, D, transpose })
Napi::Value Rope(const Napi::CallbackInfo& info) {
  Args a(info, "rope");
  const char* op = a.op;
  Buf x = a.view("x"), cos = a.view("cos"), sin = a.view("sin"), y = a.view("y");
  int64_t rows = a.size("rows"), T = a.size("T"), D = a.size("D");
  if (D % 2 != 0) a.fail_field("D", "must be even (rotate_half pairs element j with j + D/2), got " + std::to_string(D));
  x.need(rows * T * D * 4, op);
  y.need(rows * T * D * 4, op);
  cos.need(T * D * 4, op);
  sin.need(T * D * 4, op);
  LR_DISPATCH(same_device(op, {&x, &cos, &sin, &y}),
              rope_f32(x.as<float>(), cos.as<float>(), sin.as<float>(), y.as<float>(), rows, T, D, a.flag("transpose")));
  return info.Env().Undefined();
}

}  // namespace

LR_EXPORTS(rope) { exports.Set("rope", Napi::Function::New(env, Rope, "rope")); }

}  // namespace binding
}  // namespace lowrank
