// Runs dev/cuda/attention.cu's GPU kernels on the CPU, to check their indexing without a GPU: each
// CUDA block runs as one host thread per CUDA thread, __syncthreads is a barrier over them, and the
// warp-collective primitives (mma.sync m16n8k16, ldmatrix.x4 [.trans], shuffles) exchange values
// through per-warp slots between two warp barriers, following the PTX ISA fragment layouts.
// cp.async copies run either when issued or as late as cp.async.wait_group allows (--deferred),
// the two extremes of what the hardware may do; shared memory starts as NaN for every block.
//
//   g++ -O1 -std=c++20 -pthread -I/usr/local/cuda/include dev/cuda/attention_emu.cpp -o /tmp/attn_emu
//   /tmp/attn_emu            # immediate copies
//   /tmp/attn_emu --deferred # copies at the wait
//
// It checks the flash kernels (bf16 and float32 I/O) against the float64 reference of attention.cu
// with the tolerances of its GPU test; the arithmetic order differs from the tensor cores', so
// only indexing and synchronization are under test here, not rounding.

#include "attention_emu.h"

#define ATTN_EMULATE
#include "attention.cu"


template <typename T> T to_elem(float x);
template <> float to_elem<float>(float x) { return x; }
template <> bf16 to_elem<bf16>(float x) { return __float2bfloat16(x); }

template <typename T>
std::vector<T> round_to(std::vector<float>& x) {  // x becomes the values T holds
  std::vector<T> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    out[i] = to_elem<T>(x[i]);
    x[i] = to_float(out[i]);
  }
  return out;
}

struct EmuCase {
  const char* name;
  int B, H, Tq, Tk, D;
  bool causal, padding;
  float dropout;
};

int g_fail = 0;

void check(const char* what, const EmuCase& c, const char* tname, int warps, const std::vector<float>& got,
           const std::vector<double>& ref, double tol) {
  double maxerr = 0, maxref = 0;
  bool ok = true;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (std::isinf(ref[i]) || std::isinf(got[i])) {
      ok = ok && std::isinf(ref[i]) && got[i] == ref[i];
      continue;
    }
    if (std::isnan(got[i])) {
      ok = false;
      continue;
    }
    maxerr = std::max(maxerr, std::fabs(got[i] - ref[i]));
    maxref = std::max(maxref, std::fabs(ref[i]));
  }
  const double rel = maxerr / std::max(maxref, 1e-30);
  const bool pass = ok && rel < tol;
  g_fail += !pass;
  printf("  %s %-34s %-4s %d warps %-4s rel %.2e%s\n", pass ? "PASS" : "FAIL", c.name, tname, warps, what, rel,
         ok ? "" : " [NaN/inf mismatch]");
}

template <typename T>
std::vector<float> as_float(const std::vector<T>& x) {
  std::vector<float> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = to_float(x[i]);
  return out;
}

template <int D, int kWarps, typename T>
void run_case(const EmuCase& c, std::mt19937& rng, bool with_simple = false) {
  Shape s{c.B, c.H, c.Tq, c.Tk, c.D, c.causal, 1.0f / std::sqrt(float(c.D)), c.dropout, rng(), uint64_t(rng())};
  const size_t nq = size_t(c.B) * c.H * c.Tq * D, nk = size_t(c.B) * c.H * c.Tk * D, rows = size_t(c.B) * c.H * c.Tq;
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<float> q(nq), k(nk), v(nk), dout(nq);
  for (auto* x : {&q, &k, &v, &dout})
    for (auto& e : *x) e = 1.5f * normal(rng);
  std::vector<int32_t> keep(size_t(c.B) * c.Tk, 1);
  for (int b = 0; b < c.B; ++b)
    for (int j = 0; j < c.Tk; ++j)
      if (j < 5 * b + 3 || j % 17 == 11) keep[size_t(b) * c.Tk + j] = 0;
  const int32_t* kp = c.padding ? keep.data() : nullptr;
  std::vector<T> tq = round_to<T>(q), tk = round_to<T>(k), tv = round_to<T>(v), tdo = round_to<T>(dout);
  std::vector<double> ro, rl, rdq, rdk, rdv;
  cpu_attention_forward(s, q, k, v, kp, ro, rl);
  cpu_attention_backward(s, q, k, v, kp, ro, rl, dout, rdq, rdk, rdv);

  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<T> o(nq, to_elem<T>(nan)), dq(nq, to_elem<T>(nan)), dk(nk, to_elem<T>(nan)), dv(nk, to_elem<T>(nan));
  std::vector<float> lse(rows, nan), delta(rows, nan), dq_acc(nq, 0.f);
  constexpr int Br = 16 * kWarps;
  emu_launch(EmuDim{unsigned(c.B * c.H), unsigned((c.Tq + Br - 1) / Br), 1}, kWarps * 32,
             flash_forward_smem<D, kWarps>(),
             flash_forward_kernel<D, kWarps, T>, s, tq.data(), tk.data(), tv.data(), kp, o.data(), lse.data());
  emu_launch(EmuDim{unsigned((rows + 7) / 8), 1, 1}, 256, 0, flash_delta_kernel<T>, s, (const T*)o.data(),
             (const T*)tdo.data(), delta.data());
  emu_launch(EmuDim{unsigned(c.B * c.H), unsigned((c.Tk + kBc - 1) / kBc), 1}, 128, flash_backward_smem<D>(),
             flash_backward_kernel<D, T>, s,
             (const T*)tq.data(), (const T*)tk.data(), (const T*)tv.data(), kp, (const float*)lse.data(),
             (const float*)delta.data(), (const T*)tdo.data(), dq_acc.data(), dk.data(), dv.data());
  emu_launch(EmuDim{1, 1, 1}, 256, 0, flash_dq_convert_kernel<T>, int64_t(nq), (const float*)dq_acc.data(), dq.data());
  const char* tname = sizeof(T) == 2 ? "bf16" : "f32";
  auto check_all = [&](int warps, double tol) {
    check("O", c, tname, warps, as_float(o), ro, tol);
    check("lse", c, tname, warps, lse, rl, tol);
    check("dQ", c, tname, warps, as_float(dq), rdq, tol);
    check("dK", c, tname, warps, as_float(dk), rdk, tol);
    check("dV", c, tname, warps, as_float(dv), rdv, tol);
  };
  check_all(kWarps, 2e-2);
  if (!with_simple) return;
  // The simple kernels (printed as 0 warps), at the GPU test's tolerances: float32 1e-4, bf16 2e-2.
  for (T* p : {o.data(), dq.data()}) std::fill(p, p + nq, to_elem<T>(nan));
  for (T* p : {dk.data(), dv.data()}) std::fill(p, p + nk, to_elem<T>(nan));
  std::fill(lse.begin(), lse.end(), nan);
  emu_launch(EmuDim{unsigned((rows + 127) / 128), 1, 1}, 128, 0, simple_forward_kernel<T>, s, (const T*)tq.data(),
             (const T*)tk.data(), (const T*)tv.data(), kp, o.data(), lse.data());
  emu_launch(EmuDim{unsigned((rows + 127) / 128), 1, 1}, 128, 0, simple_backward_dq_kernel<T>, s, (const T*)tq.data(),
             (const T*)tk.data(), (const T*)tv.data(), kp, (const T*)o.data(), (const float*)lse.data(),
             (const T*)tdo.data(), delta.data(), dq.data());
  const size_t krows = size_t(c.B) * c.H * c.Tk;
  emu_launch(EmuDim{unsigned((krows + 127) / 128), 1, 1}, 128, 0, simple_backward_dkdv_kernel<T>, s, (const T*)tq.data(),
             (const T*)tk.data(), (const T*)tv.data(), kp, (const float*)lse.data(), (const T*)tdo.data(),
             (const float*)delta.data(), dk.data(), dv.data());
  check_all(0, sizeof(T) == 2 ? 2e-2 : 1e-4);
}

int main(int argc, char** argv) {
  g_deferred = argc > 1 && std::strcmp(argv[1], "--deferred") == 0;
  printf("flash kernels on the CPU emulator, cp.async copies %s\n", g_deferred ? "deferred to the wait" : "immediate");
  std::mt19937 rng(5);
  const EmuCase c64[] = {
      {"B1 H2 T77 causal", 1, 2, 77, 77, 64, true, false, 0.f},
      {"B2 H1 Tq1 Tk100 decode", 2, 1, 1, 100, 64, true, false, 0.f},
      {"B1 H1 Tq50 Tk130 causal", 1, 1, 50, 130, 64, true, false, 0.f},
      {"B2 H1 T70 non-causal padding drop", 2, 1, 70, 70, 64, false, true, 0.1f},
      {"B2 H1 T77 causal padding drop", 2, 1, 77, 77, 64, true, true, 0.1f},
  };
  for (const EmuCase& c : c64) {
    run_case<64, 4, bf16>(c, rng);
    run_case<64, 8, bf16>(c, rng);
  }
  run_case<64, 4, float>(c64[0], rng, true);
  run_case<64, 4, float>(c64[4], rng, true);
  run_case<64, 4, bf16>(c64[1], rng, true);
  const EmuCase c128[] = {
      {"B1 H1 T129 D128 causal", 1, 1, 129, 129, 128, true, false, 0.f},
      {"B2 H1 T70 D128 causal padding drop", 2, 1, 70, 70, 128, true, true, 0.1f},
      {"B1 H1 Tq1 Tk100 D128 decode", 1, 1, 1, 100, 128, true, false, 0.f},
  };
  for (const EmuCase& c : c128) run_case<128, 4, bf16>(c, rng);
  run_case<128, 8, bf16>(c128[0], rng);
  run_case<128, 4, float>(c128[1], rng);
  printf("%s: %d failed checks\n", g_fail ? "FAIL" : "ALL PASS", g_fail);
  return g_fail ? 1 : 0;
}
