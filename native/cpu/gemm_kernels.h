// The register-tiled micro-kernels behind cpu::gemm_f32 (native/cpu/gemm.cc), one per instruction
// set, and the cache blocking each is tuned with. The driver packs A and B into the layouts below,
// so every transpose case reaches the same micro-kernel.
//
// Packed A micro-panel: kc × MR floats, column p holds rows i..i+MR-1 of op(A)      (a[p*MR + r])
// Packed B micro-panel: kc × NR floats, row p holds columns j..j+NR-1 of op(B)      (b[p*NR + c])
// Both zero-padded to full MR / NR, 64-byte aligned.
#pragma once
#include <cstdint>

namespace lowrank {
namespace cpu {

// C[0:MR, 0:NR] (row stride ldc) = alpha * Apanel·Bpanel + beta * C; beta == 0 must not read C.
// Always a full MR × NR tile: the driver routes edge tiles through a scratch tile.
using GemmMicroKernel = void (*)(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, float alpha,
                                 float beta);

struct GemmKernel {
  const char* name;
  int mr, nr;          // register tile
  int64_t mc, kc, nc;  // cache blocks: packed A is mc×kc (L2), packed B is kc×nc (L3), kc×NR sits in L1
  GemmMicroKernel micro;
};

// nullptr where the instruction set is not compiled in (non-x86 builds).
const GemmKernel* gemm_kernel_avx512();
const GemmKernel* gemm_kernel_avx2();

}  // namespace cpu
}  // namespace lowrank
