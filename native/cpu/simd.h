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

// A plain function that simd_variant builds again for wider vectors: always inlined into the
// wrappers below (GCC otherwise calls a large body, which stays the baseline build).
#define LR_SIMD_BODY __attribute__((always_inline)) inline

#ifdef LOWRANK_X86
// Fn (an LR_SIMD_BODY function) built again for AVX-512 or AVX2 + FMA: inlined into these
// wrappers, its loops are vectorized for the wider registers where the baseline x86-64 build has
// only SSE2 (with the same roundings: the build keeps a·b + c unfused, see CMakeLists.txt).
template <auto Fn, class... A>
LR_TARGET_AVX512 void on_avx512(A... a) { Fn(a...); }
template <auto Fn, class... A>
LR_TARGET_AVX2 void on_avx2(A... a) { Fn(a...); }
#endif

template <auto Fn, class... A>
auto pick_simd_variant(void (*)(A...)) -> void (*)(A...) {
#ifdef LOWRANK_X86
  if (has_avx512()) return on_avx512<Fn, A...>;
  if (has_avx2_fma()) return on_avx2<Fn, A...>;
#endif
  return Fn;
}

// The build of Fn for the widest vectors this CPU has: `static const auto f = simd_variant<fn>();`
// picks once.
template <auto Fn>
auto simd_variant() {
  return pick_simd_variant<Fn>(Fn);
}

}  // namespace cpu
}  // namespace lowrank
