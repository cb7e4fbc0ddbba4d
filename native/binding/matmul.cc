// gemm(transA, transB, m, n, k, alpha, a, aOffset, lda, strideA, b, bOffset, ldb, strideB,
//      beta, c, cOffset, ldc, strideC, batch): float32, see native/ops/matmul.h.
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

Napi::Value Gemm(const Napi::CallbackInfo& info) {
  const char* op = "gemm";
  bool ta = bool_arg(info, 0, op), tb = bool_arg(info, 1, op);
  int64_t m = int_arg(info, 2, op), n = int_arg(info, 3, op), k = int_arg(info, 4, op);
  float alpha = float(num_arg(info, 5, op));
  Buf a = buf_arg(info, 6, op);
  int64_t lda = int_arg(info, 8, op), sa = int_arg(info, 9, op);
  Buf b = buf_arg(info, 10, op);
  int64_t ldb = int_arg(info, 12, op), sb = int_arg(info, 13, op);
  float beta = float(num_arg(info, 14, op));
  Buf c = buf_arg(info, 15, op);
  int64_t ldc = int_arg(info, 17, op), sc = int_arg(info, 18, op), batch = int_arg(info, 19, op);
  if (m < 0 || n < 0 || k < 0 || batch < 0) fail("gemm: negative size");
  a.need(ta ? span(k, m, lda, sa, batch) : span(m, k, lda, sa, batch), op);
  b.need(tb ? span(n, k, ldb, sb, batch) : span(k, n, ldb, sb, batch), op);
  c.need(span(m, n, ldc, sc, batch), op);
  LR_DISPATCH(same_device(op, {&a, &b, &c}), gemm_f32(ta, tb, m, n, k, alpha, a.as<float>(), lda, sa, b.as<float>(), ldb, sb,
                                                      beta, c.as<float>(), ldc, sc, batch));
  return info.Env().Undefined();
}

}  // namespace

LR_EXPORTS(gemm) { exports.Set("gemm", Napi::Function::New(env, Gemm, "gemm")); }

}  // namespace binding
}  // namespace lowrank
