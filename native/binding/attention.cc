// Bindings for native/ops/attention.h: attention forward and backward.
// Buffers are (storage, byteOffset) pairs; an optional one is passed as (null, 0). Every buffer is
// bounds-checked before a kernel sees it.
#include "../ops/attention.h"
#include "common.h"

namespace lowrank {
namespace binding {
namespace {

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

LR_EXPORTS(attention) {
  exports.Set("attentionForward", Napi::Function::New(env, AttentionForward, "attentionForward"));
  exports.Set("attentionBackward", Napi::Function::New(env, AttentionBackward, "attentionBackward"));
}

}  // namespace binding
}  // namespace lowrank
