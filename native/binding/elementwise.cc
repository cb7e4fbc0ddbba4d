// Bindings for native/ops/elementwise.h (float32).
#include "../ops/elementwise.h"
#include "common.h"

namespace lowrank {
namespace binding {
namespace {

int64_t extent(const std::vector<int64_t>& shape, const std::vector<int64_t>& strides, const char* op) {
  int64_t last = 0;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 0) return 0;
    if (strides[d] < 0) fail(std::string(op) + ": negative strides are not supported");
    last += (shape[d] - 1) * strides[d];
  }
  return last + 1;
}

// binary(op, a, aOffset, aStrides[], b, bOffset, bStrides[], out, outOffset, shape[])
Napi::Value Binary(const Napi::CallbackInfo& info) {
  const char* op = "binary";
  int64_t code = int_arg(info, 0, op);
  if (code < 0 || code > 3) fail("binary: unknown op code");
  Buf a = buf_arg(info, 1, op);
  std::vector<int64_t> as = ints_arg(info, 3, op);
  Buf b = buf_arg(info, 4, op);
  std::vector<int64_t> bs = ints_arg(info, 6, op);
  Buf out = buf_arg(info, 7, op);
  std::vector<int64_t> shape = ints_arg(info, 9, op);
  if (as.size() != shape.size() || bs.size() != shape.size() || shape.size() > kMaxDims) fail("binary: rank mismatch");
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  a.need(extent(shape, as, op) * 4, op);
  b.need(extent(shape, bs, op) * 4, op);
  out.need(n * 4, op);
  LR_DISPATCH(same_device(op, {&a, &b, &out}), binary_f32(static_cast<BinaryOp>(code), a.as<float>(), as.data(), b.as<float>(),
                                                          bs.data(), out.as<float>(), static_cast<int>(shape.size()), shape.data()));
  return info.Env().Undefined();
}

// unary(op, x, xOffset, out, outOffset, n, alpha)
Napi::Value Unary(const Napi::CallbackInfo& info) {
  const char* op = "unary";
  int64_t code = int_arg(info, 0, op);
  if (code < 0 || code > 12) fail("unary: unknown op code");
  Buf x = buf_arg(info, 1, op), out = buf_arg(info, 3, op);
  int64_t n = int_arg(info, 5, op);
  x.need(n * 4, op);
  out.need(n * 4, op);
  LR_DISPATCH(same_device(op, {&x, &out}), unary_f32(static_cast<UnaryOp>(code), x.as<float>(), out.as<float>(), n,
                                                     float(num_arg(info, 6, op))));
  return info.Env().Undefined();
}

// unaryBackward(op, x, xOffset, g, gOffset, gx, gxOffset, n, alpha)
Napi::Value UnaryBackward(const Napi::CallbackInfo& info) {
  const char* op = "unaryBackward";
  int64_t code = int_arg(info, 0, op);
  if (code < 0 || code > 12) fail("unaryBackward: unknown op code");
  Buf x = buf_arg(info, 1, op), g = buf_arg(info, 3, op), gx = buf_arg(info, 5, op);
  int64_t n = int_arg(info, 7, op);
  x.need(n * 4, op);
  g.need(n * 4, op);
  gx.need(n * 4, op);
  LR_DISPATCH(same_device(op, {&x, &g, &gx}), unary_backward_f32(static_cast<UnaryOp>(code), x.as<float>(), g.as<float>(),
                                                                 gx.as<float>(), n, float(num_arg(info, 8, op))));
  return info.Env().Undefined();
}

// sumRows(x, xOffset, out, outOffset, rows, cols)
Napi::Value SumRows(const Napi::CallbackInfo& info) {
  const char* op = "sumRows";
  Buf x = buf_arg(info, 0, op), out = buf_arg(info, 2, op);
  int64_t rows = int_arg(info, 4, op), cols = int_arg(info, 5, op);
  x.need(rows * cols * 4, op);
  out.need(rows * 4, op);
  LR_DISPATCH(same_device(op, {&x, &out}), sum_rows_f32(x.as<float>(), out.as<float>(), rows, cols));
  return info.Env().Undefined();
}

}  // namespace

LR_EXPORTS(elementwise) {
  exports.Set("binary", Napi::Function::New(env, Binary, "binary"));
  exports.Set("unary", Napi::Function::New(env, Unary, "unary"));
  exports.Set("unaryBackward", Napi::Function::New(env, UnaryBackward, "unaryBackward"));
  exports.Set("sumRows", Napi::Function::New(env, SumRows, "sumRows"));
}

}  // namespace binding
}  // namespace lowrank
