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

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <barrier>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

// ---- CUDA C++ surface on the host -------------------------------------------------------------------

#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __launch_bounds__
#undef __restrict__
#undef __align__
#undef __shared__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __restrict__
#define __align__(n)
#define __shared__

using std::max;
using std::min;
using bf16 = __nv_bfloat16;

struct EmuDim {
  unsigned x = 1, y = 1, z = 1;
};
thread_local EmuDim threadIdx;
EmuDim blockIdx, gridDim, blockDim;

alignas(128) unsigned char smem_raw[228 * 1024];
size_t g_smem_bytes = 0;  // the launch's dynamic shared memory: accesses past it are errors

// A shared-memory access of `bytes` at p must lie in the launch's allocation, aligned to `align`.
static void check_smem(const void* p, size_t bytes, size_t align, const char* what) {
  const auto* c = static_cast<const unsigned char*>(p);
  if (c < smem_raw || c + bytes > smem_raw + g_smem_bytes || reinterpret_cast<uintptr_t>(p) % align != 0) {
    fprintf(stderr, "%s: shared-memory access at offset %td (%zu bytes, alignment %zu) outside [0, %zu) or misaligned\n",
            what, c - smem_raw, bytes, align, g_smem_bytes);
    exit(1);
  }
}

struct WarpSlots {
  uint32_t u[32][6];
  const void* p[32];
  float f[32];
};

struct BlockCtx {
  std::unique_ptr<std::barrier<>> block;
  std::vector<std::unique_ptr<std::barrier<>>> warp;
  std::vector<WarpSlots> slots;
};
BlockCtx g_block;
thread_local int t_lane, t_warp;
bool g_deferred = false;
std::mutex g_atomic;

void __syncthreads() { g_block.block->arrive_and_wait(); }
static void warp_sync() { g_block.warp[t_warp]->arrive_and_wait(); }
static WarpSlots& my_slots() { return g_block.slots[t_warp]; }

float __shfl_xor_sync(unsigned, float v, int m) {
  WarpSlots& S = my_slots();
  S.f[t_lane] = v;
  warp_sync();
  const float r = S.f[t_lane ^ m];
  warp_sync();
  return r;
}

static uint16_t bf16_bits(const bf16* p) {
  uint16_t u;
  std::memcpy(&u, p, 2);
  return u;
}
static float bits_to_float(uint32_t half) {
  const uint32_t u = (half & 0xffffu) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Register m of lane l: row l/4, columns 2(l%4), 2(l%4)+1 of matrix m, whose rows lanes 8m..8m+7 address.
void ldmatrix_x4(uint32_t (&r)[4], const bf16* p) {
  check_smem(p, 16, 16, "ldmatrix");
  WarpSlots& S = my_slots();
  S.p[t_lane] = p;
  warp_sync();
  for (int m = 0; m < 4; ++m) {
    const bf16* row = static_cast<const bf16*>(S.p[8 * m + t_lane / 4]);
    r[m] = uint32_t(bf16_bits(row + 2 * (t_lane % 4))) | uint32_t(bf16_bits(row + 2 * (t_lane % 4) + 1)) << 16;
  }
  warp_sync();
}

// .trans: lane l gets row l/4 of the transposed matrix: elements [2(l%4)][l/4] and [2(l%4)+1][l/4].
void ldmatrix_x4_trans(uint32_t (&r)[4], const bf16* p) {
  check_smem(p, 16, 16, "ldmatrix.trans");
  WarpSlots& S = my_slots();
  S.p[t_lane] = p;
  warp_sync();
  for (int m = 0; m < 4; ++m) {
    const bf16* r0 = static_cast<const bf16*>(S.p[8 * m + 2 * (t_lane % 4)]);
    const bf16* r1 = static_cast<const bf16*>(S.p[8 * m + 2 * (t_lane % 4) + 1]);
    r[m] = uint32_t(bf16_bits(r0 + t_lane / 4)) | uint32_t(bf16_bits(r1 + t_lane / 4)) << 16;
  }
  warp_sync();
}

// PTX ISA, m16n8k16 .bf16: A reg r of lane l holds row l/4 + 8(r%2), columns 2(l%4) + 8(r/2) + {0,1};
// B reg r holds column (n) l/4, rows (k) 2(l%4) + 8r + {0,1}; C element e holds row l/4 + 8(e/2),
// column 2(l%4) + e%2.
void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  WarpSlots& S = my_slots();
  for (int r = 0; r < 4; ++r) S.u[t_lane][r] = a[r];
  S.u[t_lane][4] = b0;
  S.u[t_lane][5] = b1;
  warp_sync();
  auto A = [&](int row, int k) {
    const uint32_t w = S.u[4 * (row % 8) + (k % 8) / 2][(row / 8) + 2 * (k / 8)];
    return bits_to_float(k % 2 ? w >> 16 : w);
  };
  auto B = [&](int k, int n) {
    const uint32_t w = S.u[4 * n + (k % 8) / 2][4 + k / 8];
    return bits_to_float(k % 2 ? w >> 16 : w);
  };
  float out[4];
  for (int e = 0; e < 4; ++e) {
    const int row = t_lane / 4 + 8 * (e / 2), col = 2 * (t_lane % 4) + e % 2;
    float acc = c[e];
    for (int k = 0; k < 16; ++k) acc += A(row, k) * B(k, col);
    out[e] = acc;
  }
  warp_sync();
  for (int e = 0; e < 4; ++e) c[e] = out[e];
}

struct Copy {
  void* dst;
  const void* src;
  int bytes;
};
thread_local std::vector<Copy> t_open;                 // issued, not yet committed
thread_local std::vector<std::vector<Copy>> t_groups;  // committed groups, oldest first

static void do_copy(const Copy& c) {
  std::memset(c.dst, 0, 16);
  std::memcpy(c.dst, c.src, c.bytes);
}
void cp_async16(void* smem, const void* gmem, int src_bytes) {
  check_smem(smem, 16, 16, "cp.async");
  if (reinterpret_cast<uintptr_t>(gmem) % 16 != 0) {
    fprintf(stderr, "cp.async: global source not 16-byte aligned\n");
    exit(1);
  }
  const Copy c{smem, gmem, src_bytes};
  if (g_deferred) t_open.push_back(c);
  else do_copy(c);
}
void cp_async_commit() {
  t_groups.push_back(std::move(t_open));
  t_open.clear();
}
template <int N> void cp_async_wait() {
  while (int(t_groups.size()) > N) {
    for (const Copy& c : t_groups.front()) do_copy(c);
    t_groups.erase(t_groups.begin());
  }
}

void atomic_add2(float* p, float a, float b) {
  std::lock_guard<std::mutex> lock(g_atomic);
  p[0] += a;
  p[1] += b;
}

#define ATTN_EMULATE
#include "attention.cu"

// ---- launching ------------------------------------------------------------------------------------

template <typename Kernel, typename... Args>
void emu_launch(EmuDim grid, int threads, size_t smem_bytes, Kernel kernel, Args... args) {
  g_smem_bytes = smem_bytes;
  gridDim = grid;
  blockDim = EmuDim{unsigned(threads), 1, 1};
  for (unsigned by = 0; by < grid.y; ++by)
    for (unsigned bx = 0; bx < grid.x; ++bx) {
      blockIdx = EmuDim{bx, by, 0};
      std::memset(smem_raw, 0xff, sizeof(smem_raw));  // NaN: a read of unwritten shared memory shows
      g_block.block = std::make_unique<std::barrier<>>(threads);
      g_block.warp.clear();
      for (int w = 0; w < threads / 32; ++w) g_block.warp.push_back(std::make_unique<std::barrier<>>(32));
      g_block.slots.assign(threads / 32, WarpSlots{});
      std::vector<std::thread> pool;
      for (int t = 0; t < threads; ++t)
        pool.emplace_back([=] {
          threadIdx = EmuDim{unsigned(t), 0, 0};
          t_lane = t % 32;
          t_warp = t / 32;
          t_groups.clear();
          t_open.clear();
          kernel(args...);
          if (!t_groups.empty() || !t_open.empty()) {
            fprintf(stderr, "thread %d exits with cp.async copies never waited for\n", t);
            exit(1);
          }
        });
      for (auto& th : pool) th.join();
    }
}

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
