// The addon's cross-entropy rows kernel (native/cuda/crossentropy.cu, rewritten by transform.mjs) on
// the CPU emulator against float64: the one-pass max and sum of exponentials, the loss and the
// gradient (float32 and bfloat16), for rows read 4 at a time (ld a multiple of 4) and one by one,
// with an ignored row (NaN gradient where its logits hold a NaN), a bad target, -inf logits, a
// NaN logit and a row of all -inf. Built by run-emu.sh.
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <vector>

#include "crossentropy_emu.cc"

using namespace lowrank;

// crossentropy.cu's empty-input path fills through creation.cu, not emulated here: never called.
void lowrank::cuda::fill(void*, DType, int64_t, double) { throw std::logic_error("fill is not emulated"); }

namespace {

bool same(double got, double want, double tol) {
  if (std::isnan(want)) return std::isnan(got);
  if (std::isinf(want)) return got == want;
  return std::fabs(got - want) <= tol * (1 + std::fabs(want));
}

bool run(int64_t V, int64_t ld, bool grad_bf16) {
  const int64_t N = 7;
  const int32_t ignore = -100;
  std::mt19937 rng(unsigned(V * 3 + ld));
  std::normal_distribution<float> nd(0.0f, 3.0f);
  std::vector<float> logits(size_t(N * ld), std::nanf(""));  // the padding past V is never read
  std::vector<int32_t> targets(static_cast<size_t>(N));
  const float inf = std::numeric_limits<float>::infinity();
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t j = 0; j < V; ++j) logits[size_t(n * ld + j)] = nd(rng);
    targets[size_t(n)] = int32_t((n * 7919) % V);
  }
  targets[1] = ignore;                                                    // ignored, finite: gradient 0
  targets[2] = ignore, logits[size_t(2 * ld + V / 2)] = std::nanf("");    // ignored with a NaN: gradient NaN
  targets[3] = int32_t(V);                                                // a bad target: reported, loss 0
  for (int64_t j = 0; j < V; j += 3) logits[size_t(4 * ld + j)] = -inf;   // -inf logits add nothing
  logits[size_t(4 * ld + targets[4])] = 1.0f;
  logits[size_t(5 * ld + V - 1)] = std::nanf("");                         // a NaN: loss and gradient NaN
  for (int64_t j = 0; j < V; ++j) logits[size_t(6 * ld + j)] = -inf;      // all -inf: NaN

  std::vector<float> loss(size_t(N), -1), counted(size_t(N), -1), g32(size_t(N * ld), -7);
  std::vector<uint16_t> g16(size_t(N * ld), 0x7fc1);
  int32_t first_bad = std::numeric_limits<int32_t>::max();
  void* grad = grad_bf16 ? static_cast<void*>(g16.data()) : static_cast<void*>(g32.data());
  cuda::cross_entropy_rows_f32(logits.data(), targets.data(), loss.data(), counted.data(), grad, grad_bf16, N, V, ld, ignore, &first_bad);

  bool ok = first_bad == 3;
  for (int64_t n = 0; n < N; ++n) {
    const int32_t t = targets[size_t(n)];
    const bool plain = t == ignore || t < 0 || t >= V;
    const float* x = &logits[size_t(n * ld)];
    double m = -INFINITY, s = 0, lse = 0;
    bool has_nan = false;
    for (int64_t j = 0; j < V; ++j) has_nan = has_nan || std::isnan(x[j]), m = std::fmax(m, x[j]);
    for (int64_t j = 0; j < V; ++j) s += std::exp(double(x[j]) - m);
    lse = has_nan ? NAN : m + std::log(s);
    ok = ok && same(loss[size_t(n)], plain ? 0.0 : lse - x[t], 1e-6) && counted[size_t(n)] == (plain ? 0.0f : 1.0f);
    for (int64_t j = 0; j < V; ++j) {
      const double want = plain ? (t == ignore && (has_nan || !std::isfinite(m)) ? NAN : 0.0) : std::exp(double(x[j]) - lse) - (j == t ? 1.0 : 0.0);
      const double got = grad_bf16 ? double(bf16_to_f32(g16[size_t(n * ld + j)])) : double(g32[size_t(n * ld + j)]);
      ok = ok && same(got, want, grad_bf16 ? std::ldexp(1.0, -8) : 1e-6);
    }
  }
  printf("%s cross-entropy rows V=%lld ld=%lld grad %s\n", ok ? "PASS" : "FAIL", (long long)V, (long long)ld, grad_bf16 ? "bf16" : "float32");
  return ok;
}

}  // namespace

int main() {
  int failed = 0, total = 0;
  for (const auto& [V, ld] : {std::pair<int64_t, int64_t>{5, 5}, {7, 8}, {1001, 1001}, {1001, 1008}, {50257, 50264}})
    for (bool bf : {false, true}) failed += !run(V, ld, bf), ++total;
  printf("%s: %d of %d cases failed\n", failed ? "FAIL" : "PASS", failed, total);
  return failed ? 1 : 0;
}
