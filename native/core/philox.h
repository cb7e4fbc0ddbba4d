// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11):
// a counter-based generator, so element i of a (seed, offset) stream is a pure function of
// (seed, offset, i) and the CPU and CUDA backends produce the same numbers in any order.
#pragma once
#include <cmath>
#include <cstdint>

#include "dtype.h"

namespace lowrank {

struct Philox4 {
  uint32_t v[4];
};

LR_HD void philox_mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  uint64_t p = static_cast<uint64_t>(a) * b;
  hi = static_cast<uint32_t>(p >> 32);
  lo = static_cast<uint32_t>(p);
}

// One block of 4 words for the 128-bit counter (c0..c3) under the 64-bit key.
LR_HD Philox4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    philox_mulhilo(0xD2511F53u, c0, hi0, lo0);
    philox_mulhilo(0xCD9E8D57u, c2, hi1, lo1);
    uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return Philox4{{c0, c1, c2, c3}};
}

// The stream layout every backend follows: element i of a draw at (seed, offset) uses the block
// whose counter is (offset + i) as a 64-bit number in words 0..1, and `lane` picks the word.
// Uniform draws use lane 0, normal draws use lanes 0 and 1 (Box-Muller); dropout has its own
// layout (philox_keep below).
LR_HD Philox4 philox_block(uint64_t seed, uint64_t offset, uint64_t i) {
  uint64_t c = offset + i;
  return philox4x32_10(static_cast<uint32_t>(c), static_cast<uint32_t>(c >> 32), 0u, 0u,
                       static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// 24 random bits -> float in [0, 1), exactly representable, identical on every backend.
LR_HD float philox_unit(uint32_t bits) { return static_cast<float>(bits >> 8) * (1.0f / 16777216.0f); }

LR_HD float philox_uniform(uint64_t seed, uint64_t offset, uint64_t i, float low, float high) {
  return low + (high - low) * philox_unit(philox_block(seed, offset, i).v[0]);
}

// Box-Muller in double precision so that the float result agrees across backends
// (float transcendental functions differ by an ulp between libm and CUDA).
LR_HD float philox_normal(uint64_t seed, uint64_t offset, uint64_t i, float mean, float std) {
  Philox4 b = philox_block(seed, offset, i);
  double u1 = (static_cast<double>(b.v[0]) + 1.0) * (1.0 / 4294967296.0);  // (0, 1]
  double u2 = static_cast<double>(b.v[1]) * (1.0 / 4294967296.0);          // [0, 1)
  double z = sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
  return static_cast<float>(mean + std * z);
}

// Dropout's keep decision for element i of a draw at (seed, offset). Dropout uses all four words
// of each block: element j = offset + i takes word (j / 16) % 4 of the block whose counter is
// 16·(j / 64) + j % 16, so 64 consecutive elements come from 16 consecutive counters (one 16-lane
// SIMD evaluation gives 64 decisions, words 0..3 giving elements 0-15, 16-31, 32-47, 48-63 of
// the group). Word 2 of dropout's counters is 1: uniform and normal draws (word 2 = 0) never meet
// the same block, wherever their offsets fall.
// The block holding stream element j's keep decision (word (j / 16) % 4 of it): elements j, j + 16,
// j + 32 and j + 48 share it when j % 64 < 16.
LR_HD Philox4 philox_keep_block(uint64_t seed, uint64_t j) {
  const uint64_t c = ((j >> 6) << 4) | (j & 15);
  return philox4x32_10(static_cast<uint32_t>(c), static_cast<uint32_t>(c >> 32), 1u, 0u, static_cast<uint32_t>(seed),
                       static_cast<uint32_t>(seed >> 32));
}

// The keep decisions of the four stream elements j + 16w (w = 0..3, j % 64 < 16) that one block
// serves, as bit w: the kernels that trade or store decisions as bits start from them.
LR_HD unsigned philox_keep_bits4(uint64_t seed, uint64_t j, float p) {
  const Philox4 b = philox_keep_block(seed, j);
  unsigned bits = 0;
  for (int w = 0; w < 4; ++w) bits |= unsigned(philox_unit(b.v[w]) >= p) << w;
  return bits;
}

LR_HD bool philox_keep(uint64_t seed, uint64_t offset, uint64_t i, float p) {
  const uint64_t j = offset + i;
  return philox_unit(philox_keep_block(seed, j).v[(j >> 4) & 3]) >= p;
}

}  // namespace lowrank
