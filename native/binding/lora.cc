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

// loraMerge({ W, dtype, A, B, rows, cols, ld, r, scaling, transposed }): W += s·B·A, or s·(B·A)ᵀ
// when transposed; W float32 or bfloat16 (dtype), rows ld apart, updated in place.
Napi::Value LoraMerge(const Napi::CallbackInfo& info) {
  Args a(info, "loraMerge");
  const LoraMergeDims m{a.size("rows"), a.size("cols"), a.size("r"), float(a.num("scaling")), a.flag("transposed"), a.size("ld")};
  if (m.ld < m.cols) a.fail_field("ld", "must be at least cols (" + std::to_string(m.cols) + "), got " + std::to_string(m.ld));
  const DType t = a.dtype("dtype");
  if (t == DType::I32) a.fail_field("dtype", "must be float32 or bfloat16");
  Buf W = a.view("W"), A = a.view("A"), B = a.view("B");
  const Device dev = same_device(a.op, {&W, &A, &B});
  const int64_t k = m.transposed ? m.rows : m.cols, d = m.transposed ? m.cols : m.rows;
  W.need(m.rows == 0 ? 0 : ((m.rows - 1) * m.ld + m.cols) * dtype_size(t), a.op);
  A.need(m.r * k * 4, a.op);
  B.need(d * m.r * 4, a.op);
  LR_DISPATCH(dev, lora_merge(m, W.ptr, t, A.as<float>(), B.as<float>()));
  return info.Env().Undefined();
}

// loraAugPack({ W, A, B, bias?, k, d, r, ld, transposed }): bf16 A, B and the bias into the
// augmented weight's padding (native/ops/lora.h, LoraAugPack).
Napi::Value LoraAugPackCall(const Napi::CallbackInfo& info) {
  Args a(info, "loraAugPack");
  const LoraAugPack pk{a.size("k"), a.size("d"), a.size("r"), a.size("ld"), a.flag("transposed")};
  const int64_t rows = pk.transposed ? pk.k + pk.r + 1 : pk.d + pk.r, cols = pk.transposed ? pk.d + pk.r : pk.k + pk.r + 1;
  if (pk.ld < cols) a.fail_field("ld", "is too small for the adapter's columns (" + std::to_string(cols) + " needed)");
  Buf W = a.view("W"), A = a.view("A"), B = a.view("B"), bias = a.opt_view("bias");
  const Device dev = devices(a.op, {&W, &A, &B}, {&bias});
  W.need(rows * pk.ld * 2, a.op);
  A.need(pk.r * pk.k * 4, a.op);
  B.need(pk.d * pk.r * 4, a.op);
  if (bias.storage) bias.need(pk.d * 4, a.op);
  LR_DISPATCH(dev, lora_aug_pack(pk, W.as<uint16_t>(), A.as<float>(), B.as<float>(), ptr<float>(bias)));
  return info.Env().Undefined();
}

// loraDownAug({ x, f, u, xa, N, K, r, ld, tailScale, ones, fTransposed, p, maskScale, seed, offset }):
// u = drop(x)·Fᵀ and the augmented bf16 input xa (native/ops/lora.h, LoraAugDims).
Napi::Value LoraDownAug(const Napi::CallbackInfo& info) {
  Args a(info, "loraDownAug");
  const LoraAugDims d{a.size("N"), a.size("K"), a.size("r"), a.size("ld"), float(a.num("tailScale")), a.flag("ones"),
                      a.flag("fTransposed"), float(a.num("p")), float(a.num("maskScale")), a.u64("seed"), a.u64("offset")};
  if (d.r < 1) a.fail_field("r", "must be at least 1");
  if (d.ld < d.K + d.r + (d.ones ? 1 : 0)) a.fail_field("ld", "leaves no room for the rank columns (and the ones column)");
  if (!(d.p >= 0 && d.p < 1)) a.fail_field("p", "must be in [0, 1)");
  Buf x = a.view("x"), f = a.view("f"), u = a.view("u"), xa = a.view("xa");
  const Device dev = same_device(a.op, {&x, &f, &u, &xa});
  x.need(d.N * d.K * 4, a.op);
  f.need(d.r * d.K * 4, a.op);
  u.need(d.N * d.r * 4, a.op);
  xa.need(d.N * d.ld * 2, a.op);
  LR_DISPATCH(dev, lora_down_aug(d, x.as<float>(), f.as<float>(), u.as<float>(), xa.as<uint16_t>()));
  return info.Env().Undefined();
}

// loraBackwardAug({ v, u, xa, ldx, ga, ldg, A, gx?, gA?, gB?, N, k, r, d, scaling, p, maskScale, seed, offset })
Napi::Value LoraBackwardAug(const Napi::CallbackInfo& info) {
  Args a(info, "loraBackwardAug");
  const LoraDims d = lora_dims(a);
  const int64_t ldx = a.size("ldx"), ldg = a.size("ldg");
  if (ldx < d.k) a.fail_field("ldx", "must be at least k");
  if (ldg < d.d) a.fail_field("ldg", "must be at least d");
  Buf v = a.view("v"), u = a.view("u"), xa = a.view("xa"), ga = a.view("ga"), A = a.view("A");
  Buf gx = a.opt_view("gx"), gA = a.opt_view("gA"), gB = a.opt_view("gB");
  const Device dev = devices(a.op, {&v, &u, &xa, &ga, &A}, {&gx, &gA, &gB});
  v.need(d.N * d.r * 4, a.op);
  u.need(d.N * d.r * 4, a.op);
  xa.need(d.N * ldx * 2, a.op);
  ga.need(d.N * ldg * 2, a.op);
  A.need(d.r * d.k * 4, a.op);
  if (gx.storage) gx.need(d.N * d.k * 4, a.op);
  if (gA.storage) gA.need(d.r * d.k * 4, a.op);
  if (gB.storage) gB.need(d.d * d.r * 4, a.op);
  LR_DISPATCH(dev, lora_backward_aug(d, v.as<float>(), u.as<float>(), xa.as<uint16_t>(), ldx, ga.as<uint16_t>(), ldg, A.as<float>(),
                                     ptr<float>(gx), ptr<float>(gA), ptr<float>(gB)));
  return info.Env().Undefined();
}

}  // namespace

LR_EXPORTS(lora) {
  exports.Set("loraAugPack", Napi::Function::New(env, LoraAugPackCall, "loraAugPack"));
  exports.Set("loraDownAug", Napi::Function::New(env, LoraDownAug, "loraDownAug"));
  exports.Set("loraBackwardAug", Napi::Function::New(env, LoraBackwardAug, "loraBackwardAug"));
  exports.Set("loraForward", Napi::Function::New(env, LoraForward, "loraForward"));
  exports.Set("loraBackward", Napi::Function::New(env, LoraBackward, "loraBackward"));
  exports.Set("loraMerge", Napi::Function::New(env, LoraMerge, "loraMerge"));
}

}  // namespace binding
}  // namespace lowrank
