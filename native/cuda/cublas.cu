// Every cuBLAS call in lowrank lives in this file, so the kernels in the other .cu files compile on
// hosts that have nvcc but not cuBLAS (CI compiles them without this one).
#include <cublas_v2.h>

#include "common.cuh"

namespace lowrank {
namespace cuda {

std::string blas_version() {
  int v = 0;
  cublasHandle_t h;
  if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) return "unavailable";
  cublasGetVersion(h, &v);
  cublasDestroy(h);
  return std::to_string(v / 10000) + "." + std::to_string((v / 100) % 100) + "." + std::to_string(v % 100);
}

}  // namespace cuda
}  // namespace lowrank
