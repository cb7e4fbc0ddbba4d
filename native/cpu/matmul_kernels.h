// The register-tiled micro-kernels behind cpu::gemm_f32 (native/cpu/matmul.cc), one per instruction
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

// C[0:MR, 0:NR] (row stride ldc) = alpha · A·B + beta · C over kc steps; beta == 0 must not read C.
// A(i, p) is a[i*a_rs + p*a_cs] (a packed micro-panel: 1, MR); row p of B is b[p*b_rs + 0..NR-1]
// (packed: NR), so the driver can also hand over A and B in place where packing would not pay.
// Always a full MR × NR tile: the driver routes edge tiles through a scratch tile.
using GemmMicroKernel = void (*)(int64_t kc, const float* a, int64_t a_rs, int64_t a_cs, const float* b, int64_t b_rs,
                                 float* c, int64_t ldc, float alpha, float beta);

// Packs rows × kc of a strided matrix (element (r, p) at src[r*rs + p*cs]) into consecutive
// micro-panels of w rows in the layout above, zero-padding the last panel to w rows. Packs A
// (w = MR, rows of op(A)) and B (w = NR, columns of op(B)).
using GemmPack = void (*)(const float* src, int64_t rs, int64_t cs, int64_t rows, int64_t kc, int w, float* dst);
// The same packing from bfloat16 (raw bits), widened to float32 on the way: gemm_bf16 converts
// its operands panel by panel into the packed float32 buffers, never a whole operand at once.
using GemmPackBf16 = void (*)(const uint16_t* src, int64_t rs, int64_t cs, int64_t rows, int64_t kc, int w, float* dst);

struct GemmKernel {
  const char* name;
  int mr, nr;  // register tile
  // Cache blocks: an mc×kc block of packed A (L3) is swept by kc×nc blocks of packed B (L2); one
  // kc×MR micro-panel of A stays in L1 while the micro-kernel streams B micro-panels past it.
  int64_t mc, kc, nc;
  int64_t kc_small_m;  // kc when m is small (see gemm_block): C traffic, not A's, then dominates
  float speed;  // throughput relative to the set's first kernel, for choosing by shape
  GemmMicroKernel micro;
  GemmPack pack;
  GemmPackBf16 pack_bf16;
};

// The kernels one instruction set offers; the driver picks, per call, the one that spends the
// least time on padding (e.g. a 16-wide tile when n = 16, a LoRA rank).
struct GemmKernelSet {
  int count;
  const GemmKernel* kernels[4];
};

// Portable packing (matmul.cc), for kernels without a vectorized one.
void gemm_pack_portable(const float* src, int64_t rs, int64_t cs, int64_t rows, int64_t kc, int w, float* dst);
void gemm_pack_portable_bf16(const uint16_t* src, int64_t rs, int64_t cs, int64_t rows, int64_t kc, int w, float* dst);

// C[0, 0:n] = alpha · op(A)[0, :] · op(B) + beta · C[0, 0:n] per matrix of the batch (gemv.cc):
// gemm_f32's path for m == 1. op(A)(0, p) is a[p*a_cs]; op(B)(p, j) is b[p*b_rs + j*b_cs] with
// b_rs == 1 or b_cs == 1.
void gemv_f32(int64_t n, int64_t k, float alpha, const float* a, int64_t a_cs, int64_t batch_stride_a, const float* b,
              int64_t b_rs, int64_t b_cs, int64_t batch_stride_b, float beta, float* c, int64_t batch_stride_c, int64_t batch);

// The same with bfloat16 a and b (raw bits): read as bf16, converted in registers, float32 sums.
void gemv_bf16(int64_t n, int64_t k, float alpha, const uint16_t* a, int64_t a_cs, int64_t batch_stride_a, const uint16_t* b,
               int64_t b_rs, int64_t b_cs, int64_t batch_stride_b, float beta, float* c, int64_t batch_stride_c, int64_t batch);

// nullptr where the instruction set is not compiled in (non-x86 builds).
const GemmKernelSet* gemm_kernels_avx512();
const GemmKernelSet* gemm_kernels_avx2();

}  // namespace cpu
}  // namespace lowrank
