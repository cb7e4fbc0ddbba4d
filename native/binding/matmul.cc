// Binding for native/ops/matmul.h: the batched float32 GEMM behind matmul, linear and Conv1D.
#include "../ops/matmul.h"
#include "common.h"

namespace lowrank {
namespace binding {
namespace {

// Bytes a batch of row-major matrices (rows × cols, row stride ld) spans.
size_t span(int64_t rows, int64_t cols, int64_t ld, int64_t batch_stride, int64_t batch) {
  if (rows == 0 || cols == 0 || batch == 0) return 0;
  return static_cast<size_t>((batch - 1) * batch_stride + (rows - 1) * ld + cols) * sizeof(float);
}

// gemm({ transA, transB, m, n, k, alpha, a, lda, strideA, b, ldb, strideB, beta, c, ldc, strideC, batch }):
// c = alpha·op(a)·op(b) + beta·c for each of `batch` matrices, row-major with leading dimensions ld*.
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
  a.need(ta ? span(k, m, lda, sa, batch) : span(m, k, lda, sa, batch), op);
  b.need(tb ? span(n, k, ldb, sb, batch) : span(k, n, ldb, sb, batch), op);
  c.need(span(m, n, ldc, sc, batch), op);
  LR_DISPATCH(same_device(op, {&a, &b, &c}), gemm_f32(ta, tb, m, n, k, alpha, a.as<float>(), lda, sa, b.as<float>(), ldb, sb,
                                                      beta, c.as<float>(), ldc, sc, batch));
  return info.Env().Undefined();
}

}  // namespace

LR_EXPORTS(matmul) { exports.Set("gemm", Napi::Function::New(env, Gemm, "gemm")); }

}  // namespace binding
}  // namespace lowrank
