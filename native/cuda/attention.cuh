// Shared by the CUDA attention files: the masking and dropout rules of native/ops/attention.h as
// device functions (the float32 kernels of attention.cu and the bf16 tensor-core kernels of
// attention_mma.cu apply the same rules), and the entry points of the bf16 kernels.
// Free of the CUDA runtime header so dev/cuda/attention_mma_emu.cpp can compile it on the CPU.
#pragma once
#include <cstdint>
#include <initializer_list>

#include "../core/philox.h"
#include "../ops/attention.h"

namespace lowrank {
namespace cuda {

constexpr float kLog2e = 1.4426950408889634f, kLn2 = 0.6931471805599453f;

// Keys query i sees before masking: keys j <= Tk - Tq + i when causal (its absolute position).
__device__ inline int64_t visible_keys(const AttnDims& d, int64_t i) { return d.causal ? d.Tk - d.Tq + i + 1 : d.Tk; }

// Whether key j < visible_keys(i) is masked for query i: padded, or older than its sliding window.
__device__ inline bool hidden_key(const AttnDims& d, const int32_t* keep, int64_t b, int64_t i, int64_t j) {
  return (keep && keep[b * d.Tk + j] == 0) || (d.window > 0 && j <= d.Tk - d.Tq + i - d.window);
}

// Whether query i may see key j (causal, sliding window and padding; j < Tk); keep_b is batch
// b's row of the padding mask (or null).
__device__ __forceinline__ bool key_visible(const AttnDims& d, const int32_t* keep_b, int64_t i, int64_t j) {
  const int64_t p = d.Tk - d.Tq + i;  // the query's absolute position
  return !(d.causal && j > p) && !(d.window > 0 && j <= p - d.window) && !(keep_b && keep_b[j] == 0);
}

// The first key any query of a block starting at query q0 sees: 0, or its first query's window start.
__device__ __forceinline__ int64_t window_start(const AttnDims& d, int64_t q0) {
  return d.window > 0 ? max(int64_t(0), q0 + d.Tk - d.Tq - d.window + 1) : 0;
}

// Attention dropout's factor for weight (b, h, i, j): 1/(1-p) when kept, 0 when dropped (AttnDims).
__device__ inline float drop_factor(const AttnDims& d, int64_t b, int64_t h, int64_t i, int64_t j) {
  if (d.dropout <= 0) return 1.0f;
  const uint64_t e = static_cast<uint64_t>(((b * d.H + h) * d.Tq + i) * d.Tk + j);
  return philox_keep(d.seed, d.offset, e, d.dropout) ? 1.0f / (1.0f - d.dropout) : 0.0f;
}

// Dropout keep bits of one thread's accumulator tile of NB 16x8 blocks in the bf16 kernels: bit
// 4*nb + e is set when element (nb, e) is kept. Its query i and key j: rows of the accumulator are
// queries (kQueryRows: i = ib + 8*(e/2), j = jb + 8*nb + e%2) or keys (i = ib + 8*nb + e%2,
// j = jb + 8*(e/2)). With query rows, the keys of blocks nb, nb+2, nb+4, nb+6 are 16 apart, as the
// stream's dropout layout puts four decisions in one Philox block (core/philox.h): one evaluation
// serves the four whenever the first sits at a stream position that is 0..15 mod 64 (every row when
// Tk and the stream offset are multiples of 64), four evaluations otherwise. The loops stay rolled
// so the Philox rounds cost registers once, not once per element.
template <int NB, bool kQueryRows>
__device__ __forceinline__ uint32_t dropout_keep_bits(const AttnDims& d, int64_t b, int64_t h, int ib, int jb) {
  static_assert(NB * 4 <= 32, "one bit per element");
  uint32_t bits = 0;
  if constexpr (kQueryRows && NB % 8 == 0) {
#pragma unroll 1
    for (int x = 0; x < NB; ++x) {  // (group of 4 blocks, e): blocks n0 + 2w, n0 = 8*(g/2) + g%2
      const int g = x / 4, e = x % 4, n0 = 8 * (g / 2) + g % 2;
      const int64_t i = ib + 8 * (e / 2), j0 = jb + 8 * n0 + e % 2;
      if (i >= d.Tq) continue;
      const uint64_t s = d.offset + static_cast<uint64_t>(((b * d.H + h) * d.Tq + i) * d.Tk + j0);
      if ((s & 63) < 16) {
        const Philox4 blk = philox_keep_block(d.seed, s);
#pragma unroll
        for (int w = 0; w < 4; ++w)
          if (j0 + 16 * w < d.Tk && philox_unit(blk.v[w]) >= d.dropout) bits |= 1u << (4 * (n0 + 2 * w) + e);
      } else {
        for (int w = 0; w < 4; ++w)
          if (j0 + 16 * w < d.Tk && drop_factor(d, b, h, i, j0 + 16 * w) != 0.f) bits |= 1u << (4 * (n0 + 2 * w) + e);
      }
    }
    return bits;
  }
#pragma unroll 1
  for (int x = 0; x < NB * 4; ++x) {
    const int nb = x / 4, e = x % 4;
    const int i = kQueryRows ? ib + 8 * (e / 2) : ib + 8 * nb + e % 2;
    const int j = kQueryRows ? jb + 8 * nb + e % 2 : jb + 8 * (e / 2);
    if (i < d.Tq && j < d.Tk && drop_factor(d, b, h, i, j) != 0.f) bits |= 1u << x;
  }
  return bits;
}

// The backward's dropout keep bits of a whole tile of Br queries × 64 keys (k0 a multiple of 64),
// computed by the block's kThreads threads together where every row of the tile starts one of the
// stream's 64-element groups (tile_keep_fits): the tile's Br·16 Philox blocks, kBlocksPerWord per
// thread, instead of one evaluation per element. Thread (r, w) writes word r·kWords + w: bit
// 4q + v is word v of block w·kBlocksPerWord + q of query i0 + r, that is key k0 + 16v + block.
// Rows past the last query get no kept bits. Read back with tile_keep_bit after a barrier.
__device__ __forceinline__ bool tile_keep_fits(const AttnDims& d) { return d.Tk % 64 == 0 && d.offset % 64 == 0; }

template <int Br, int kThreads>
__device__ inline void fill_tile_keep_words(const AttnDims& d, int64_t b, int64_t h, int i0, int k0, uint32_t* words, int tid) {
  constexpr int kWords = kThreads / Br, kBlocksPerWord = 16 / kWords;
  static_assert(kWords * Br == kThreads && kBlocksPerWord * kWords == 16, "whole rows of blocks per thread");
  const int r = tid / kWords, w = tid % kWords;
  uint32_t bits = 0;
  if (i0 + r < d.Tq) {
    const uint64_t s0 = d.offset + static_cast<uint64_t>(((b * d.H + h) * d.Tq + i0 + r) * d.Tk + k0);
#pragma unroll 1
    for (int q = 0; q < kBlocksPerWord; ++q) bits |= philox_keep_bits4(d.seed, s0 + w * kBlocksPerWord + q, d.dropout) << (4 * q);
  }
  words[r * kWords + w] = bits;
}

// Whether key k0 + x (x < 64) of the tile's query row r is kept (see fill_tile_keep_words).
template <int Br, int kThreads>
__device__ __forceinline__ bool tile_keep_bit(const uint32_t* words, int r, int x) {
  constexpr int kWords = kThreads / Br, kBlocksPerWord = 16 / kWords;
  const int blk = x % 16, v = x / 16;
  return (words[r * kWords + blk / kBlocksPerWord] >> (4 * (blk % kBlocksPerWord) + v)) & 1u;
}

// ---- bf16 tensor-core flash attention (attention_mma.cu), AttnDims::precision BF16 ------------

// Whether the bf16 kernels take this call: D = 64 or 128, rows 16-byte aligned (float4 loads).
bool mma_fits(const AttnDims& d, std::initializer_list<AttnView> views);
void mma_forward(const AttnDims& d, AttnView q, AttnView k, AttnView v, const int32_t* keep, AttnView out, float* lse);
// delta [B, H, Tq]: dO_i · O_i per query row (attention.cu's flash_delta_kernel).
void mma_backward(const AttnDims& d, AttnView q, AttnView k, AttnView v, const int32_t* keep, const float* lse,
                  const float* delta, AttnView dout, AttnView dq, AttnView dk, AttnView dv);

}  // namespace cuda
}  // namespace lowrank
