// Bindings for native/ops/dropout.h: Philox dropout.
// Buffers are (storage, byteOffset) pairs; an optional one is passed as (null, 0). Every buffer is
// bounds-checked before a kernel sees it.
#include "../ops/dropout.h"
#include "common.h"

namespace lowrank {
namespace binding {
namespace {

// dropout(x, xo, y, yo, n, p, scale, seed, offset)
Napi::Value Dropout(const Napi::CallbackInfo& info) {
  const char* op = "dropout";
  Buf x = buf_arg(info, 0, op), y = buf_arg(info, 2, op);
  int64_t n = size_arg(info, 4, op);
  x.need(n * 4, op);
  y.need(n * 4, op);
  float p = float(num_arg(info, 5, op)), scale = float(num_arg(info, 6, op));
  if (!(p >= 0 && p <= 1)) fail("dropout: p must be in [0, 1], got " + std::to_string(p));
  LR_DISPATCH(same_device(op, {&x, &y}),
              dropout_f32(x.as<float>(), y.as<float>(), n, p, scale, u64_arg(info, 7, op), u64_arg(info, 8, op)));
  return info.Env().Undefined();
}

}  // namespace

LR_EXPORTS(dropout) {
  exports.Set("dropout", Napi::Function::New(env, Dropout, "dropout"));
}

}  // namespace binding
}  // namespace lowrank
