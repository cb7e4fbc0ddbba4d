// The cuBLAS calls lora.cu makes, for the emulator (emu.h): cublasGemmEx as BLAS defines it
// (column-major, C = alpha·op(A)·op(B) + beta·C, C not read when beta = 0), with cuBLAS's
// leading-dimension checks, so the row-major-to-column-major mapping in lora.cu is tested.
#pragma once
typedef int cublasHandle_t;
typedef int cublasStatus_t;
constexpr int CUBLAS_STATUS_SUCCESS = 0, CUBLAS_STATUS_INVALID_VALUE = 7;
enum cublasOperation_t { CUBLAS_OP_N, CUBLAS_OP_T };
enum cudaDataType_t { CUDA_R_32F, CUDA_R_16BF };
enum cublasComputeType_t { CUBLAS_COMPUTE_32F };
enum cublasGemmAlgo_t { CUBLAS_GEMM_DEFAULT };
enum cublasMath_t { CUBLAS_DEFAULT_MATH };
inline cublasStatus_t cublasCreate(cublasHandle_t* h) { *h = 1; return 0; }
inline cublasStatus_t cublasDestroy(cublasHandle_t) { return 0; }
inline cublasStatus_t cublasSetMathMode(cublasHandle_t, cublasMath_t) { return 0; }
inline float emu_get(const void* p, cudaDataType_t t, size_t i) {
  return t == CUDA_R_32F ? static_cast<const float*>(p)[i] : lowrank::bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
}
inline void emu_set(void* p, cudaDataType_t t, size_t i, float v) {
  if (t == CUDA_R_32F) static_cast<float*>(p)[i] = v;
  else static_cast<uint16_t*>(p)[i] = lowrank::f32_to_bf16(v);
}
inline cublasStatus_t cublasGemmEx(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                                   const void* alpha, const void* A, cudaDataType_t at, int lda, const void* B,
                                   cudaDataType_t bt, int ldb, const void* beta, void* C, cudaDataType_t ct, int ldc,
                                   cublasComputeType_t, cublasGemmAlgo_t) {
  if (lda < std::max(1, ta == CUBLAS_OP_N ? m : k) || ldb < std::max(1, tb == CUBLAS_OP_N ? k : n) || ldc < std::max(1, m)) {
    fprintf(stderr, "emu cublasGemmEx: invalid leading dimension m=%d n=%d k=%d lda=%d ldb=%d ldc=%d\n", m, n, k, lda, ldb, ldc);
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  const float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < m; ++i) {
      float acc = 0.f;
      for (int l = 0; l < k; ++l) {
        const float a = emu_get(A, at, ta == CUBLAS_OP_N ? (size_t)i + (size_t)l * lda : (size_t)l + (size_t)i * lda);
        const float b = emu_get(B, bt, tb == CUBLAS_OP_N ? (size_t)l + (size_t)j * ldb : (size_t)j + (size_t)l * ldb);
        acc = fmaf(a, b, acc);
      }
      const size_t ci = (size_t)i + (size_t)j * ldc;
      emu_set(C, ct, ci, be != 0.f ? al * acc + be * emu_get(C, ct, ci) : al * acc);
    }
  return 0;
}
