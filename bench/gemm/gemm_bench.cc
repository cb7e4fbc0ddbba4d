// lowrank's CPU gemm_f32 (native/cpu/matmul*.cc) against OpenBLAS cblas_sgemm, side by side in one
// process on the same random inputs and the same number of threads. For each shape: both results
// are compared first (relative L2 error), then each library gets a warm-up call and `samples`
// timed samples, interleaved so load changes on the machine hit both alike, each after a pause
// (see settle()); a sample repeats the call until it lasts at least 50 ms. Prints the median and
// the best GFLOP/s of each and the ratios ours/OpenBLAS (on a shared machine the best sample is
// the closest to an idle one).
//
// A second table times gemm_bf16 (bf16 A and B, float32 C: a frozen bf16 weight times x rounded
// to bf16) at the shapes of the step's frozen-weight products, beside gemm_f32 and cblas_sgemm on
// the same values in float32, all three interleaved. Its result is checked against cblas_sgemm
// on the bf16 values widened to float32. Beside them, gemm_f32_bf16: the same product from
// float32 A, rounded to bf16 as it is packed (what a bf16 weight's GEMM gets from linear, with no
// cast of x first); its result must equal gemm_bf16's bit for bit.
//
// Usage: gemm_bench [threads=2] [samples=5] [label filter] [tables: all | f32 | bf16]
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "../../native/backend.h"
#include "../../native/core/dtype.h"
#include "../../native/ops/matmul.h"

extern "C" char* openblas_get_corename(void);
extern "C" char* openblas_get_config(void);
extern "C" void openblas_set_num_threads(int);

namespace {

struct Shape {
  const char* label;
  bool ta, tb;
  int64_t m, n, k;
  bool bf16 = false;  // a frozen-weight product: also in the bf16 table
};

using Clock = std::chrono::steady_clock;

// Seconds per call: repeats fn until a sample lasts ≥ 50 ms.
double time_call(const std::function<void()>& fn) {
  int reps = 0;
  auto t0 = Clock::now();
  double elapsed;
  do {
    fn();
    ++reps;
    elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
  } while (elapsed < 0.05);
  return elapsed / reps;
}

// OpenBLAS's idle workers keep spinning for a while after each call (2^28 cycles by default,
// OPENBLAS_THREAD_TIMEOUT) and would steal a core from whatever runs next; lowrank's pool sleeps
// at once. Pausing before every sample lets both start on quiet cores.
void settle() { std::this_thread::sleep_for(std::chrono::milliseconds(250)); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double best(const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); }

// Seconds per call of each fn: `samples` rounds, each timing every fn once after a pause.
std::vector<std::vector<double>> sample_all(const std::vector<std::function<void()>>& fns, int samples) {
  std::vector<std::vector<double>> t(fns.size());
  for (int r = 0; r < samples; ++r)
    for (size_t i = 0; i < fns.size(); ++i) {
      settle();
      t[i].push_back(time_call(fns[i]));
    }
  return t;
}

double rel_l2(const std::vector<float>& x, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    double d = double(x[i]) - double(ref[i]);
    num += d * d;
    den += double(ref[i]) * double(ref[i]);
  }
  return std::sqrt(num / den);
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 2;
  const int samples = argc > 2 ? std::atoi(argv[2]) : 5;
  const char* only = argc > 3 ? argv[3] : "";  // run only shapes whose label contains this
  const std::string tables = argc > 4 ? argv[4] : "all";
  lowrank::cpu::set_num_threads(threads);
  openblas_set_num_threads(threads);
  std::printf("threads: %d, samples: %d (median), ours: %s kernel, OpenBLAS: core %s, config %s\n", threads, samples,
              lowrank::cpu::simd_level().c_str(), openblas_get_corename(), openblas_get_config());

  // m, n, k of C = op(A)·op(B). GPT-2 small with 256 tokens per step: c_attn 768→2304, attn
  // c_proj 768→768, mlp c_fc 768→3072 and c_proj 3072→768 (forward, Conv1D weights in×out so
  // op(B) = W), the input gradient of c_attn (gy·Wᵀ), a weight gradient (xᵀ·gy), and the LoRA
  // factors at r = 16 and 64: x·Aᵀ (n = r) and u·Bᵀ (k = r); the tied lm_head (vocabulary 50257)
  // forward x·Wᵀ and its input gradient gy·W; the input gradients (dX = gy·Wᵀ) of each layer.
  const std::vector<Shape> shapes = {
      {"square", false, false, 256, 256, 256},
      {"square", false, false, 512, 512, 512},
      {"square", false, false, 1024, 1024, 1024, true},
      {"square", false, false, 2048, 2048, 2048, true},
      {"square", false, false, 3072, 3072, 3072},
      {"square", false, false, 4096, 4096, 4096},
      {"lm_head fwd", false, true, 256, 50257, 768, true},
      {"lm_head dX", false, false, 256, 768, 50257, true},
      {"c_attn fwd", false, false, 256, 2304, 768, true},
      {"c_attn dX", false, true, 256, 768, 2304, true},
      {"c_proj fwd", false, false, 256, 768, 768, true},
      {"c_proj dX", false, true, 256, 768, 768, true},
      {"mlp c_proj fwd", false, false, 256, 768, 3072, true},
      {"mlp c_proj dX", false, true, 256, 3072, 768, true},
      {"mlp c_fc fwd", false, false, 256, 3072, 768, true},
      {"mlp c_fc dX", false, true, 256, 768, 3072, true},
      {"c_attn dW", true, false, 768, 2304, 256},
      {"lora x·Aᵀ (r=16)", false, true, 256, 16, 768},
      {"lora u·Bᵀ (r=16)", false, true, 256, 768, 16},
      {"lora x·Aᵀ (r=64)", false, true, 256, 64, 768},
      {"lora u·Bᵀ (r=64)", false, true, 256, 768, 64},
  };

  std::mt19937 rng(42);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  // Operands of one shape (a and b uniform in [-1, 1]) and calls of each library on them.
  struct Problem {
    const Shape& s;
    int64_t lda, ldb, ldc;
    std::vector<float> a, b, c;
    Problem(const Shape& s, std::mt19937& rng, std::uniform_real_distribution<float>& uni)
        : s(s), lda(s.ta ? s.m : s.k), ldb(s.tb ? s.k : s.n), ldc(s.n), a(size_t(s.m * s.k)), b(size_t(s.k * s.n)),
          c(size_t(s.m * s.n)) {
      for (float& x : a) x = uni(rng);
      for (float& x : b) x = uni(rng);
    }
    void ours(std::vector<float>& out) const {
      lowrank::cpu::gemm_f32(s.ta, s.tb, s.m, s.n, s.k, 1.0f, a.data(), lda, 0, b.data(), ldb, 0, 0.0f, out.data(), ldc, 0, 1);
    }
    void ours_bf16(const std::vector<uint16_t>& a16, const std::vector<uint16_t>& b16, std::vector<float>& out) const {
      lowrank::cpu::gemm_bf16(s.ta, s.tb, s.m, s.n, s.k, 1.0f, a16.data(), lda, 0, b16.data(), ldb, 0, 0.0f, out.data(),
                              ldc, 0, 1);
    }
    void ours_f32_bf16(const std::vector<uint16_t>& b16, std::vector<float>& out) const {
      lowrank::cpu::gemm_f32_bf16(s.ta, s.tb, s.m, s.n, s.k, 1.0f, a.data(), lda, 0, b16.data(), ldb, 0, 0.0f, out.data(),
                                  ldc, 0, 1);
    }
    void blas(const std::vector<float>& x, const std::vector<float>& y, std::vector<float>& out) const {
      cblas_sgemm(CblasRowMajor, s.ta ? CblasTrans : CblasNoTrans, s.tb ? CblasTrans : CblasNoTrans, int(s.m), int(s.n),
                  int(s.k), 1.0f, x.data(), int(lda), y.data(), int(ldb), 0.0f, out.data(), int(ldc));
    }
    double gflops(double seconds) const { return 2.0 * double(s.m) * double(s.n) * double(s.k) / seconds * 1e-9; }
  };
  auto differ = [](const Shape& s, const char* what, double diff) {
    std::fprintf(stderr, "gemm_bench: %s results differ for %s %lldx%lldx%lld: relative L2 %.3g\n", what, s.label,
                 (long long)s.m, (long long)s.n, (long long)s.k, diff);
    return 1;
  };

  if (tables != "bf16") {
    std::printf("\n| shape | op | m | n | k | ours GFLOP/s | OpenBLAS GFLOP/s | ours/OpenBLAS | best: ours | best: OpenBLAS "
                "| best: ratio | rel. diff |\n");
    std::printf("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  }
  for (const Shape& s : shapes) {
    if (tables == "bf16" || !std::strstr(s.label, only)) continue;
    Problem p(s, rng, uni);
    std::vector<float> ours(p.c.size()), blas(p.c.size());
    auto run_ours = [&] { p.ours(ours); };
    auto run_blas = [&] { p.blas(p.a, p.b, blas); };
    run_ours();  // first calls double as warm-up
    run_blas();
    const double diff = rel_l2(ours, blas);
    if (!(diff < 1e-4)) return differ(s, "f32", diff);
    const auto t = sample_all({run_ours, run_blas}, samples);
    const double g_ours = p.gflops(median(t[0])), g_blas = p.gflops(median(t[1]));
    const double b_ours = p.gflops(best(t[0])), b_blas = p.gflops(best(t[1]));
    std::printf("| %s | %s%s | %lld | %lld | %lld | %.1f | %.1f | %.2f | %.1f | %.1f | %.2f | %.1e |\n", s.label,
                s.ta ? "T" : "N", s.tb ? "T" : "N", (long long)s.m, (long long)s.n, (long long)s.k, g_ours, g_blas,
                g_ours / g_blas, b_ours, b_blas, b_ours / b_blas, diff);
    std::fflush(stdout);
  }

  if (tables != "f32") {
    std::printf("\n| shape | op | m | n | k | ours bf16 GFLOP/s | ours f32·bf16 | ours f32 | OpenBLAS f32 | bf16/f32 "
                "| bf16/OpenBLAS | best: bf16 | best: f32·bf16 | best: f32 | best: OpenBLAS | bf16 rel. diff |\n");
    std::printf("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  }
  for (const Shape& s : shapes) {
    if (tables == "f32" || !s.bf16 || !std::strstr(s.label, only)) continue;
    Problem p(s, rng, uni);
    std::vector<uint16_t> a16(p.a.size()), b16(p.b.size());
    for (size_t i = 0; i < a16.size(); ++i) a16[i] = lowrank::f32_to_bf16(p.a[i]);
    for (size_t i = 0; i < b16.size(); ++i) b16[i] = lowrank::f32_to_bf16(p.b[i]);
    std::vector<float> aw(p.a.size()), bw(p.b.size()), want(p.c.size()), got(p.c.size()), mixed(p.c.size()), f32(p.c.size());
    for (size_t i = 0; i < aw.size(); ++i) aw[i] = lowrank::bf16_to_f32(a16[i]);
    for (size_t i = 0; i < bw.size(); ++i) bw[i] = lowrank::bf16_to_f32(b16[i]);
    p.blas(aw, bw, want);  // the bf16 values, exactly, in float32
    auto run_bf16 = [&] { p.ours_bf16(a16, b16, got); };
    auto run_mixed = [&] { p.ours_f32_bf16(b16, mixed); };
    auto run_ours = [&] { p.ours(f32); };
    auto run_blas = [&] { p.blas(p.a, p.b, p.c); };
    run_bf16();
    run_mixed();
    run_ours();
    run_blas();
    const double diff = rel_l2(got, want);
    if (!(diff < 1e-4)) return differ(s, "bf16", diff);
    if (std::memcmp(got.data(), mixed.data(), got.size() * sizeof(float)) != 0) return differ(s, "f32·bf16 and bf16", rel_l2(mixed, got));
    const auto t = sample_all({run_bf16, run_mixed, run_ours, run_blas}, samples);
    const double g16 = p.gflops(median(t[0])), gm = p.gflops(median(t[1])), g32 = p.gflops(median(t[2])), gb = p.gflops(median(t[3]));
    std::printf("| %s | %s%s | %lld | %lld | %lld | %.1f | %.1f | %.1f | %.1f | %.2f | %.2f | %.1f | %.1f | %.1f | %.1f | %.1e |\n",
                s.label, s.ta ? "T" : "N", s.tb ? "T" : "N", (long long)s.m, (long long)s.n, (long long)s.k, g16, gm, g32, gb,
                g16 / g32, g16 / gb, p.gflops(best(t[0])), p.gflops(best(t[1])), p.gflops(best(t[2])), p.gflops(best(t[3])), diff);
    std::fflush(stdout);
  }
  return 0;
}
