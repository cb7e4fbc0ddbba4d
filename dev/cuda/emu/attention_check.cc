// The bf16 attention kernels' dropout keep bits (dropout_keep_bits in native/cuda/attention.cuh)
// against the per-element rule (drop_factor) on the CPU, bit for bit: the query-row layout's
// one-evaluation-per-four-keys path at aligned and unaligned stream offsets, key lengths that are and
// are not multiples of 64, tiles past the last query or key; and the backward's tile-wide keep
// words (fill_tile_keep_words, both tile heights) where they apply. Built by run-emu.sh.
#include <algorithm>
#include <cstdio>
#include <type_traits>

#include "emu.h"
using std::max;
using std::min;
#include "../../../native/cuda/attention.cuh"

using namespace lowrank;
using namespace lowrank::cuda;

int main() {
  int failed = 0, cases = 0;
  for (int64_t Tk : {64, 100, 1024})
    for (uint64_t offset : {0ull, 5ull, 64ull, 100ull, (1ull << 32) - 7})
      for (int64_t Tq : {Tk, int64_t(17)}) {
        AttnDims d{};
        d.B = 2, d.H = 3, d.Tq = Tq, d.Tk = Tk, d.dropout = 0.3f, d.seed = 0x243f6a8885a308d3ULL, d.offset = offset;
        bool ok = true;
        for (int64_t b = 0; b < d.B; ++b)
          for (int64_t h = 0; h < d.H; ++h)
            for (int ib = 0; ib < Tq + 16; ib += 7)
              for (int jb = 0; jb < Tk + 64; jb += 64)
                for (int tq = 0; tq < 4; ++tq) {
                  const uint32_t fwd = dropout_keep_bits<8, true>(d, b, h, ib, jb + 2 * tq);
                  const uint32_t bwd = dropout_keep_bits<4, false>(d, b, h, ib + 2 * tq, jb);
                  for (int x = 0; x < 32; ++x) {
                    const int nb = x / 4, e = x % 4;
                    const int64_t i = ib + 8 * (e / 2), j = jb + 2 * tq + 8 * nb + e % 2;
                    const bool want = i < d.Tq && j < d.Tk && drop_factor(d, b, h, i, j) != 0.f;
                    ok = ok && ((fwd >> x) & 1u) == want;
                    if (x < 16) {
                      const int64_t ki = ib + 2 * tq + 8 * nb + e % 2, kj = jb + 8 * (e / 2);
                      ok = ok && ((bwd >> x) & 1u) == (ki < d.Tq && kj < d.Tk && drop_factor(d, b, h, ki, kj) != 0.f);
                    }
                  }
                }
        ++cases;
        failed += !ok;
        printf("%s dropout keep bits Tq=%lld Tk=%lld offset=%llu\n", ok ? "PASS" : "FAIL", (long long)Tq, (long long)Tk, (unsigned long long)offset);
      }
  // The backward's tile-wide keep words (fill_tile_keep_words, then tile_keep_bit), where they apply.
  for (int64_t Tk : {64, 1024})
    for (uint64_t offset : {0ull, 64ull, (1ull << 32) + 128})
      for (int64_t Tq : {Tk, int64_t(17)}) {
        AttnDims d{};
        d.B = 2, d.H = 3, d.Tq = Tq, d.Tk = Tk, d.dropout = 0.3f, d.seed = 0x243f6a8885a308d3ULL, d.offset = offset;
        bool ok = tile_keep_fits(d);
        uint32_t words[128];
        auto check = [&](auto br_tag, int64_t b, int64_t h, int i0, int k0) {
          constexpr int Br = decltype(br_tag)::value;
          for (int tid = 0; tid < 128; ++tid) fill_tile_keep_words<Br, 128>(d, b, h, i0, k0, words, tid);
          for (int r = 0; r < Br; ++r)
            for (int x = 0; x < 64; ++x) {
              const bool want = i0 + r < d.Tq && drop_factor(d, b, h, i0 + r, k0 + x) != 0.f;
              ok = ok && tile_keep_bit<Br, 128>(words, r, x) == want;
            }
        };
        for (int64_t b = 0; b < d.B; ++b)
          for (int64_t h = 0; h < d.H; ++h)
            for (int k0 = 0; k0 < Tk; k0 += 64)
              for (int i0 = 0; i0 < Tq; i0 += 32) {
                check(std::integral_constant<int, 64>{}, b, h, i0, k0);
                check(std::integral_constant<int, 32>{}, b, h, i0, k0);
              }
        ++cases;
        failed += !ok;
        printf("%s tile keep words Tq=%lld Tk=%lld offset=%llu\n", ok ? "PASS" : "FAIL", (long long)Tq, (long long)Tk, (unsigned long long)offset);
      }
  printf("%s: %d of %d cases failed\n", failed ? "FAIL" : "PASS", failed, cases);
  return failed ? 1 : 0;
}
