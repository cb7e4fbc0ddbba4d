// The addon's dropout kernel (native/cuda/dropout.cu, rewritten by transform.mjs) on the CPU
// emulator against philox_keep element by element, bit for bit: stream offsets in every position
// of a 64-element group, lengths that end inside a group, a dropped NaN; alone and added to a
// residual (the product rounded before the sum). Built by run-emu.sh.
#include <cmath>
#include <cstdio>
#include <vector>

#include "dropout_emu.cc"

using namespace lowrank;

int main() {
  int failed = 0, cases = 0;
  for (bool with_residual : {false, true})
    for (int64_t n : {1, 15, 64, 100, 1000}) {
      for (uint64_t offset : {0ull, 1ull, 16ull, 47ull, 63ull, 64ull, (1ull << 32) - 5}) {
        std::vector<float> x(static_cast<size_t>(n)), y(static_cast<size_t>(n), -1.0f), r(static_cast<size_t>(n));
        for (int64_t i = 0; i < n; ++i) {
          x[size_t(i)] = i == 3 ? std::nanf("") : 0.5f + float(i);
          r[size_t(i)] = 1.0f / float(i + 3);
        }
        const float p = 0.3f, scale = 1.0f / 0.7f;
        const uint64_t seed = 0x9e3779b97f4a7c15ULL;
        cuda::dropout_f32(x.data(), y.data(), n, p, scale, seed, offset, with_residual ? r.data() : nullptr);
        bool ok = true;
        for (int64_t i = 0; i < n; ++i) {
          const volatile float dropped = x[size_t(i)] * (philox_keep(seed, offset, uint64_t(i), p) ? scale : 0.0f);
          const float want = with_residual ? r[size_t(i)] + dropped : dropped;
          ok = ok && (std::isnan(want) ? std::isnan(y[size_t(i)]) : y[size_t(i)] == want);
        }
        ++cases;
        failed += !ok;
        printf("%s dropout%s n=%lld offset=%llu\n", ok ? "PASS" : "FAIL", with_residual ? " + residual" : "", (long long)n,
               (unsigned long long)offset);
      }
    }
  printf("%s: %d of %d cases failed\n", failed ? "FAIL" : "PASS", failed, cases);
  return failed ? 1 : 0;
}
