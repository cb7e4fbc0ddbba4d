// The addon's CUDA LoRA kernels (native/cuda/lora.cu, rewritten by transform.mjs) on the CPU
// emulator against a float64 reference, before any GPU sees them: odd and aligned shapes, ranks
// below, at and above one tile (16), dropout on and off (aligned and unaligned stream groups),
// each gradient alone, and out written over y; and the merge into float32 and bfloat16 weights in
// both layouts. The GPU run compares the same kernels with the CPU twin (test/gpu/twins.test.ts).
// Built and run by run-emu.sh.
#include <array>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "lora_emu.cc"

using namespace lowrank;

namespace {

struct Case {
  int64_t N, k, r, d;
  float p;
  uint64_t offset;
  bool gx = true, gA = true, gB = true, in_place = false;
};

double rel_l2(const std::vector<float>& got, const std::vector<double>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    num += (got[i] - want[i]) * (got[i] - want[i]);
    den += want[i] * want[i];
  }
  return std::sqrt(num / (den > 0 ? den : 1));
}

bool run(const Case& c) {
  std::mt19937 rng(unsigned(c.N * 131 + c.k * 17 + c.r * 7 + c.d));
  std::normal_distribution<float> nd;
  auto fill = [&](int64_t n) { std::vector<float> v(static_cast<size_t>(n)); for (auto& e : v) e = nd(rng); return v; };
  const auto x = fill(c.N * c.k), A = fill(c.r * c.k), B = fill(c.d * c.r), y = fill(c.N * c.d), g = fill(c.N * c.d);
  const float s = 1.7f, mask_scale = c.p >= 1 ? 0.0f : 1.0f / (1.0f - c.p);
  const LoraDims d{c.N, c.k, c.r, c.d, s, c.p, mask_scale, 0x1234abcdULL, c.offset};

  // float64 reference, mask from philox_keep
  auto mult = [&](int64_t i, int64_t col) { return c.p > 0 ? (philox_keep(d.seed, d.offset, uint64_t(i * c.k + col), c.p) ? double(mask_scale) : 0.0) : 1.0; };
  std::vector<double> u(size_t(c.N * c.r)), out(size_t(c.N * c.d)), v(size_t(c.N * c.r)), gx(size_t(c.N * c.k)), gA(size_t(c.r * c.k)), gB(size_t(c.d * c.r));
  for (int64_t i = 0; i < c.N; ++i)
    for (int64_t j = 0; j < c.r; ++j) {
      double a = 0, b = 0;
      for (int64_t q = 0; q < c.k; ++q) a += x[i * c.k + q] * mult(i, q) * A[j * c.k + q];
      for (int64_t q = 0; q < c.d; ++q) b += double(g[i * c.d + q]) * B[q * c.r + j];
      u[i * c.r + j] = a;
      v[i * c.r + j] = b;
    }
  for (int64_t i = 0; i < c.N; ++i)
    for (int64_t q = 0; q < c.d; ++q) {
      double a = 0;
      for (int64_t j = 0; j < c.r; ++j) a += u[i * c.r + j] * B[q * c.r + j];
      out[i * c.d + q] = y[i * c.d + q] + s * a;
    }
  for (int64_t i = 0; i < c.N; ++i)
    for (int64_t q = 0; q < c.k; ++q) {
      double a = 0;
      for (int64_t j = 0; j < c.r; ++j) a += v[i * c.r + j] * A[j * c.k + q];
      gx[i * c.k + q] = s * a * mult(i, q);
    }
  for (int64_t j = 0; j < c.r; ++j) {
    for (int64_t q = 0; q < c.k; ++q) {
      double a = 0;
      for (int64_t i = 0; i < c.N; ++i) a += v[i * c.r + j] * x[i * c.k + q] * mult(i, q);
      gA[j * c.k + q] = s * a;
    }
    for (int64_t q = 0; q < c.d; ++q) {
      double a = 0;
      for (int64_t i = 0; i < c.N; ++i) a += double(g[i * c.d + q]) * u[i * c.r + j];
      gB[q * c.r + j] = s * a;
    }
  }

  // the kernels; outputs start as NaN so that an element never written shows
  const float nan = std::nanf("");
  std::vector<float> ku(u.size(), nan), kout = c.in_place ? y : std::vector<float>(out.size(), nan);
  cuda::lora_forward_f32(d, x.data(), A.data(), B.data(), c.in_place ? kout.data() : y.data(), kout.data(), ku.data());
  std::vector<float> kgx(gx.size(), nan), kgA(gA.size(), nan), kgB(gB.size(), nan);
  cuda::lora_backward_f32(d, g.data(), x.data(), A.data(), B.data(), ku.data(), c.gx ? kgx.data() : nullptr,
                          c.gA ? kgA.data() : nullptr, c.gB ? kgB.data() : nullptr);

  // float32 against float64: sums of up to max(k, d, N) products, ~1e-7 relative each
  const double tol = 1e-5;
  const double e[5] = {rel_l2(ku, u), rel_l2(kout, out), c.gx ? rel_l2(kgx, gx) : 0, c.gA ? rel_l2(kgA, gA) : 0, c.gB ? rel_l2(kgB, gB) : 0};
  bool ok = true;
  for (double err : e) ok = ok && err <= tol;  // a NaN fails too
  printf("%s N=%lld k=%lld r=%lld d=%lld p=%.2f offset=%llu%s%s%s%s: u %.1e out %.1e gx %.1e gA %.1e gB %.1e\n", ok ? "PASS" : "FAIL",
         (long long)c.N, (long long)c.k, (long long)c.r, (long long)c.d, c.p, (unsigned long long)c.offset, c.gx ? "" : " no-gx",
         c.gA ? "" : " no-gA", c.gB ? "" : " no-gB", c.in_place ? " in-place" : "", e[0], e[1], e[2], e[3], e[4]);
  return ok;
}

// lora_merge into a float32 and a bfloat16 W against float64: float32 within float32 sums; bf16
// within a bf16 ulp of the float64 result plus the float32 sum's error relative to its terms.
bool run_merge(int64_t k, int64_t r, int64_t d, bool transposed) {
  std::mt19937 rng(unsigned(k * 7 + r * 3 + d + transposed));
  std::normal_distribution<float> nd;
  std::vector<float> A(static_cast<size_t>(r * k)), B(static_cast<size_t>(d * r)), W(static_cast<size_t>(d * k));
  for (auto* v : {&A, &B, &W})
    for (auto& e : *v) e = nd(rng);
  std::vector<uint16_t> Wb(W.size());
  for (size_t e = 0; e < W.size(); ++e) Wb[e] = f32_to_bf16(W[e]);
  const int64_t rows = transposed ? k : d, cols = transposed ? d : k;
  const float s = -1.3f;
  std::vector<double> want(W.size()), want_b(W.size()), size(W.size());
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t o = transposed ? c : i, q = transposed ? i : c;  // ΔW[o][q] = Σ_j B[o][j]·A[j][q]
      double acc = 0, abs = 0;
      for (int64_t j = 0; j < r; ++j) {
        acc += double(B[o * r + j]) * A[j * k + q];
        abs += std::fabs(double(B[o * r + j]) * A[j * k + q]);
      }
      const size_t e = size_t(i * cols + c);
      want[e] = W[e] + s * acc;
      want_b[e] = bf16_to_f32(Wb[e]) + s * acc;
      size[e] = std::fabs(W[e]) + std::fabs(s) * abs;
    }
  const LoraMergeDims m{rows, cols, r, s, transposed, cols};
  cuda::lora_merge(m, W.data(), DType::F32, A.data(), B.data());
  cuda::lora_merge(m, Wb.data(), DType::BF16, A.data(), B.data());
  const double err = rel_l2(W, want);
  bool ok = err <= 1e-6;
  for (size_t e = 0; e < W.size(); ++e)
    ok = ok && std::fabs(bf16_to_f32(Wb[e]) - want_b[e]) <= std::fabs(want_b[e]) * std::ldexp(1.0, -8) + size[e] * std::ldexp(1.0, -22);
  printf("%s merge k=%lld r=%lld d=%lld%s: float32 %.1e, bfloat16 within a bf16 ulp\n", ok ? "PASS" : "FAIL", (long long)k, (long long)r,
         (long long)d, transposed ? " transposed" : "", err);
  return ok;
}

// The one-GEMM path's passes (lora_down_aug forward and backward, lora_backward_aug, lora_aug_pack)
// against float64 of the same bf16 roundings: xa's copy of x and its tail exactly (the tail from
// the kernel's own u), u, v, gA, gB and the masked gx update within float32 sums (1e-5).
bool run_aug(const Case& c, bool ones) {
  std::mt19937 rng(unsigned(c.N * 31 + c.k * 5 + c.r * 3 + c.d + ones));
  std::normal_distribution<float> nd;
  auto fill = [&](int64_t n) { std::vector<float> v(static_cast<size_t>(n)); for (auto& e : v) e = nd(rng); return v; };
  const auto x = fill(c.N * c.k), A = fill(c.r * c.k), B = fill(c.d * c.r), g = fill(c.N * c.d), gx0 = fill(c.N * c.k), bias = fill(c.d);
  const float s = 1.7f, mask_scale = 1.0f / (1.0f - c.p);
  const int64_t pad = (c.r + 1 + 7) / 8 * 8, ldx = c.k + pad, ldg = c.d + pad;
  const LoraDims d{c.N, c.k, c.r, c.d, s, c.p, mask_scale, 0x1234abcdULL, c.offset};
  auto mult = [&](int64_t i, int64_t col) { return c.p > 0 ? (philox_keep(d.seed, d.offset, uint64_t(i * c.k + col), c.p) ? double(mask_scale) : 0.0) : 1.0; };
  const uint16_t nan_bits = 0x7fc1;
  std::vector<float> ku(size_t(c.N * c.r), std::nanf("")), kv(ku);
  std::vector<uint16_t> xa(size_t(c.N * ldx), nan_bits), ga(size_t(c.N * ldg), nan_bits);
  const LoraAugDims fwd{c.N, c.k, c.r, ldx, s, ones, false, c.p, mask_scale, d.seed, d.offset};
  const LoraAugDims bwd{c.N, c.d, c.r, ldg, c.p > 0 ? 0.0f : s, false, true, 0.0f, 1.0f, 0, 0};
  cuda::lora_down_aug(fwd, x.data(), A.data(), ku.data(), xa.data());
  cuda::lora_down_aug(bwd, g.data(), B.data(), kv.data(), ga.data());
  std::vector<float> kgx = gx0, kgA(size_t(c.r * c.k), std::nanf("")), kgB(size_t(c.d * c.r), std::nanf(""));
  cuda::lora_backward_aug(d, kv.data(), ku.data(), xa.data(), ldx, ga.data(), ldg, A.data(), c.p > 0 ? kgx.data() : nullptr, kgA.data(), kgB.data());

  std::vector<double> u(ku.size()), v(kv.size()), gx(kgx.size()), gA(kgA.size()), gB(kgB.size());
  bool exact = true;
  for (int64_t i = 0; i < c.N; ++i) {
    for (int64_t j = 0; j < c.r; ++j) {
      double a = 0, b = 0;
      for (int64_t q = 0; q < c.k; ++q) a += x[i * c.k + q] * mult(i, q) * A[j * c.k + q];
      for (int64_t q = 0; q < c.d; ++q) b += double(g[i * c.d + q]) * B[q * c.r + j];
      u[i * c.r + j] = a, v[i * c.r + j] = b;
    }
    for (int64_t q = 0; q < ldx; ++q) {
      const float want = q < c.k ? x[i * c.k + q] : q < c.k + c.r ? s * ku[i * c.r + q - c.k] : (ones && q == c.k + c.r ? 1.0f : 0.0f);
      exact = exact && xa[i * ldx + q] == f32_to_bf16(want);
    }
    for (int64_t q = 0; q < ldg; ++q) {
      const float want = q < c.d ? g[i * c.d + q] : q < c.d + c.r ? bwd.tail_scale * kv[i * c.r + q - c.d] : 0.0f;  // tail_scale 0 with dropout
      exact = exact && ga[i * ldg + q] == f32_to_bf16(want);
    }
  }
  for (int64_t i = 0; i < c.N; ++i)
    for (int64_t q = 0; q < c.k; ++q) {
      double a = 0;
      for (int64_t j = 0; j < c.r; ++j) a += v[i * c.r + j] * A[j * c.k + q];
      gx[i * c.k + q] = gx0[i * c.k + q] + (c.p > 0 ? s * a * mult(i, q) : 0.0);
    }
  for (int64_t j = 0; j < c.r; ++j) {
    for (int64_t q = 0; q < c.k; ++q) {
      double a = 0;
      for (int64_t i = 0; i < c.N; ++i) a += v[i * c.r + j] * double(float(bf16_to_f32(f32_to_bf16(x[i * c.k + q])) * float(mult(i, q))));
      gA[j * c.k + q] = s * a;
    }
    for (int64_t q = 0; q < c.d; ++q) {
      double a = 0;
      for (int64_t i = 0; i < c.N; ++i) a += double(bf16_to_f32(f32_to_bf16(g[i * c.d + q]))) * u[i * c.r + j];
      gB[q * c.r + j] = s * a;
    }
  }
  // lora_aug_pack: A, B and the bias into a buffer of NaN bits, both layouts
  bool packed = true;
  for (bool transposed : {false, true}) {
    const int64_t rows = transposed ? c.k + pad : c.d + pad, ld = transposed ? c.d + pad : c.k + pad;
    std::vector<uint16_t> W(size_t(rows * ld), nan_bits);
    cuda::lora_aug_pack(LoraAugPack{c.k, c.d, c.r, ld, transposed}, W.data(), A.data(), B.data(), ones ? bias.data() : nullptr);
    auto at = [&](int64_t a, int64_t b) { return W[size_t(transposed ? a * ld + b : b * ld + a)]; };
    for (int64_t q = 0; q < c.d; ++q) {
      for (int64_t j = 0; j < c.r; ++j) packed = packed && at(c.k + j, q) == f32_to_bf16(B[q * c.r + j]);
      packed = packed && at(c.k + c.r, q) == f32_to_bf16(ones ? bias[q] : 0.0f);
    }
    for (int64_t j = 0; j < c.r; ++j)
      for (int64_t q = 0; q < c.k; ++q) packed = packed && at(q, c.d + j) == f32_to_bf16(A[j * c.k + q]);
    packed = packed && at(0, 0) == nan_bits;  // the weight's corner untouched
  }
  const double tol = 1e-5;
  const double e[5] = {rel_l2(ku, u), rel_l2(kv, v), rel_l2(kgx, gx), rel_l2(kgA, gA), rel_l2(kgB, gB)};
  bool ok = exact && packed;
  for (double err : e) ok = ok && err <= tol;
  printf("%s one-GEMM N=%lld k=%lld r=%lld d=%lld p=%.2f offset=%llu%s: copies %s, pack %s, u %.1e v %.1e gx %.1e gA %.1e gB %.1e\n",
         ok ? "PASS" : "FAIL", (long long)c.N, (long long)c.k, (long long)c.r, (long long)c.d, c.p, (unsigned long long)c.offset,
         ones ? " +ones" : "", exact ? "exact" : "WRONG", packed ? "exact" : "WRONG", e[0], e[1], e[2], e[3], e[4]);
  return ok;
}

}  // namespace

int main() {
  const Case cases[] = {
      {37, 65, 3, 33, 0.3f, 5},            // odd everything, dropout, rows' stream groups unaligned
      {37, 65, 3, 33, 0.0f, 0},            // no dropout
      {50, 128, 16, 70, 0.25f, 77},        // k a multiple of 64: every row aligned, one full tile
      {50, 128, 16, 70, 0.25f, 64},        // ... and the stream's groups start on row 0's first column
      {41, 200, 17, 19, 0.1f, 3},          // two rank tiles (16 + 1)
      {23, 70, 40, 150, 0.5f, (1ull << 32) - 33},  // three tiles; offset near 2^32
      {300, 20, 1, 9, 0.2f, 11},           // r = 1; several slabs of rows for gA and gB
      {300, 130, 5, 260, 0.0f, 0},         // several slabs and column steps, no dropout
      {9, 33, 4, 12, 1.0f, 2},             // p = 1: everything dropped
      {37, 65, 3, 33, 0.3f, 5, true, false, false},   // gx only (the up kernel masks)
      {37, 65, 3, 33, 0.3f, 5, false, true, false},   // gA only
      {37, 65, 3, 33, 0.3f, 5, false, false, true},   // gB only
      {29, 64, 8, 31, 0.1f, 40, true, true, true, true},  // out written over y
      {70, 192, 16, 136, 0.1f, 128},      // 16-byte accesses everywhere (k, d multiples of 4), rows' groups aligned
      {67, 96, 32, 64, 0.05f, 4},         // 16-byte accesses; rows alternately aligned and not with the stream's groups
      {130, 256, 12, 512, 0.0f, 0},       // 16-byte rank rows of 12 (three loads of four)
      {40, 128, 16, 96, 0.2f, 6},         // k a multiple of 4 but the stream's offset not: scalar accesses for x
      {37, 600, 20, 45, 0.15f, 9},        // k past two of the down kernel's 256-column chunks
      {70, 520, 16, 300, 0.0f, 0},        // ... 16-byte accesses
      {2000, 2304, 16, 24, 0.1f, 0},      // gA's slabs past the 64 rows the block stages at a time
      {1, 1, 1, 1, 0.0f, 0},
      {0, 10, 3, 5, 0.2f, 1},              // no rows: empty sums
  };
  int failed = 0, total = 0;
  for (const Case& c : cases) failed += !run(c), ++total;
  for (const Case& c : cases)
    if (c.N > 0 && c.p < 1) failed += !run_aug(c, c.N % 2 == 1), ++total;
  // odd sizes, a rank past one tile, rows past a block's 32; 16-byte rows (sizes multiples of 4)
  // with ranks within and past one tile; 20,000 rows of 4 (warps walking several row groups); rows
  // of whole 128-column groups (the kernel's aligned path), ranks within and past one tile
  for (bool transposed : {false, true})
    for (const auto& [k, r, d] : {std::array<int64_t, 3>{1, 1, 1}, {65, 17, 33}, {130, 3, 70}, {64, 16, 128}, {68, 20, 36}, {4, 8, 20000},
                                  {256, 16, 70}, {384, 20, 130}})
      failed += !run_merge(k, r, d, transposed), ++total;
  printf("%s: %d of %d cases failed\n", failed ? "FAIL" : "PASS", failed, total);
  return failed ? 1 : 0;
}
