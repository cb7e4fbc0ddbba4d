// The register-tiled micro-kernels behind cpu::gemm_f32, gemm_bf16 and gemm_f32_bf16 (native/cpu/matmul.cc),
// one per instruction set, and the cache blocking each is tuned with. The driver packs A and B
// into the layouts below, so every transpose case reaches the same micro-kernel.
//
// Packed A micro-panel: kw × MR words, word column q holds rows i..i+MR-1 of op(A)   (a[q*MR + r])
// Packed B micro-panel: kw × NR words, word row q holds columns j..j+NR-1 of op(B)   (b[q*NR + c])
// Both zero-padded to full MR / NR, 64-byte aligned. A word is 32 bits: one float32 (k_per_word
// 1, kw = kc), or for the bf16 kernels (k_per_word 2, kw = ceil(kc / 2)) the pair of bf16 at k =
// 2q (low half) and 2q + 1 (high half; zero past kc), which vdpbf16ps multiplies and sums.
#pragma once
#include <cstdint>

#include "bf16_load.h"

namespace lowrank {
namespace cpu {

// C[0:MR, 0:NR] (row stride ldc) = alpha · A·B + beta · C over kw word steps; beta == 0 must not
// read C. A(i, q) is a[i*a_rs + q*a_cs] (a packed micro-panel: 1, MR); word row q of B is
// b[q*b_rs + 0..NR-1] (packed: NR), so the driver can also hand over float32 A and B in place
// where packing would not pay (bf16 operands, and float32 ones rounded to bf16, are always
// packed). Always a full MR × NR tile: the
// driver routes edge tiles through a scratch tile.
using GemmMicroKernel = void (*)(int64_t kw, const float* a, int64_t a_rs, int64_t a_cs, const float* b, int64_t b_rs,
                                 float* c, int64_t ldc, float alpha, float beta);

// Packs rows × kc of a strided matrix (element (r, p) at src[r*rs + p*cs]) into consecutive
// micro-panels of w rows in the layout above, zero-padding the last panel to w rows. Packs A
// (w = MR, rows of op(A)) and B (w = NR, columns of op(B)). Sources are float32, bfloat16 (raw
// bits) or float32 rounded to bf16 as it is read (F32AsBf16, bf16_load.h: A of a product with a
// bf16 B), converted into the kernel's words on the way: widened to float32 (k_per_word 1) or
// paired along k (k_per_word 2). Operands are packed panel by panel, never whole at once.
template <class T>
using GemmPack = void (*)(const T* src, int64_t rs, int64_t cs, int64_t rows, int64_t kc, int w, float* dst);

struct GemmKernel {
  const char* name;
  int mr, nr;  // register tile
  // Cache blocks: an mc×kc block of packed A (L3) is swept by kc×nc blocks of packed B (L2); one
  // kc×MR micro-panel of A stays in L1 while the micro-kernel streams B micro-panels past it.
  int64_t mc, kc, nc;
  int64_t kc_small_m;  // kc when m is small (see gemm_block): C traffic, not A's, then dominates
  float speed;  // throughput relative to the set's first kernel, for choosing by shape
  GemmMicroKernel micro;
  GemmPack<float> pack;  // nullptr for the bf16-pair kernels, whose products are bf16
  GemmPack<uint16_t> pack_bf16;
  GemmPack<F32AsBf16> pack_rounded;
  int k_per_word = 1;  // k values per packed word: 2 for the bf16-pair kernels
};

// The kernels one instruction set offers; the driver picks, per call, the one that spends the
// least time on padding (e.g. a 16-wide tile when n = 16, a LoRA rank).
struct GemmKernelSet {
  int count;
  const GemmKernel* kernels[4];
};

// C[0, 0:n] = alpha · op(A)[0, :] · op(B) + beta · C[0, 0:n] per matrix of the batch (gemv.cc):
// the GEMM's path for m == 1. op(A)(0, p) is a[p*a_cs]; op(B)(p, j) is b[p*b_rs + j*b_cs] with
// b_rs == 1 or b_cs == 1. TA, TB: float, float; uint16_t (bf16), uint16_t; F32AsBf16, uint16_t.
// bf16 is read as bf16 and converted in registers, float32 sums.
template <class TA, class TB>
void gemv(int64_t n, int64_t k, float alpha, const TA* a, int64_t a_cs, int64_t batch_stride_a, const TB* b, int64_t b_rs,
          int64_t b_cs, int64_t batch_stride_b, float beta, float* c, int64_t batch_stride_c, int64_t batch);

// nullptr where the instruction set is not compiled in (non-x86 builds).
const GemmKernelSet* gemm_kernels_avx512();
const GemmKernelSet* gemm_kernels_avx512bf16();  // bf16 products only
const GemmKernelSet* gemm_kernels_avx2();

}  // namespace cpu
}  // namespace lowrank
