// The CPU's fused LoRA forward and backward (native/cpu/lora.cc) at GPT-2 124M's LoRA shapes of a
// 256-token step: r = 16, s = 2, c_attn (k 768, d 2304), attn.c_proj (768, 768), mlp.c_proj
// (3072, 768), dropout 0.05 and 0, float32 operands (what loraDelta hands the native calls for
// float32 and bfloat16 frozen weights alike). Each call is timed alone, after a warm-up; with one
// thread by the thread's CPU time (what another process takes from the core is not counted).
// Prints the 5th percentile of the samples in µs: the machine is shared (bench/lora-cpu/run.sh).
//
// Usage: lora_bench [threads=1] [samples=300]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <random>
#include <vector>

#include "../../native/cpu/parallel.h"
#include "../../native/ops/lora.h"

using namespace lowrank;

namespace {

bool g_thread_clock = false;

double now_us() {
  if (g_thread_clock) {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return double(ts.tv_sec) * 1e6 + double(ts.tv_nsec) * 1e-3;
  }
  return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

template <class F>
double low_percentile_us(int samples, F f) {
  for (int i = 0; i < 10; ++i) f();
  std::vector<double> t;
  for (int i = 0; i < samples; ++i) {
    const double t0 = now_us();
    f();
    t.push_back(now_us() - t0);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 20];
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 1, samples = argc > 2 ? std::atoi(argv[2]) : 300;
  cpu::set_num_threads(threads);
  g_thread_clock = threads == 1;
  const int64_t N = 256, r = 16;
  struct Shape {
    const char* name;
    int64_t k, d;
  } shapes[] = {{"c_attn", 768, 2304}, {"attn.c_proj", 768, 768}, {"mlp.c_proj", 3072, 768}};
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  for (float p : {0.05f, 0.0f})
    for (const Shape& s : shapes) {
      const int64_t k = s.k, d = s.d;
      std::vector<float> x(N * k), A(r * k), B(d * r), out(N * d), g(N * d), u(N * r), gx(N * k), gA(r * k), gB(d * r);
      for (auto* v : {&x, &A, &B, &out, &g})
        for (float& e : *v) e = normal(rng);
      const LoraDims dims{N, k, r, d, 2.0f, p, p > 0 ? 1 / (1 - p) : 1.0f, 123, 4096};
      const double fwd = low_percentile_us(samples, [&] { cpu::lora_forward_f32(dims, x.data(), A.data(), B.data(), out.data(), out.data(), u.data()); });
      const double bwd = low_percentile_us(samples, [&] {
        cpu::lora_backward_f32(dims, g.data(), x.data(), A.data(), B.data(), u.data(), gx.data(), gA.data(), gB.data());
      });
      std::printf("%-12s p=%.2f  fwd %7.1f us  bwd %7.1f us\n", s.name, p, fwd, bwd);
    }
}
