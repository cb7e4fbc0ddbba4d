// Binding for native/ops/matmul.h: the batched GEMM behind matmul, and linear layers' GEMM with its epilogue.
#include "../ops/matmul.h"
#include "common.h"

namespace lowrank {
namespace binding {
namespace {

// Bytes a batch of row-major matrices (rows × cols, row stride ld) of `elem`-byte elements spans.
size_t span(int64_t rows, int64_t cols, int64_t ld, int64_t batch_stride, int64_t batch, size_t elem = sizeof(float)) {
  if (rows == 0 || cols == 0 || batch == 0) return 0;
  return static_cast<size_t>((batch - 1) * batch_stride + (rows - 1) * ld + cols) * elem;
}

// gemm({ transA, transB, m, n, k, alpha, a, lda, strideA, b, ldb, strideB, beta, c, ldc, strideC, batch, dtype }):
// c = alpha·op(a)·op(b) + beta·c for each of `batch` matrices, row-major with leading dimensions ld*.
// dtype (of a and b) is float32 or bfloat16; c is float32.
Napi::Value Gemm(const Napi::CallbackInfo& info) {
  Args args(info, "gemm");
  const char* op = args.op;
  bool ta = args.flag("transA"), tb = args.flag("transB");
  int64_t m = args.size("m"), n = args.size("n"), k = args.size("k");
  float alpha = float(args.num("alpha"));
  Buf a = args.view("a");
  int64_t lda = args.integer("lda"), sa = args.integer("strideA");
  Buf b = args.view("b");
  int64_t ldb = args.integer("ldb"), sb = args.integer("strideB");
  float beta = float(args.num("beta"));
  Buf c = args.view("c");
  int64_t ldc = args.integer("ldc"), sc = args.integer("strideC"), batch = args.size("batch");
  const DType t = args.dtype("dtype");
  if (t == DType::I32) args.fail_field("dtype", "must be float32 or bfloat16");
  const size_t elem = dtype_size(t);
  a.need(ta ? span(k, m, lda, sa, batch, elem) : span(m, k, lda, sa, batch, elem), op);
  b.need(tb ? span(n, k, ldb, sb, batch, elem) : span(k, n, ldb, sb, batch, elem), op);
  c.need(span(m, n, ldc, sc, batch), op);
  if (t == DType::BF16)
    LR_DISPATCH(same_device(op, {&a, &b, &c}), gemm_bf16(ta, tb, m, n, k, alpha, a.as<uint16_t>(), lda, sa, b.as<uint16_t>(),
                                                         ldb, sb, beta, c.as<float>(), ldc, sc, batch));
  else
    LR_DISPATCH(same_device(op, {&a, &b, &c}), gemm_f32(ta, tb, m, n, k, alpha, a.as<float>(), lda, sa, b.as<float>(), ldb, sb,
                                                        beta, c.as<float>(), ldc, sc, batch));
  return info.Env().Undefined();
}

// gemmEpilogue({ transA, transB, m, n, k, a, lda, b, ldb, c, ldc, bias?, pre?, dtype }): a linear layer's
// c = op(a)·op(b) + bias, then with pre: pre = that sum and c = gelu_tanh(pre). bias [n], pre like c.
Napi::Value GemmEpilogue(const Napi::CallbackInfo& info) {
  Args args(info, "gemmEpilogue");
  const char* op = args.op;
  bool ta = args.flag("transA"), tb = args.flag("transB");
  int64_t m = args.size("m"), n = args.size("n"), k = args.size("k");
  Buf a = args.view("a"), b = args.view("b"), c = args.view("c"), bias = args.opt_view("bias"), pre = args.opt_view("pre");
  int64_t lda = args.integer("lda"), ldb = args.integer("ldb"), ldc = args.integer("ldc");
  const DType t = args.dtype("dtype");
  if (t == DType::I32) args.fail_field("dtype", "must be float32 or bfloat16");
  const size_t elem = dtype_size(t);
  a.need(ta ? span(k, m, lda, 0, 1, elem) : span(m, k, lda, 0, 1, elem), op);
  b.need(tb ? span(n, k, ldb, 0, 1, elem) : span(k, n, ldb, 0, 1, elem), op);
  c.need(span(m, n, ldc, 0, 1), op);
  if (bias.storage) bias.need(size_t(n) * sizeof(float), op);
  if (pre.storage) pre.need(span(m, n, ldc, 0, 1), op);
  LR_DISPATCH(devices(op, {&a, &b, &c}, {&bias, &pre}),
              gemm_epilogue(t, ta, tb, m, n, k, a.ptr, lda, b.ptr, ldb, ptr<float>(bias), ptr<float>(pre), c.as<float>(), ldc));
  return info.Env().Undefined();
}

}  // namespace

LR_EXPORTS(matmul) {
  exports.Set("gemm", Napi::Function::New(env, Gemm, "gemm"));
  exports.Set("gemmEpilogue", Napi::Function::New(env, GemmEpilogue, "gemmEpilogue"));
}

}  // namespace binding
}  // namespace lowrank
