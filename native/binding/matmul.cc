// Binding for native/ops/matmul.h: the batched GEMM behind matmul, and linear layers' GEMM with its epilogue.
#include <utility>

#include "../ops/matmul.h"
#include "common.h"

namespace lowrank {
namespace binding {
namespace {

// Bytes a batch of row-major matrices (rows × cols, row stride ld) of `elem`-byte elements spans.
size_t span(int64_t rows, int64_t cols, int64_t ld, int64_t batch_stride, int64_t batch, size_t elem = sizeof(float)) {
  return static_cast<size_t>(gemm_span(rows, cols, ld, batch_stride, batch)) * elem;
}

// The operands' dtypes, fields dtypeA and dtypeB: both float32, both bfloat16, or float32 a with
// bfloat16 b (a rounded to bf16 as it is read: the product of a bf16 weight, without a cast of x).
std::pair<DType, DType> operand_dtypes(const Args& args) {
  const DType ta = args.dtype("dtypeA"), tb = args.dtype("dtypeB");
  if (ta == DType::I32 || tb == DType::I32 || (ta == DType::BF16 && tb == DType::F32))
    args.fail_field("dtypeA", std::string("and dtypeB must be float32 and float32, bfloat16 and bfloat16, or float32 and bfloat16, got ") +
                                  dtype_name(ta) + " and " + dtype_name(tb));
  return {ta, tb};
}

// gemm({ transA, transB, m, n, k, alpha, a, lda, strideA, b, ldb, strideB, beta, c, ldc, strideC, batch, dtypeA, dtypeB }):
// c = alpha·op(a)·op(b) + beta·c for each of `batch` matrices, row-major with leading dimensions ld*.
// a and b as operand_dtypes allows; c is float32.
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
  const auto [type_a, type_b] = operand_dtypes(args);
  a.need(ta ? span(k, m, lda, sa, batch, dtype_size(type_a)) : span(m, k, lda, sa, batch, dtype_size(type_a)), op);
  b.need(tb ? span(n, k, ldb, sb, batch, dtype_size(type_b)) : span(k, n, ldb, sb, batch, dtype_size(type_b)), op);
  c.need(span(m, n, ldc, sc, batch), op);
  const Device dev = same_device(op, {&a, &b, &c});
  if (type_b == DType::F32)
    LR_DISPATCH(dev, gemm_f32(ta, tb, m, n, k, alpha, a.as<float>(), lda, sa, b.as<float>(), ldb, sb, beta, c.as<float>(), ldc, sc, batch));
  else if (type_a == DType::BF16)
    LR_DISPATCH(dev, gemm_bf16(ta, tb, m, n, k, alpha, a.as<uint16_t>(), lda, sa, b.as<uint16_t>(), ldb, sb, beta, c.as<float>(), ldc,
                               sc, batch));
  else
    LR_DISPATCH(dev, gemm_f32_bf16(ta, tb, m, n, k, alpha, a.as<float>(), lda, sa, b.as<uint16_t>(), ldb, sb, beta, c.as<float>(), ldc,
                                   sc, batch));
  return info.Env().Undefined();
}

// gemmEpilogue({ transA, transB, m, n, k, a, lda, b, ldb, c, ldc, bias?, pre?, dtypeA, dtypeB }): a linear
// layer's c = op(a)·op(b) + bias, then with pre: pre = that sum and c = gelu_tanh(pre). bias [n], pre
// like c; a and b as in gemm.
Napi::Value GemmEpilogue(const Napi::CallbackInfo& info) {
  Args args(info, "gemmEpilogue");
  const char* op = args.op;
  bool ta = args.flag("transA"), tb = args.flag("transB");
  int64_t m = args.size("m"), n = args.size("n"), k = args.size("k");
  Buf a = args.view("a"), b = args.view("b"), c = args.view("c"), bias = args.opt_view("bias"), pre = args.opt_view("pre");
  int64_t lda = args.integer("lda"), ldb = args.integer("ldb"), ldc = args.integer("ldc");
  const auto [type_a, type_b] = operand_dtypes(args);
  a.need(ta ? span(k, m, lda, 0, 1, dtype_size(type_a)) : span(m, k, lda, 0, 1, dtype_size(type_a)), op);
  b.need(tb ? span(n, k, ldb, 0, 1, dtype_size(type_b)) : span(k, n, ldb, 0, 1, dtype_size(type_b)), op);
  c.need(span(m, n, ldc, 0, 1), op);
  if (bias.storage) bias.need(size_t(n) * sizeof(float), op);
  if (pre.storage) pre.need(span(m, n, ldc, 0, 1), op);
  LR_DISPATCH(devices(op, {&a, &b, &c}, {&bias, &pre}),
              gemm_epilogue(type_a, type_b, ta, tb, m, n, k, a.ptr, lda, b.ptr, ldb, ptr<float>(bias), ptr<float>(pre), c.as<float>(),
                            ldc));
  return info.Env().Undefined();
}

}  // namespace

LR_EXPORTS(matmul) {
  exports.Set("gemm", Napi::Function::New(env, Gemm, "gemm"));
  exports.Set("gemmEpilogue", Napi::Function::New(env, GemmEpilogue, "gemmEpilogue"));
}

}  // namespace binding
}  // namespace lowrank
