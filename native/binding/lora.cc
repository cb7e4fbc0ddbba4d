// Bindings for native/ops/lora.h: the fused LoRA forward and backward, and the merge (CPU and CUDA).
#include "../ops/lora.h"
#include "common.h"

namespace lowrank {
namespace binding {
namespace {

// The sizes, scaling and dropout stream shared by both calls, with the operands' bounds checked.
LoraDims lora_dims(const Args& a) {
  LoraDims d{a.size("N"), a.size("k"), a.size("r"), a.size("d"), float(a.num("scaling")), float(a.num("p")),
             float(a.num("maskScale")), a.u64("seed"), a.u64("offset")};
  if (!(d.p >= 0 && d.p <= 1)) fail(std::string(a.op) + ": p must be in [0, 1], got " + std::to_string(d.p));
  return d;
}

// loraForward({ x, A, B, y, out, u, N, k, r, d, scaling, p, maskScale, seed, offset }): out = y + s·(drop(x)·Aᵀ)·Bᵀ, u = drop(x)·Aᵀ
Napi::Value LoraForward(const Napi::CallbackInfo& info) {
  Args a(info, "loraForward");
  const LoraDims d = lora_dims(a);
  Buf x = a.view("x"), A = a.view("A"), B = a.view("B"), y = a.view("y"), out = a.view("out"), u = a.view("u");
  const Device dev = same_device(a.op, {&x, &A, &B, &y, &out, &u});
  x.need(d.N * d.k * 4, a.op);
  A.need(d.r * d.k * 4, a.op);
  B.need(d.d * d.r * 4, a.op);
  y.need(d.N * d.d * 4, a.op);
  out.need(d.N * d.d * 4, a.op);
  u.need(d.N * d.r * 4, a.op);
  LR_DISPATCH(dev, lora_forward_f32(d, x.as<float>(), A.as<float>(), B.as<float>(), y.as<float>(), out.as<float>(), u.as<float>()));
  return info.Env().Undefined();
}

// loraBackward({ g, x, A, B, u, gx?, gA?, gB?, N, k, r, d, scaling, p, maskScale, seed, offset })
Napi::Value LoraBackward(const Napi::CallbackInfo& info) {
  Args a(info, "loraBackward");
  const LoraDims d = lora_dims(a);
  Buf g = a.view("g"), x = a.view("x"), A = a.view("A"), B = a.view("B"), u = a.view("u");
  Buf gx = a.opt_view("gx"), gA = a.opt_view("gA"), gB = a.opt_view("gB");
  const Device dev = devices(a.op, {&g, &x, &A, &B, &u}, {&gx, &gA, &gB});
  g.need(d.N * d.d * 4, a.op);
  x.need(d.N * d.k * 4, a.op);
  A.need(d.r * d.k * 4, a.op);
  B.need(d.d * d.r * 4, a.op);
  u.need(d.N * d.r * 4, a.op);
  if (gx.storage) gx.need(d.N * d.k * 4, a.op);
  if (gA.storage) gA.need(d.r * d.k * 4, a.op);
  if (gB.storage) gB.need(d.d * d.r * 4, a.op);
  LR_DISPATCH(dev, lora_backward_f32(d, g.as<float>(), x.as<float>(), A.as<float>(), B.as<float>(), u.as<float>(),
                                     ptr<float>(gx), ptr<float>(gA), ptr<float>(gB)));
  return info.Env().Undefined();
}

// loraMerge({ W, dtype, A, B, rows, cols, r, scaling, transposed }): W += s·B·A, or s·(B·A)ᵀ when
// transposed; W float32 or bfloat16 (dtype), updated in place.
Napi::Value LoraMerge(const Napi::CallbackInfo& info) {
  Args a(info, "loraMerge");
  const LoraMergeDims m{a.size("rows"), a.size("cols"), a.size("r"), float(a.num("scaling")), a.flag("transposed")};
  const DType t = a.dtype("dtype");
  if (t == DType::I32) a.fail_field("dtype", "must be float32 or bfloat16");
  Buf W = a.view("W"), A = a.view("A"), B = a.view("B");
  const Device dev = same_device(a.op, {&W, &A, &B});
  const int64_t k = m.transposed ? m.rows : m.cols, d = m.transposed ? m.cols : m.rows;
  W.need(m.rows * m.cols * dtype_size(t), a.op);
  A.need(m.r * k * 4, a.op);
  B.need(d * m.r * 4, a.op);
  LR_DISPATCH(dev, lora_merge(m, W.ptr, t, A.as<float>(), B.as<float>()));
  return info.Env().Undefined();
}

}  // namespace

LR_EXPORTS(lora) {
  exports.Set("loraForward", Napi::Function::New(env, LoraForward, "loraForward"));
  exports.Set("loraBackward", Napi::Function::New(env, LoraBackward, "loraBackward"));
  exports.Set("loraMerge", Napi::Function::New(env, LoraMerge, "loraMerge"));
}

}  // namespace binding
}  // namespace lowrank
