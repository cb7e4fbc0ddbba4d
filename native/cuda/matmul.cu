// Every cuBLAS call in lowrank lives in this file, so the kernels in the other .cu files compile on
// hosts that have nvcc but not cuBLAS (CI compiles them without this one).
#include <cublas_v2.h>

#include <mutex>

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

}  // namespace cuda
}  // namespace lowrank
