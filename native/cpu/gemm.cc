// CPU GEMM. (Reference implementation; the packed, blocked, register-tiled kernel replaces it.)
#include "../ops/gemm.h"
#include "parallel.h"

namespace lowrank {
namespace cpu {

void gemm_f32(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
              int64_t batch_stride_a, const float* b, int64_t ldb, int64_t batch_stride_b, float beta, float* c,
              int64_t ldc, int64_t batch_stride_c, int64_t batch) {
  for (int64_t bi = 0; bi < batch; ++bi) {
    const float* A = a + bi * batch_stride_a;
    const float* B = b + bi * batch_stride_b;
    float* C = c + bi * batch_stride_c;
    parallel_for(m, 1, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i)
        for (int64_t j = 0; j < n; ++j) {
          float acc = 0;
          for (int64_t p = 0; p < k; ++p) acc += (trans_a ? A[p * lda + i] : A[i * lda + p]) * (trans_b ? B[j * ldb + p] : B[p * ldb + j]);
          C[i * ldc + j] = alpha * acc + (beta == 0 ? 0.0f : beta * C[i * ldc + j]);
        }
    });
  }
}

}  // namespace cpu
}  // namespace lowrank
