// Bindings for native/ops/attention.h: attention forward and backward.
// Buffers are (storage, byteOffset) pairs; an optional one is passed as (null, 0). Every buffer is
// bounds-checked before a kernel sees it.
#include "../ops/attention.h"
#include "common.h"

namespace lowrank {
namespace binding {
namespace {

// An attention operand: a view logically [B, H, T, D] with D contiguous, whose strides are the
// [batch, head, time] ones; checked to lie inside its storage.
// A key/value operand (k, v, dk, dv) has H / kv_group heads.
AttnView attn_view(const Args& a, const char* name, const AttnDims& d, int64_t T, Buf& buf, bool key_value = false) {
  buf = a.view(name);
  const std::vector<int64_t>& s = buf.strides;
  if (s.size() != 3 || s[0] < 0 || s[1] < 0 || s[2] < 0) a.fail_field(name, "needs 3 strides >= 0 (batch, head, time)");
  const int64_t heads = key_value ? d.H / d.kv_group : d.H;
  if (d.B > 0 && heads > 0 && T > 0 && d.D > 0)
    buf.need(size_t(((d.B - 1) * s[0] + (heads - 1) * s[1] + (T - 1) * s[2] + d.D) * 4), a.op);
  return AttnView{buf.as<float>(), s[0], s[1], s[2]};
}

// The device of the call's buffers; grouped-query attention runs on the CPU only.
Device attn_device(const char* op, const AttnDims& d, Device dev) {
  if (d.kv_group != 1 && dev.is_cuda()) fail(std::string(op) + ": kvGroup > 1 (grouped key/value heads) runs on the CPU; repeat the heads for CUDA");
  return dev;
}

// dims: [B, H, Tq, Tk, D]; scale, causal, window, dropout, seed, offset, precision (a DType code), kvGroup, kvRounded.
AttnDims dims_arg(const Args& a) {
  const char* op = a.op;
  std::vector<int64_t> s = a.ints("dims");
  if (s.size() != 5) a.fail_field("dims", "must be [B, H, Tq, Tk, D]");
  for (int64_t v : s)
    if (v < 0) a.fail_field("dims", "has a negative size");
  AttnDims d{s[0], s[1], s[2], s[3], s[4], float(a.num("scale")), a.flag("causal"), a.integer("window"), float(a.num("dropout")),
             a.u64("seed"), a.u64("offset"), a.dtype("precision"), a.integer("kvGroup"), a.flag("kvRounded")};
  if (d.kv_group < 1 || d.H % d.kv_group != 0)
    a.fail_field("kvGroup", "must be >= 1 and divide the " + std::to_string(d.H) + " query heads, got " + std::to_string(d.kv_group));
  if (d.causal && d.Tq > d.Tk) fail(std::string(op) + ": causal attention needs Tq <= Tk");
  if (d.window < 0 || (d.window > 0 && !d.causal)) fail(std::string(op) + ": window must be 0 (none) or > 0 with causal attention");
  if (!(d.dropout >= 0 && d.dropout < 1)) fail(std::string(op) + ": dropout must be in [0, 1), got " + std::to_string(d.dropout));
  if (d.precision != DType::F32 && d.precision != DType::BF16)
    a.fail_field("precision", std::string("must be float32 or bfloat16, got ") + dtype_name(d.precision));
  return d;
}

// attentionForward({ dims, scale, causal, window, dropout, seed, offset, precision, kvGroup, kvRounded, q, k, v, keep?, out, lse }):
// q, k, v and out carry [batch, head, time] strides.
Napi::Value AttentionForward(const Napi::CallbackInfo& info) {
  Args a(info, "attentionForward");
  const char* op = a.op;
  AttnDims d = dims_arg(a);
  Buf qb, kb, vb, ob;
  AttnView q = attn_view(a, "q", d, d.Tq, qb), k = attn_view(a, "k", d, d.Tk, kb, true), v = attn_view(a, "v", d, d.Tk, vb, true);
  Buf keep = a.opt_view("keep");
  AttnView out = attn_view(a, "out", d, d.Tq, ob);
  Buf lse = a.view("lse");
  if (keep.storage) keep.need(d.B * d.Tk * 4, op);
  lse.need(d.B * d.H * d.Tq * 4, op);
  if (d.B * d.H * d.Tq == 0) return info.Env().Undefined();
  LR_DISPATCH(attn_device(op, d, devices(op, {&qb, &kb, &vb, &ob, &lse}, {&keep})),
              attention_forward_f32(d, q, k, v, ptr<int32_t>(keep), out, lse.as<float>()));
  return info.Env().Undefined();
}

// attentionBackward({ dims, scale, causal, window, dropout, seed, offset, precision, kvGroup, kvRounded, q, k, v, keep?, lse, out, dout, dq, dk, dv }):
// q, k, v, out (the forward's), dout, dq, dk and dv carry [batch, head, time] strides.
Napi::Value AttentionBackward(const Napi::CallbackInfo& info) {
  Args a(info, "attentionBackward");
  const char* op = a.op;
  AttnDims d = dims_arg(a);
  Buf qb, kb, vb, ob, gob, gqb, gkb, gvb;
  AttnView q = attn_view(a, "q", d, d.Tq, qb), k = attn_view(a, "k", d, d.Tk, kb, true), v = attn_view(a, "v", d, d.Tk, vb, true);
  Buf keep = a.opt_view("keep"), lse = a.view("lse");
  AttnView out = attn_view(a, "out", d, d.Tq, ob);
  AttnView dout = attn_view(a, "dout", d, d.Tq, gob), dq = attn_view(a, "dq", d, d.Tq, gqb);
  AttnView dk = attn_view(a, "dk", d, d.Tk, gkb, true), dv = attn_view(a, "dv", d, d.Tk, gvb, true);
  if (keep.storage) keep.need(d.B * d.Tk * 4, op);
  lse.need(d.B * d.H * d.Tq * 4, op);
  if (d.B * d.H == 0) return info.Env().Undefined();
  LR_DISPATCH(attn_device(op, d, devices(op, {&qb, &kb, &vb, &lse, &ob, &gob, &gqb, &gkb, &gvb}, {&keep})),
              attention_backward_f32(d, q, k, v, ptr<int32_t>(keep), lse.as<float>(), out, dout, dq, dk, dv));
  return info.Env().Undefined();
}

}  // namespace

LR_EXPORTS(attention) {
  exports.Set("attentionForward", Napi::Function::New(env, AttentionForward, "attentionForward"));
  exports.Set("attentionBackward", Napi::Function::New(env, AttentionBackward, "attentionBackward"));
}

}  // namespace binding
}  // namespace lowrank
