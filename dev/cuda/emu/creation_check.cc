// The addon's strided copies and casts (native/cuda/creation.cu, rewritten by transform.mjs) on the
// CPU emulator against plain loops: every copy must be exact, every cast the CPU's rounding. Shapes
// cover dims that merge, broadcasts (stride 0), transposes, size-1 dims and one element. The GPU
// run compares the same kernels with the CPU twins (test/gpu/twins.test.ts). Built by run-emu.sh.
#include <cstdio>
#include <vector>

#include "creation_emu.cc"

using namespace lowrank;

namespace {

struct Copy {
  std::vector<int64_t> shape, src_strides, dst_strides;
};

bool run(const Copy& c) {
  int64_t n = 1, src_span = 1, dst_span = 1;
  for (size_t d = 0; d < c.shape.size(); ++d) {
    n *= c.shape[d];
    src_span += (c.shape[d] - 1) * c.src_strides[d];
    dst_span += (c.shape[d] - 1) * c.dst_strides[d];
  }
  std::vector<uint32_t> src(static_cast<size_t>(src_span)), got(static_cast<size_t>(dst_span), 0xdeadbeef), want(got);
  for (size_t i = 0; i < src.size(); ++i) src[i] = uint32_t(i * 2654435761u);
  for (int64_t i = 0; i < n; ++i) {  // row-major walk of the shape
    int64_t rem = i, so = 0, doff = 0;
    for (int d = int(c.shape.size()) - 1; d >= 0; --d) {
      so += rem % c.shape[d] * c.src_strides[d];
      doff += rem % c.shape[d] * c.dst_strides[d];
      rem /= c.shape[d];
    }
    want[size_t(doff)] = src[size_t(so)];
  }
  cuda::copy_strided(src.data(), c.src_strides.data(), got.data(), c.dst_strides.data(), 4, int(c.shape.size()), c.shape.data());
  const bool ok = got == want;
  printf("%s copy_strided of %lld elements, %zu dims\n", ok ? "PASS" : "FAIL", (long long)n, c.shape.size());
  return ok;
}

bool casts(size_t n) {  // n a multiple of 4 or not (the scalar tail)
  std::vector<float> f(n);
  for (size_t i = 0; i < f.size(); ++i) f[i] = (float(i) - 500.0f) * 1.37e-3f * float(i % 7 + 1) * (i % 3 ? 1e3f : 1e-30f);
  std::vector<uint16_t> b(f.size());
  std::vector<float> back(f.size());
  cuda::cast(f.data(), DType::F32, b.data(), DType::BF16, int64_t(f.size()));
  cuda::cast(b.data(), DType::BF16, back.data(), DType::F32, int64_t(f.size()));
  bool ok = true;
  for (size_t i = 0; i < f.size(); ++i) ok = ok && b[i] == f32_to_bf16(f[i]) && back[i] == bf16_to_f32(b[i]);
  printf("%s casts float32 -> bfloat16 -> float32 of %zu elements\n", ok ? "PASS" : "FAIL", n);
  return ok;
}

}  // namespace

int main() {
  const Copy copies[] = {
      {{37, 19}, {0, 1}, {19, 1}},                      // a bias broadcast over rows
      {{19, 37}, {1, 19}, {37, 1}},                     // a transpose
      {{3, 5, 7}, {35, 7, 1}, {35, 7, 1}},              // contiguous: merges to one dim
      {{2, 3, 4, 5}, {60, 5, 15, 1}, {60, 20, 5, 1}},   // a permute (dims 1 and 2 swapped)
      {{4, 1, 6}, {6, 6, 1}, {1, 24, 4}},               // a size-1 dim between
      {{2, 9, 1, 11}, {0, 11, 11, 1}, {99, 11, 11, 1}},  // a broadcast whose inner dims merge
      {{1, 1}, {0, 0}, {0, 0}},                         // one element
      {{70000, 2}, {2, 1}, {1, 70000}},                 // rows beyond one grid's y
      {{37, 20}, {0, 1}, {20, 1}},                      // a bias broadcast in 16-byte units
      {{6, 8, 12}, {96, 12, 1}, {96, 12, 1}},           // contiguous, 16-byte units
      {{9, 8}, {12, 1}, {8, 1}},                        // rows of a slice (16-byte units on both sides)
      {{70000, 4}, {0, 1}, {4, 1}},                     // a broadcast past one grid's y, 16-byte units
  };
  int failed = 0;
  for (const Copy& c : copies) failed += !run(c);
  failed += !casts(1000) + !casts(1003);
  printf("%s: %d failed\n", failed ? "FAIL" : "PASS", failed);
  return failed ? 1 : 0;
}
