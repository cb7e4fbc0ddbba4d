// Run-time CPU feature checks: kernels are compiled for several instruction sets with target
// attributes and pick one at run time, so one binary runs on any x86-64 (and non-x86 builds
// use the scalar paths).
#pragma once

namespace lowrank {
namespace cpu {

bool has_avx2_fma();
bool has_avx512();
// AVX-512 BF16 (vdpbf16ps: bf16 pairs multiplied and summed into float32), for bf16 weights.
bool has_avx512_bf16();

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define LOWRANK_X86 1
#define LR_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define LR_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma")))
#define LR_TARGET_AVX512_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,avx512bf16")))
#else
#define LR_TARGET_AVX2
#define LR_TARGET_AVX512
#define LR_TARGET_AVX512_BF16
#endif

}  // namespace cpu
}  // namespace lowrank
