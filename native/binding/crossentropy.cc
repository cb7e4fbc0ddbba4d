// Bindings for native/ops/crossentropy.h: cross-entropy and backward.
// Buffers are (storage, byteOffset) pairs; an optional one is passed as (null, 0). Every buffer is
// bounds-checked before a kernel sees it.
#include "../ops/crossentropy.h"
#include "common.h"

namespace lowrank {
namespace binding {
namespace {

// crossEntropy({ logits, targets, lse, loss, total?, N, V, ignoreIndex, reduction })
// Returns null, or [row, target] for the first target outside [0, V) that is not ignoreIndex.
Napi::Value CrossEntropy(const Napi::CallbackInfo& info) {
  Args a(info, "crossEntropy");
  const char* op = a.op;
  Buf logits = a.view("logits"), targets = a.view("targets"), lse = a.view("lse"), loss = a.view("loss");
  Buf total = a.opt_view("total");
  int64_t N = a.size("N"), V = a.size("V");
  int32_t ignore = static_cast<int32_t>(a.integer("ignoreIndex"));
  Reduction reduction = a.code<Reduction>("reduction", kReductionCount);
  logits.need(N * V * 4, op);
  for (const Buf* t : {&targets, &lse, &loss}) t->need(N * 4, op);
  if (reduction != Reduction::None) {
    if (!total.storage) fail("crossEntropy: a reduced loss needs its output buffer");
    total.need(4, op);
  }
  int64_t invalid[2] = {-1, 0};
  LR_DISPATCH(devices(op, {&logits, &targets, &lse, &loss}, {&total}),
              cross_entropy_f32(logits.as<float>(), targets.as<int32_t>(), lse.as<float>(), loss.as<float>(),
                                ptr<float>(total), N, V, ignore, reduction, invalid));
  if (invalid[0] < 0) return info.Env().Null();
  Napi::Array out = Napi::Array::New(info.Env(), 2);
  out.Set(0u, Napi::Number::New(info.Env(), double(invalid[0])));
  out.Set(1u, Napi::Number::New(info.Env(), double(invalid[1])));
  return out;
}

// crossEntropyBackward({ logits, targets, lse, dout, dlogits, N, V, ignoreIndex, reduction })
Napi::Value CrossEntropyBackward(const Napi::CallbackInfo& info) {
  Args a(info, "crossEntropyBackward");
  const char* op = a.op;
  Buf logits = a.view("logits"), targets = a.view("targets"), lse = a.view("lse");
  Buf dout = a.view("dout"), dlogits = a.view("dlogits");
  int64_t N = a.size("N"), V = a.size("V");
  int32_t ignore = static_cast<int32_t>(a.integer("ignoreIndex"));
  Reduction reduction = a.code<Reduction>("reduction", kReductionCount);
  logits.need(N * V * 4, op);
  dlogits.need(N * V * 4, op);
  targets.need(N * 4, op);
  lse.need(N * 4, op);
  dout.need((reduction == Reduction::None ? N : 1) * 4, op);
  LR_DISPATCH(same_device(op, {&logits, &targets, &lse, &dout, &dlogits}),
              cross_entropy_backward_f32(logits.as<float>(), targets.as<int32_t>(), lse.as<float>(), dout.as<float>(),
                                         dlogits.as<float>(), N, V, ignore, reduction));
  return info.Env().Undefined();
}

// crossEntropyRows({ logits, targets, loss, counted, grad?, gradBf16, firstBad, N, V, ld, ignoreIndex })
Napi::Value CrossEntropyRows(const Napi::CallbackInfo& info) {
  Args a(info, "crossEntropyRows");
  const char* op = a.op;
  Buf logits = a.view("logits"), targets = a.view("targets"), loss = a.view("loss"), counted = a.view("counted");
  Buf grad = a.opt_view("grad"), first_bad = a.view("firstBad");
  const bool grad_bf16 = a.flag("gradBf16");
  int64_t N = a.size("N"), V = a.size("V"), ld = a.size("ld");
  if (ld < V) a.fail_field("ld", "(the row stride) must be >= V = " + std::to_string(V) + ", got " + std::to_string(ld));
  int32_t ignore = static_cast<int32_t>(a.integer("ignoreIndex"));
  const int64_t span = N == 0 ? 0 : (N - 1) * ld + V;  // elements from the first row's start to the last's end
  logits.need(span * 4, op);
  for (const Buf* t : {&targets, &loss, &counted}) t->need(N * 4, op);
  first_bad.need(4, op);
  if (grad.storage) grad.need(span * (grad_bf16 ? 2 : 4), op);
  LR_DISPATCH(devices(op, {&logits, &targets, &loss, &counted, &first_bad}, {&grad}),
              cross_entropy_rows_f32(logits.as<float>(), targets.as<int32_t>(), loss.as<float>(), counted.as<float>(),
                                     ptr<void>(grad), grad_bf16, N, V, ld, ignore, first_bad.as<int32_t>()));
  return info.Env().Undefined();
}

}  // namespace

LR_EXPORTS(crossentropy) {
  exports.Set("crossEntropyRows", Napi::Function::New(env, CrossEntropyRows, "crossEntropyRows"));
  exports.Set("crossEntropy", Napi::Function::New(env, CrossEntropy, "crossEntropy"));
  exports.Set("crossEntropyBackward", Napi::Function::New(env, CrossEntropyBackward, "crossEntropyBackward"));
}

}  // namespace binding
}  // namespace lowrank
