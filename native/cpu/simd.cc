#include "simd.h"

#include <cstdlib>
#include <cstring>
#include <string>

#include "../backend.h"

namespace lowrank {
namespace cpu {
namespace {
// LOWRANK_SIMD=scalar|avx2|avx512 caps the level, so tests can exercise every path on one machine.
int simd_cap() {
  const char* env = std::getenv("LOWRANK_SIMD");
  if (!env) return 3;
  if (std::strcmp(env, "scalar") == 0) return 0;
  if (std::strcmp(env, "avx2") == 0) return 1;
  if (std::strcmp(env, "avx512") == 0) return 2;
  return 3;
}
}  // namespace

bool has_avx2_fma() {
#ifdef LOWRANK_X86
  static const bool v = simd_cap() >= 1 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return v;
#else
  return false;
#endif
}

bool has_avx512() {
#ifdef LOWRANK_X86
  static const bool v = simd_cap() >= 2 && has_avx2_fma() && __builtin_cpu_supports("avx512f") &&
                        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                        __builtin_cpu_supports("avx512dq");
  return v;
#else
  return false;
#endif
}

bool has_avx512_bf16() {
#ifdef LOWRANK_X86
  static const bool v = simd_cap() >= 3 && has_avx512() && __builtin_cpu_supports("avx512bf16");
  return v;
#else
  return false;
#endif
}

std::string simd_level() {
  return has_avx512_bf16() ? "avx512bf16" : has_avx512() ? "avx512" : has_avx2_fma() ? "avx2" : "scalar";
}

}  // namespace cpu
}  // namespace lowrank
