// Four floats as four bfloat16 values in one 8-byte word (the first in the low half), and the word
// widened back: the bf16 side of the kernels that move 4 elements per lane (16 bytes of float32,
// 8 of bf16).
#pragma once
#include <cstdint>

#include "../core/dtype.h"

namespace lowrank {
namespace cuda {

__device__ __forceinline__ uint2 bf16x4_pack(float a, float b, float c, float d) {
  return uint2{uint32_t(f32_to_bf16(a)) | uint32_t(f32_to_bf16(b)) << 16, uint32_t(f32_to_bf16(c)) | uint32_t(f32_to_bf16(d)) << 16};
}

__device__ __forceinline__ float4 bf16x4_unpack(uint2 t) {
  return make_float4(bf16_to_f32(uint16_t(t.x)), bf16_to_f32(uint16_t(t.x >> 16)), bf16_to_f32(uint16_t(t.y)),
                     bf16_to_f32(uint16_t(t.y >> 16)));
}

}  // namespace cuda
}  // namespace lowrank
