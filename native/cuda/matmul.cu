// Every cuBLAS call in lowrank lives in this file, so the kernels in the other .cu files compile on
// hosts that have nvcc but not cuBLAS (CI compiles them without this one).
#include <cublasLt.h>
#include <cublas_v2.h>

#include <map>
#include <mutex>
#include <tuple>

#include "../ops/creation.h"
#include "../ops/elementwise.h"
#include "../ops/matmul.h"
#include "common.cuh"

namespace lowrank {
namespace cuda {
namespace {

void check_blas(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw std::runtime_error(std::string("cuBLAS error in ") + what + ": status " + std::to_string(static_cast<int>(s)));
}

// One handle per device, bound to lowrank's stream for that device.
cublasHandle_t handle() {
  static cublasHandle_t handles[kMaxCudaDevices] = {};
  static std::mutex mutex;
  int device = 0;
  LR_CUDA_CHECK(cudaGetDevice(&device));
  std::lock_guard<std::mutex> lock(mutex);
  if (!handles[device]) {
    check_blas(cublasCreate(&handles[device]), "cublasCreate");
    // float32 GEMMs stay in full fp32 (no TF32) so results match the CPU twin to fp32 rounding.
    check_blas(cublasSetMathMode(handles[device], CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
  }
  check_blas(cublasSetStream(handles[device], current_stream()), "cublasSetStream");
  return handles[device];
}

// cuBLASLt, for the GEMMs that carry an epilogue (gemm_epilogue): one handle and one workspace per
// device, both kept for the life of the process (the workspace comes from the stream-ordered pool).
constexpr size_t kLtWorkspaceBytes = size_t(32) << 20;

struct LtDevice {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
};

LtDevice& lt_device(int device) {
  static LtDevice devices[kMaxCudaDevices];
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);
  LtDevice& d = devices[device];
  if (!d.handle) {
    check_blas(cublasLtCreate(&d.handle), "cublasLtCreate");
    LR_CUDA_CHECK(cudaMallocAsync(&d.workspace, kLtWorkspaceBytes, current_stream()));
  }
  return d;
}

// The largest power of two up to 256 that divides a pointer's address: cuBLASLt's heuristic assumes
// 256-byte aligned operands unless told less, and a view may start anywhere in its storage.
int alignment(const void* p) {
  const auto address = reinterpret_cast<uintptr_t>(p);
  int a = 256;
  while (a > 1 && address % uintptr_t(a) != 0) a /= 2;
  return a;
}

// The descriptors of one cuBLASLt call, destroyed with it.
struct LtCall {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  ~LtCall() {
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (desc) cublasLtMatmulDescDestroy(desc);
  }
};

template <typename T>
void set_attribute(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attribute, const T& value, const char* what) {
  check_blas(cublasLtMatmulDescSetAttribute(desc, attribute, &value, sizeof(value)), what);
}

// Shape, layout, epilogue and alignments: what the heuristic's choice depends on.
using LtKey = std::tuple<int, int, bool, bool, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int, int, int, int>;

// The heuristic's algorithm for a key, or nothing when cuBLASLt has none (the caller falls back).
struct LtChoice {
  bool found = false;
  cublasLtMatmulAlgo_t algo{};
};

// C = op(A)·op(B) with the epilogue in one cuBLASLt call; false (nothing written) when cuBLASLt
// offers no algorithm for it. Row-major C is column-major Cᵀ = op(B)ᵀ·op(A)ᵀ: B is cuBLASLt's A.
bool gemm_lt(DType dtype, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const void* a, int64_t lda,
             const void* b, int64_t ldb, const float* bias, float* pre, float* c, int64_t ldc) {
  // The epilogue's own vectors are not covered by the alignment preferences: leave odd ones to the fallback.
  if ((bias && alignment(bias) < 16) || (pre && alignment(pre) < 16)) return false;
  int device = 0;
  LR_CUDA_CHECK(cudaGetDevice(&device));
  LtDevice& lt = lt_device(device);
  const cudaDataType_t operand = dtype == DType::BF16 ? CUDA_R_16BF : CUDA_R_32F;
  const cublasLtEpilogue_t epilogue = pre ? (bias ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_AUX)
                                          : (bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT);
  const cublasOperation_t op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  LtCall call;
  check_blas(cublasLtMatmulDescCreate(&call.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "cublasLtMatmulDescCreate");
  set_attribute(call.desc, CUBLASLT_MATMUL_DESC_TRANSA, op_b, "cuBLASLt TRANSA");
  set_attribute(call.desc, CUBLASLT_MATMUL_DESC_TRANSB, op_a, "cuBLASLt TRANSB");
  set_attribute(call.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, epilogue, "cuBLASLt EPILOGUE");
  if (bias) set_attribute(call.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, static_cast<const void*>(bias), "cuBLASLt BIAS_POINTER");
  if (pre) {
    set_attribute(call.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, static_cast<void*>(pre), "cuBLASLt EPILOGUE_AUX_POINTER");
    set_attribute(call.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, ldc, "cuBLASLt EPILOGUE_AUX_LD");
  }
  // Column-major shapes as stored: cuBLASLt's A is our b (n × k after its op), its B our a (k × m).
  check_blas(cublasLtMatrixLayoutCreate(&call.a, operand, trans_b ? k : n, trans_b ? n : k, ldb), "cublasLtMatrixLayoutCreate (A)");
  check_blas(cublasLtMatrixLayoutCreate(&call.b, operand, trans_a ? m : k, trans_a ? k : m, lda), "cublasLtMatrixLayoutCreate (B)");
  check_blas(cublasLtMatrixLayoutCreate(&call.c, CUDA_R_32F, n, m, ldc), "cublasLtMatrixLayoutCreate (C)");

  const int align_a = alignment(b), align_b = alignment(a), align_c = alignment(c);
  const LtKey key{device, static_cast<int>(dtype), trans_a, trans_b, m, n, k, lda, ldb, ldc, static_cast<int>(epilogue), align_a, align_b, align_c};
  static std::map<LtKey, LtChoice> choices;
  static std::mutex mutex;
  LtChoice choice;
  {
    std::lock_guard<std::mutex> lock(mutex);
    auto found = choices.find(key);
    if (found != choices.end()) {
      choice = found->second;
    } else {
      cublasLtMatmulPreference_t preference = nullptr;
      check_blas(cublasLtMatmulPreferenceCreate(&preference), "cublasLtMatmulPreferenceCreate");
      const uint64_t workspace = kLtWorkspaceBytes;
      const uint32_t bytes_a = uint32_t(align_a), bytes_b = uint32_t(align_b), bytes_c = uint32_t(align_c);
      cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace, sizeof(workspace));
      cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &bytes_a, sizeof(bytes_a));
      cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &bytes_b, sizeof(bytes_b));
      cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &bytes_c, sizeof(bytes_c));
      cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &bytes_c, sizeof(bytes_c));
      cublasLtMatmulHeuristicResult_t result{};
      int returned = 0;
      const cublasStatus_t status =
          cublasLtMatmulAlgoGetHeuristic(lt.handle, call.desc, call.a, call.b, call.c, call.c, preference, 1, &result, &returned);
      cublasLtMatmulPreferenceDestroy(preference);
      choice.found = status == CUBLAS_STATUS_SUCCESS && returned > 0;
      if (choice.found) choice.algo = result.algo;
      choices.emplace(key, choice);
    }
  }
  if (!choice.found) return false;
  const float alpha = 1.0f, beta = 0.0f;
  const cublasStatus_t status = cublasLtMatmul(lt.handle, call.desc, &alpha, b, call.a, a, call.b, &beta, c, call.c, c, call.c,
                                               &choice.algo, lt.workspace, kLtWorkspaceBytes, current_stream());
  // Checks the heuristic does not make (an epilogue vector's layout) fail here, before any launch.
  if (status == CUBLAS_STATUS_NOT_SUPPORTED || status == CUBLAS_STATUS_INVALID_VALUE) {
    std::lock_guard<std::mutex> lock(mutex);
    choices[key].found = false;
    return false;
  }
  check_blas(status, "cublasLtMatmul");
  return true;
}

}  // namespace

std::string blas_version() {
  int v = 0;
  check_blas(cublasGetVersion(handle(), &v), "cublasGetVersion");
  return std::to_string(v / 10000) + "." + std::to_string((v / 100) % 100) + "." + std::to_string(v % 100);
}

// Row-major C = op(A)·op(B) is column-major Cᵀ = op(B)ᵀ·op(A)ᵀ: swap the operands and m/n.
void gemm_f32(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
              int64_t batch_stride_a, const float* b, int64_t ldb, int64_t batch_stride_b, float beta, float* c,
              int64_t ldc, int64_t batch_stride_c, int64_t batch) {
  if (m == 0 || n == 0 || batch == 0) return;
  check_blas(cublasSgemmStridedBatched(handle(), trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N,
                                       static_cast<int>(n), static_cast<int>(m), static_cast<int>(k), &alpha, b,
                                       static_cast<int>(ldb), batch_stride_b, a, static_cast<int>(lda), batch_stride_a,
                                       &beta, c, static_cast<int>(ldc), batch_stride_c, static_cast<int>(batch)),
             "cublasSgemmStridedBatched");
}

// bf16 A and B, float32 C and accumulation (tensor cores).
void gemm_bf16(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const uint16_t* a, int64_t lda,
               int64_t batch_stride_a, const uint16_t* b, int64_t ldb, int64_t batch_stride_b, float beta, float* c,
               int64_t ldc, int64_t batch_stride_c, int64_t batch) {
  if (m == 0 || n == 0 || batch == 0) return;
  check_blas(cublasGemmStridedBatchedEx(handle(), trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N,
                                        static_cast<int>(n), static_cast<int>(m), static_cast<int>(k), &alpha, b, CUDA_R_16BF,
                                        static_cast<int>(ldb), batch_stride_b, a, CUDA_R_16BF, static_cast<int>(lda),
                                        batch_stride_a, &beta, c, CUDA_R_32F, static_cast<int>(ldc), batch_stride_c,
                                        static_cast<int>(batch), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
             "cublasGemmStridedBatchedEx (bf16)");
}

namespace {
// A float32 a of a bf16 product as cuBLAS takes it: a bf16 copy (a scratch buffer the caller
// releases) with a's layout, rounded by the cast kernel as a cast to bf16 rounds. It spans a's
// matrices whole, gaps between rows included (converted too, never read), so lda and the batch
// stride stay as they are.
uint16_t* bf16_copy(const float* a, int64_t rows, int64_t cols, int64_t lda, int64_t batch_stride, int64_t batch) {
  const int64_t elements = gemm_span(rows, cols, lda, batch_stride, batch);
  uint16_t* a16 = scratch<uint16_t>(size_t(elements > 0 ? elements : 1));
  cast(a, DType::F32, a16, DType::BF16, elements);
  return a16;
}
}  // namespace

void gemm_f32_bf16(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                   int64_t batch_stride_a, const uint16_t* b, int64_t ldb, int64_t batch_stride_b, float beta, float* c,
                   int64_t ldc, int64_t batch_stride_c, int64_t batch) {
  if (m == 0 || n == 0 || batch == 0) return;
  uint16_t* a16 = bf16_copy(a, trans_a ? k : m, trans_a ? m : k, lda, batch_stride_a, batch);
  gemm_bf16(trans_a, trans_b, m, n, k, alpha, a16, lda, batch_stride_a, b, ldb, batch_stride_b, beta, c, ldc, batch_stride_c, batch);
  release(a16);
}

void gemm_epilogue(DType a_dtype, DType b_dtype, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const void* a,
                   int64_t lda, const void* b, int64_t ldb, const float* bias, float* pre, float* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (a_dtype != b_dtype) {  // float32 a of a bf16 product: the epilogue GEMM on its bf16 copy
    uint16_t* a16 = bf16_copy(static_cast<const float*>(a), trans_a ? k : m, trans_a ? m : k, lda, 0, 1);
    gemm_epilogue(b_dtype, b_dtype, trans_a, trans_b, m, n, k, a16, lda, b, ldb, bias, pre, c, ldc);
    release(a16);
    return;
  }
  if (gemm_lt(b_dtype, trans_a, trans_b, m, n, k, a, lda, b, ldb, bias, pre, c, ldc)) return;
  // No fused algorithm (odd leading dimensions or alignments): the GEMM, then the epilogue's own pass.
  if (b_dtype == DType::BF16)
    gemm_bf16(trans_a, trans_b, m, n, k, 1.0f, static_cast<const uint16_t*>(a), lda, 0, static_cast<const uint16_t*>(b), ldb, 0, 0.0f, c, ldc, 0, 1);
  else
    gemm_f32(trans_a, trans_b, m, n, k, 1.0f, static_cast<const float*>(a), lda, 0, static_cast<const float*>(b), ldb, 0, 0.0f, c, ldc, 0, 1);
  if (bias || pre) bias_gelu_rows_f32(c, bias, pre, m, n, ldc);
}

}  // namespace cuda
}  // namespace lowrank
