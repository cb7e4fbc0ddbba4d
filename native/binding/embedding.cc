// Bindings for native/ops/embedding.h (int32 ids, float32 tables).
#include <climits>

#include "../ops/embedding.h"
#include "common.h"

namespace lowrank {
namespace binding {
namespace {

void check_sizes(const char* op, int64_t n, int64_t vocab, int64_t dim) {
  if (n < 0 || vocab < 0 || dim < 0) fail(std::string(op) + ": negative size");
  if (vocab > INT32_MAX) fail(std::string(op) + ": a table of more than 2^31 - 1 rows cannot be indexed by int32 ids");
}

// embeddingFindBadId({ ids, n, vocab }) -> the first position with an id outside [0, vocab), or -1
Napi::Value FindBadId(const Napi::CallbackInfo& info) {
  Args a(info, "embeddingFindBadId");
  const char* op = a.op;
  Buf ids = a.view("ids");
  int64_t n = a.integer("n"), vocab = a.integer("vocab");
  check_sizes(op, n, vocab, 0);
  ids.need(n * 4, op);
  int64_t first = -1;
  LR_DISPATCH(ids.device(), embedding_find_bad_id(ids.as<int32_t>(), n, vocab, &first));
  return Napi::Number::New(info.Env(), double(first));
}

// embeddingGather({ ids, n, weight, vocab, dim, out, dtype }): dtype (of weight) float32 or bfloat16.
Napi::Value Gather(const Napi::CallbackInfo& info) {
  Args a(info, "embeddingGather");
  const char* op = a.op;
  Buf ids = a.view("ids"), weight = a.view("weight"), out = a.view("out");
  int64_t n = a.integer("n"), vocab = a.integer("vocab"), dim = a.integer("dim");
  check_sizes(op, n, vocab, dim);
  ids.need(n * 4, op);
  const DType t = a.dtype("dtype");
  if (t == DType::I32) a.fail_field("dtype", "must be float32 or bfloat16");
  weight.need(vocab * dim * dtype_size(t), op);
  out.need(n * dim * 4, op);
  if (t == DType::BF16)
    LR_DISPATCH(same_device(op, {&ids, &weight, &out}),
                embedding_gather_bf16(ids.as<int32_t>(), n, weight.as<uint16_t>(), vocab, dim, out.as<float>()));
  else
    LR_DISPATCH(same_device(op, {&ids, &weight, &out}),
                embedding_gather_f32(ids.as<int32_t>(), n, weight.as<float>(), vocab, dim, out.as<float>()));
  return info.Env().Undefined();
}

// embeddingScatterAdd({ ids, n, grad, vocab, dim, dweight })
Napi::Value ScatterAdd(const Napi::CallbackInfo& info) {
  Args a(info, "embeddingScatterAdd");
  const char* op = a.op;
  Buf ids = a.view("ids"), grad = a.view("grad"), dweight = a.view("dweight");
  int64_t n = a.integer("n"), vocab = a.integer("vocab"), dim = a.integer("dim");
  check_sizes(op, n, vocab, dim);
  ids.need(n * 4, op);
  grad.need(n * dim * 4, op);
  dweight.need(vocab * dim * 4, op);
  LR_DISPATCH(same_device(op, {&ids, &grad, &dweight}),
              embedding_scatter_add_f32(ids.as<int32_t>(), n, grad.as<float>(), vocab, dim, dweight.as<float>()));
  return info.Env().Undefined();
}

}  // namespace

LR_EXPORTS(embedding) {
  exports.Set("embeddingFindBadId", Napi::Function::New(env, FindBadId, "embeddingFindBadId"));
  exports.Set("embeddingGather", Napi::Function::New(env, Gather, "embeddingGather"));
  exports.Set("embeddingScatterAdd", Napi::Function::New(env, ScatterAdd, "embeddingScatterAdd"));
}

}  // namespace binding
}  // namespace lowrank
