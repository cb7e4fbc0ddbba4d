// The addon's binary element-wise ops (native/cuda/elementwise.cu, rewritten by transform.mjs) on
// the CPU emulator against plain loops, bit for bit: same shapes, broadcasts on either side, a
// transposed operand, size-1 dims, 4 dims that do not merge. The GPU run compares the same kernels
// with the CPU twins (test/gpu/twins.test.ts). Built by run-emu.sh.
#include <cstdio>
#include <vector>

#include "elementwise_emu.cc"

using namespace lowrank;

namespace {

struct Binary {
  std::vector<int64_t> shape, a_strides, b_strides;
};

bool run(const Binary& c, BinaryOp op) {
  int64_t n = 1, a_span = 1, b_span = 1;
  for (size_t d = 0; d < c.shape.size(); ++d) {
    n *= c.shape[d];
    a_span += (c.shape[d] - 1) * c.a_strides[d];
    b_span += (c.shape[d] - 1) * c.b_strides[d];
  }
  std::vector<float> a(static_cast<size_t>(a_span)), b(static_cast<size_t>(b_span)), got(static_cast<size_t>(n)), want(got);
  for (size_t i = 0; i < a.size(); ++i) a[i] = 0.37f * float(i % 101) - 11.0f;
  for (size_t i = 0; i < b.size(); ++i) b[i] = 1.5f + 0.01f * float(i % 89);
  for (int64_t i = 0; i < n; ++i) {
    int64_t rem = i, ao = 0, bo = 0;
    for (int d = int(c.shape.size()) - 1; d >= 0; --d) {
      ao += rem % c.shape[d] * c.a_strides[d];
      bo += rem % c.shape[d] * c.b_strides[d];
      rem /= c.shape[d];
    }
    const float x = a[size_t(ao)], y = b[size_t(bo)];
    want[size_t(i)] = op == BinaryOp::Add ? x + y : op == BinaryOp::Sub ? x - y : op == BinaryOp::Mul ? x * y : x / y;
  }
  cuda::binary_f32(op, a.data(), c.a_strides.data(), b.data(), c.b_strides.data(), got.data(), int(c.shape.size()), c.shape.data());
  const bool ok = got == want;
  printf("%s binary op %d over %lld elements, %zu dims\n", ok ? "PASS" : "FAIL", int(op), (long long)n, c.shape.size());
  return ok;
}

}  // namespace

int main() {
  const Binary cases[] = {
      {{8, 10, 12}, {120, 12, 1}, {120, 12, 1}},     // same shape, contiguous: one dim
      {{8, 10, 12}, {120, 12, 1}, {0, 0, 1}},        // a bias over rows
      {{8, 10, 12}, {120, 12, 1}, {10, 1, 0}},       // a column broadcast
      {{13, 17}, {1, 13}, {17, 1}},                  // a transposed operand
      {{3, 1, 5}, {5, 5, 1}, {0, 0, 1}},             // a size-1 dim
      {{2, 3, 4, 5}, {60, 5, 15, 1}, {0, 5, 0, 1}},  // dims that do not merge: the general kernel
      {{1}, {0}, {0}},                               // one element
      {{70000, 2}, {2, 1}, {0, 1}},                  // rows beyond one grid's y
      {{70000, 4}, {4, 1}, {0, 1}},                  // ... 4 columns at a time (16-byte accesses)
      {{6, 8}, {8, 1}, {8, 1}},                      // 16-byte accesses: contiguous
      {{6, 8}, {8, 1}, {1, 0}},                      // ... b a column broadcast (stride 0 along the row)
      {{6, 8}, {0, 1}, {12, 1}},                     // ... a a bias over rows, b rows of a slice
      {{6, 8}, {8, 1}, {2, 1}},                      // b's rows 2 apart (not 16-byte aligned): 4-byte kernel
  };
  int failed = 0;
  for (const Binary& c : cases)
    for (BinaryOp op : {BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div}) failed += !run(c, op);
  printf("%s: %d failed\n", failed ? "FAIL" : "PASS", failed);
  return failed ? 1 : 0;
}
