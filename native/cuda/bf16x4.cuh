// Four floats as four bfloat16 values in one 8-byte word (the first in the low half), and the word
// widened back: the bf16 side of the kernels that move 4 elements per lane (16 bytes of float32,
// 8 of bf16).
#pragma once
#include <cstdint>
#include <cstring>
#if defined(__CUDACC__)
#include <cuda_bf16.h>  // the CPU emulator has its own __floats2bfloat162_rn (dev/cuda/emu/emu.h)
#endif

#include "../core/dtype.h"

namespace lowrank {
namespace cuda {

// Rounded two at a time by the hardware (cvt.rn.bf16x2.f32: round to nearest even, as f32_to_bf16);
// a NaN keeps f32_to_bf16's bits (sign and payload, made quiet), as the CPU twin writes it.
__device__ __forceinline__ uint32_t bf16x2_bits(float lo, float hi) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  uint32_t bits;
  memcpy(&bits, &h, sizeof bits);
  if (isnan(lo) || isnan(hi)) bits = uint32_t(f32_to_bf16(lo)) | uint32_t(f32_to_bf16(hi)) << 16;
  return bits;
}

__device__ __forceinline__ uint2 bf16x4_pack(float a, float b, float c, float d) { return uint2{bf16x2_bits(a, b), bf16x2_bits(c, d)}; }

__device__ __forceinline__ float4 bf16x4_unpack(uint2 t) {
  return make_float4(bits_f32(t.x << 16), bits_f32(t.x & 0xffff0000u), bits_f32(t.y << 16), bits_f32(t.y & 0xffff0000u));
}

}  // namespace cuda
}  // namespace lowrank
