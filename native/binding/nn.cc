// Bindings for native/ops/nn.h. Buffers are (storage, byteOffset) pairs; an optional one is
// passed as (null, 0). Every buffer is bounds-checked before a kernel sees it.
#include "../ops/nn.h"
#include "common.h"

namespace lowrank {
namespace binding {
namespace {

// An optional buffer: null or undefined at position i gives an empty Buf (storage == nullptr).
Buf opt_buf_arg(const Napi::CallbackInfo& info, size_t i, const char* op) {
  if (info.Length() > i && (info[i].IsNull() || info[i].IsUndefined())) return Buf{nullptr, nullptr, 0};
  return buf_arg(info, i, op);
}

template <typename T>
T* ptr(const Buf& b) {
  return b.storage ? b.as<T>() : nullptr;
}

// The device of the required buffers, after checking that the present optional ones share it.
Device devices(const char* op, std::initializer_list<const Buf*> required, std::initializer_list<const Buf*> optional) {
  Device d = same_device(op, required);
  for (const Buf* b : optional)
    if (b->storage) same_device(op, {*required.begin(), b});
  return d;
}

int64_t size_arg(const Napi::CallbackInfo& info, size_t i, const char* op) {
  int64_t v = int_arg(info, i, op);
  if (v < 0) fail(std::string(op) + ": argument " + std::to_string(i) + " must be a size >= 0, got " + std::to_string(v));
  return v;
}

Reduction reduction_arg(const Napi::CallbackInfo& info, size_t i, const char* op) {
  int64_t r = int_arg(info, i, op);
  if (r < 0 || r > 2) fail(std::string(op) + ": unknown reduction code " + std::to_string(r));
  return static_cast<Reduction>(r);
}

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

// crossEntropy(logits, lo, targets, to, lse, lseo, loss, losso, total|null, totalo, N, V, ignoreIndex, reduction)
// Returns null, or [row, target] for the first target outside [0, V) that is not ignoreIndex.
Napi::Value CrossEntropy(const Napi::CallbackInfo& info) {
  const char* op = "crossEntropy";
  Buf logits = buf_arg(info, 0, op), targets = buf_arg(info, 2, op), lse = buf_arg(info, 4, op), loss = buf_arg(info, 6, op);
  Buf total = opt_buf_arg(info, 8, op);
  int64_t N = size_arg(info, 10, op), V = size_arg(info, 11, op);
  int32_t ignore = static_cast<int32_t>(int_arg(info, 12, op));
  Reduction reduction = reduction_arg(info, 13, op);
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

// crossEntropyBackward(logits, lo, targets, to, lse, lseo, dout, douto, dlogits, dlo, N, V, ignoreIndex, reduction)
Napi::Value CrossEntropyBackward(const Napi::CallbackInfo& info) {
  const char* op = "crossEntropyBackward";
  Buf logits = buf_arg(info, 0, op), targets = buf_arg(info, 2, op), lse = buf_arg(info, 4, op);
  Buf dout = buf_arg(info, 6, op), dlogits = buf_arg(info, 8, op);
  int64_t N = size_arg(info, 10, op), V = size_arg(info, 11, op);
  int32_t ignore = static_cast<int32_t>(int_arg(info, 12, op));
  Reduction reduction = reduction_arg(info, 13, op);
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

// An attention operand: (storage, byteOffset, [sb, sh, st]) at i..i+2, logically [B, H, T, D]
// with D contiguous; checked to lie inside its storage.
AttnView view_arg(const Napi::CallbackInfo& info, size_t i, const char* op, const AttnDims& d, int64_t T, Buf& buf) {
  buf = buf_arg(info, i, op);
  std::vector<int64_t> s = ints_arg(info, i + 2, op);
  if (s.size() != 3 || s[0] < 0 || s[1] < 0 || s[2] < 0)
    fail(std::string(op) + ": strides must be 3 numbers >= 0 (batch, head, time)");
  if (d.B > 0 && d.H > 0 && T > 0 && d.D > 0)
    buf.need(size_t(((d.B - 1) * s[0] + (d.H - 1) * s[1] + (T - 1) * s[2] + d.D) * 4), op);
  return AttnView{buf.as<float>(), s[0], s[1], s[2]};
}

// [B, H, Tq, Tk, D], scale, causal, dropout, seed, offset at positions 0..5.
AttnDims dims_arg(const Napi::CallbackInfo& info, const char* op) {
  std::vector<int64_t> s = ints_arg(info, 0, op);
  if (s.size() != 5) fail(std::string(op) + ": dims must be [B, H, Tq, Tk, D]");
  for (int64_t v : s)
    if (v < 0) fail(std::string(op) + ": negative size in dims");
  AttnDims d{s[0], s[1], s[2], s[3], s[4], float(num_arg(info, 1, op)), bool_arg(info, 2, op),
             float(num_arg(info, 3, op)), u64_arg(info, 4, op), u64_arg(info, 5, op)};
  if (d.causal && d.Tq > d.Tk) fail(std::string(op) + ": causal attention needs Tq <= Tk");
  if (!(d.dropout >= 0 && d.dropout < 1)) fail(std::string(op) + ": dropout must be in [0, 1), got " + std::to_string(d.dropout));
  return d;
}

// attentionForward(dims, scale, causal, dropout, seed, offset, q, qo, qs, k, ko, ks, v, vo, vs, keep|null, keepo,
//                  out, outo, outs, lse, lseo)
Napi::Value AttentionForward(const Napi::CallbackInfo& info) {
  const char* op = "attentionForward";
  AttnDims d = dims_arg(info, op);
  Buf qb, kb, vb, ob;
  AttnView q = view_arg(info, 6, op, d, d.Tq, qb), k = view_arg(info, 9, op, d, d.Tk, kb), v = view_arg(info, 12, op, d, d.Tk, vb);
  Buf keep = opt_buf_arg(info, 15, op);
  AttnView out = view_arg(info, 17, op, d, d.Tq, ob);
  Buf lse = buf_arg(info, 20, op);
  if (keep.storage) keep.need(d.B * d.Tk * 4, op);
  lse.need(d.B * d.H * d.Tq * 4, op);
  if (d.B * d.H * d.Tq == 0) return info.Env().Undefined();
  LR_DISPATCH(devices(op, {&qb, &kb, &vb, &ob, &lse}, {&keep}),
              attention_forward_f32(d, q, k, v, ptr<int32_t>(keep), out, lse.as<float>()));
  return info.Env().Undefined();
}

// attentionBackward(dims, scale, causal, dropout, seed, offset, q, qo, qs, k, ko, ks, v, vo, vs, keep|null, keepo,
//                   lse, lseo, dout, douto, douts, dq, dqo, dqs, dk, dko, dks, dv, dvo, dvs)
Napi::Value AttentionBackward(const Napi::CallbackInfo& info) {
  const char* op = "attentionBackward";
  AttnDims d = dims_arg(info, op);
  Buf qb, kb, vb, gob, gqb, gkb, gvb;
  AttnView q = view_arg(info, 6, op, d, d.Tq, qb), k = view_arg(info, 9, op, d, d.Tk, kb), v = view_arg(info, 12, op, d, d.Tk, vb);
  Buf keep = opt_buf_arg(info, 15, op), lse = buf_arg(info, 17, op);
  AttnView dout = view_arg(info, 19, op, d, d.Tq, gob), dq = view_arg(info, 22, op, d, d.Tq, gqb);
  AttnView dk = view_arg(info, 25, op, d, d.Tk, gkb), dv = view_arg(info, 28, op, d, d.Tk, gvb);
  if (keep.storage) keep.need(d.B * d.Tk * 4, op);
  lse.need(d.B * d.H * d.Tq * 4, op);
  if (d.B * d.H == 0) return info.Env().Undefined();
  LR_DISPATCH(devices(op, {&qb, &kb, &vb, &lse, &gob, &gqb, &gkb, &gvb}, {&keep}),
              attention_backward_f32(d, q, k, v, ptr<int32_t>(keep), lse.as<float>(), dout, dq, dk, dv));
  return info.Env().Undefined();
}

}  // namespace

LR_EXPORTS(nn) {
  exports.Set("layerNorm", Napi::Function::New(env, LayerNorm, "layerNorm"));
  exports.Set("layerNormBackward", Napi::Function::New(env, LayerNormBackward, "layerNormBackward"));
  exports.Set("softmax", Napi::Function::New(env, Softmax, "softmax"));
  exports.Set("softmaxBackward", Napi::Function::New(env, SoftmaxBackward, "softmaxBackward"));
  exports.Set("crossEntropy", Napi::Function::New(env, CrossEntropy, "crossEntropy"));
  exports.Set("crossEntropyBackward", Napi::Function::New(env, CrossEntropyBackward, "crossEntropyBackward"));
  exports.Set("dropout", Napi::Function::New(env, Dropout, "dropout"));
  exports.Set("attentionForward", Napi::Function::New(env, AttentionForward, "attentionForward"));
  exports.Set("attentionBackward", Napi::Function::New(env, AttentionBackward, "attentionBackward"));
}

}  // namespace binding
}  // namespace lowrank
