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

// binary({ op, a, b, out, shape }): a and b carry strides (0 broadcasts), out is contiguous.
Napi::Value Binary(const Napi::CallbackInfo& info) {
  Args args(info, "binary");
  const char* op = args.op;
  BinaryOp code = args.code<BinaryOp>("op", kBinaryOpCount);
  Buf a = args.view("a"), b = args.view("b"), out = args.view("out");
  const std::vector<int64_t>&as = a.strides, &bs = b.strides;
  std::vector<int64_t> shape = args.ints("shape");
  if (as.size() != shape.size() || bs.size() != shape.size() || shape.size() > kMaxDims) fail("binary: rank mismatch");
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  a.need(extent(shape, as, op) * 4, op);
  b.need(extent(shape, bs, op) * 4, op);
  out.need(n * 4, op);
  LR_DISPATCH(same_device(op, {&a, &b, &out}), binary_f32(code, a.as<float>(), as.data(), b.as<float>(),
                                                          bs.data(), out.as<float>(), static_cast<int>(shape.size()), shape.data()));
  return info.Env().Undefined();
}

// unary({ op, x, out, n, alpha }): contiguous.
Napi::Value Unary(const Napi::CallbackInfo& info) {
  Args a(info, "unary");
  const char* op = a.op;
  UnaryOp code = a.code<UnaryOp>("op", kUnaryOpCount);
  Buf x = a.view("x"), out = a.view("out");
  int64_t n = a.size("n");
  x.need(n * 4, op);
  out.need(n * 4, op);
  LR_DISPATCH(same_device(op, {&x, &out}), unary_f32(code, x.as<float>(), out.as<float>(), n, float(a.num("alpha"))));
  return info.Env().Undefined();
}

// unaryBackward({ op, x, g, gx, n, alpha, gxBf16 }): contiguous; gx float32, or bfloat16 with gxBf16.
Napi::Value UnaryBackward(const Napi::CallbackInfo& info) {
  Args a(info, "unaryBackward");
  const char* op = a.op;
  UnaryOp code = a.code<UnaryOp>("op", kUnaryOpCount);
  Buf x = a.view("x"), g = a.view("g"), gx = a.view("gx");
  int64_t n = a.size("n");
  const bool bf16 = a.flag("gxBf16");
  const float alpha = float(a.num("alpha"));
  x.need(n * 4, op);
  g.need(n * 4, op);
  gx.need(n * (bf16 ? 2 : 4), op);
  if (bf16)
    LR_DISPATCH(same_device(op, {&x, &g, &gx}), unary_backward_bf16(code, x.as<float>(), g.as<float>(), gx.as<uint16_t>(), n, alpha));
  else
    LR_DISPATCH(same_device(op, {&x, &g, &gx}), unary_backward_f32(code, x.as<float>(), g.as<float>(), gx.as<float>(), n, alpha));
  return info.Env().Undefined();
}

// sumRows({ x, out, rows, cols }): contiguous.
Napi::Value SumRows(const Napi::CallbackInfo& info) {
  Args a(info, "sumRows");
  const char* op = a.op;
  Buf x = a.view("x"), out = a.view("out");
  int64_t rows = a.size("rows"), cols = a.size("cols");
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
