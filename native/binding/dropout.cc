// Bindings for native/ops/dropout.h: Philox dropout.
// Buffers are (storage, byteOffset) pairs; an optional one is passed as (null, 0). Every buffer is
// bounds-checked before a kernel sees it.
#include "../ops/dropout.h"
#include "common.h"

namespace lowrank {
namespace binding {
namespace {

// dropout({ x, y, n, p, scale, seed, offset, residual? }): y = x·mask (+ residual)
Napi::Value Dropout(const Napi::CallbackInfo& info) {
  Args a(info, "dropout");
  const char* op = a.op;
  Buf x = a.view("x"), y = a.view("y"), residual = a.opt_view("residual");
  int64_t n = a.size("n");
  x.need(n * 4, op);
  y.need(n * 4, op);
  if (residual.storage) residual.need(n * 4, op);
  float p = float(a.num("p")), scale = float(a.num("scale"));
  if (!(p >= 0 && p <= 1)) fail("dropout: p must be in [0, 1], got " + std::to_string(p));
  LR_DISPATCH(devices(op, {&x, &y}, {&residual}),
              dropout_f32(x.as<float>(), y.as<float>(), n, p, scale, a.u64("seed"), a.u64("offset"), ptr<float>(residual)));
  return info.Env().Undefined();
}

}  // namespace

LR_EXPORTS(dropout) {
  exports.Set("dropout", Napi::Function::New(env, Dropout, "dropout"));
}

}  // namespace binding
}  // namespace lowrank
