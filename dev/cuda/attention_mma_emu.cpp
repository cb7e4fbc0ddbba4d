// Runs the addon's bf16 tensor-core attention kernels (native/cuda/attention_mma.cu, AttnDims::
// precision BF16) on the CPU through the emulated CUDA surface of attention_emu.h, to check what
// the addon adds to dev/cuda/attention.cu's kernels without a GPU: strided float32 views (the
// [B, T, H, D] heads of a fused qkv, padded row strides), the sliding window, the key-tile and
// query-tile ranges, Tq < Tk, key padding with empty rows, dropout from the addon's Philox stream.
//
//   g++ -O1 -std=c++20 -pthread -I/usr/local/cuda/include dev/cuda/attention_mma_emu.cpp -o /tmp/attn_mma_emu
//   /tmp/attn_mma_emu
//
// Each case is checked against a float64 reference on the bf16-rounded inputs (max |err| / max
// |ref| below 2e-2, as attention_emu.cpp: the emulated mma sums in another order than the tensor
// cores, so indexing and synchronization are under test, not the last bits of rounding); the
// floats between and after the view's rows (the padding of a row stride) must stay untouched.

#include "attention_emu.h"

#define ATTN_EMULATE
#include "../../native/cuda/attention_mma.cu"

using lowrank::AttnDims;
using lowrank::AttnView;

namespace {

struct Case {
  const char* name;
  int B, H, Tq, Tk, D;
  bool causal;
  int window;
  bool padding;
  float dropout;
  bool fused;  // q, k, v as the heads of one [B, T, 3, H, D] buffer (GPT-2's c_attn); else each
               // [B, T, H, D] with 4 floats of padding after each row of H heads
  bool stream_aligned = false;  // dropout offset a multiple of 64: with Tk a multiple of 64 the
                                // backward computes each tile's keep bits together
};

const float kNaN = std::numeric_limits<float>::quiet_NaN();

// A strided [B, H, T, D] operand: its buffer (NaN where no element lives) and the view into it.
struct Operand {
  std::vector<float>* buf;
  size_t at;  // first element
  int64_t sb, sh, st;
  AttnView view() const { return AttnView{buf->data() + at, sb, sh, st}; }
  float& el(int b, int h, int t, int d) const { return (*buf)[at + b * sb + h * sh + t * st + d]; }
};

float bf16_round(float x) { return __bfloat162float(__float2bfloat16(x)); }

int g_fail = 0;

void check(const Case& c, const char* what, const std::vector<double>& got, const std::vector<double>& ref) {
  double maxerr = 0, maxref = 0;
  bool ok = true;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (std::isinf(ref[i]) || std::isinf(got[i])) {
      ok = ok && got[i] == ref[i];
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
  const bool pass = ok && rel < 2e-2;
  g_fail += !pass;
  printf("  %s %-46s %-4s rel %.2e%s\n", pass ? "PASS" : "FAIL", c.name, what, rel, ok ? "" : " [NaN/inf mismatch]");
}

void run_case(const Case& c, std::mt19937& rng) {
  const int B = c.B, H = c.H, Tq = c.Tq, Tk = c.Tk, D = c.D;
  AttnDims d{B, H, Tq, Tk, D, 1.0f / std::sqrt(float(D)), c.causal, c.window, c.dropout, rng(), uint64_t(rng()) * 3 & (c.stream_aligned ? ~uint64_t(63) : ~uint64_t(0)),
             lowrank::DType::BF16};
  // Inputs and outputs in NaN-filled buffers, so a read outside a view shows as NaN and a write
  // outside one is caught by the untouched-padding check below.
  const int pad = 4;
  std::vector<float> fused, qb, kb, vb, gb, ob, dqb, dkb, dvb;
  auto plain = [&](std::vector<float>& buf, int T) {  // [B, T, H, D + pad/H...]: rows of H·D + pad floats
    const int64_t st = int64_t(H) * D + pad;
    buf.assign(size_t(B) * T * st, kNaN);
    return Operand{&buf, 0, T * st, D, st};
  };
  Operand q, k, v;
  if (c.fused) {
    const int64_t st = 3 * int64_t(H) * D;
    fused.assign(size_t(B) * Tq * st, kNaN);
    q = Operand{&fused, 0, Tq * st, D, st};
    k = Operand{&fused, size_t(H) * D, Tk * st, D, st};
    v = Operand{&fused, 2 * size_t(H) * D, Tk * st, D, st};
  } else {
    q = plain(qb, Tq), k = plain(kb, Tk), v = plain(vb, Tk);
  }
  Operand g = plain(gb, Tq), o = plain(ob, Tq), dq = plain(dqb, Tq), dk = plain(dkb, Tk), dv = plain(dvb, Tk);
  std::normal_distribution<float> normal(0.f, 1.f);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h) {
      for (int t = 0; t < Tq; ++t)
        for (int x = 0; x < D; ++x) q.el(b, h, t, x) = 1.5f * normal(rng), g.el(b, h, t, x) = normal(rng);
      for (int t = 0; t < Tk; ++t)
        for (int x = 0; x < D; ++x) k.el(b, h, t, x) = 1.5f * normal(rng), v.el(b, h, t, x) = normal(rng);
    }
  std::vector<int32_t> keep(size_t(B) * Tk, 1);
  for (int b = 0; b < B; ++b)
    for (int j = 0; j < Tk; ++j)
      if (j < 5 * b + 3 || j % 17 == 11) keep[size_t(b) * Tk + j] = 0;  // batch 0's first 3 queries see nothing
  const int32_t* kp = c.padding ? keep.data() : nullptr;

  // float64 reference on the bf16-rounded inputs.
  const size_t nq = size_t(B) * H * Tq * D, nk = size_t(B) * H * Tk * D, rows = size_t(B) * H * Tq;
  std::vector<double> ro(nq, 0.0), rl(rows, -INFINITY), rdq(nq, 0.0), rdk(nk, 0.0), rdv(nk, 0.0);
  auto qi = [&](int b, int h, int t) { return ((size_t(b) * H + h) * Tq + t) * D; };
  auto ki = [&](int b, int h, int t) { return ((size_t(b) * H + h) * Tk + t) * D; };
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h)
      for (int i = 0; i < Tq; ++i) {
        const int pos = Tk - Tq + i;
        std::vector<double> p(Tk, 0.0), s(Tk, -INFINITY);
        double m = -INFINITY;
        for (int j = 0; j < Tk; ++j) {
          if ((c.causal && j > pos) || (c.window > 0 && j <= pos - c.window) || (kp && kp[size_t(b) * Tk + j] == 0)) continue;
          double acc = 0;
          for (int x = 0; x < D; ++x) acc += double(bf16_round(q.el(b, h, i, x))) * bf16_round(k.el(b, h, j, x));
          s[j] = acc * d.scale;
          m = std::max(m, s[j]);
        }
        if (m == -INFINITY) continue;  // nothing visible: O = 0, lse = -inf, no gradient
        double z = 0;
        for (int j = 0; j < Tk; ++j) z += (p[j] = std::exp(s[j] - m));
        const size_t r = (size_t(b) * H + h) * Tq + i;
        rl[r] = m + std::log(z);
        std::vector<double> mf(Tk), dp(Tk);
        for (int j = 0; j < Tk; ++j) {
          p[j] /= z;
          mf[j] = c.dropout > 0 && !lowrank::philox_keep(d.seed, d.offset, ((uint64_t(b) * H + h) * Tq + i) * Tk + j, c.dropout)
                      ? 0.0
                      : c.dropout > 0 ? 1.0 / (1.0f - c.dropout) : 1.0;
          for (int x = 0; x < D; ++x) ro[qi(b, h, i) + x] += p[j] * mf[j] * bf16_round(v.el(b, h, j, x));
        }
        double delta = 0;
        for (int x = 0; x < D; ++x) delta += double(g.el(b, h, i, x)) * ro[qi(b, h, i) + x];
        for (int j = 0; j < Tk; ++j) {
          if (p[j] == 0) continue;
          double acc = 0;
          for (int x = 0; x < D; ++x) acc += double(bf16_round(g.el(b, h, i, x))) * bf16_round(v.el(b, h, j, x));
          const double ds = p[j] * (acc * mf[j] - delta) * d.scale;
          for (int x = 0; x < D; ++x) {
            rdq[qi(b, h, i) + x] += ds * bf16_round(k.el(b, h, j, x));
            rdk[ki(b, h, j) + x] += ds * bf16_round(q.el(b, h, i, x));
            rdv[ki(b, h, j) + x] += p[j] * mf[j] * bf16_round(g.el(b, h, i, x));
          }
        }
      }

  namespace lc = lowrank::cuda;
  std::vector<float> lse(rows, kNaN), delta(rows, kNaN);
  const unsigned BH = unsigned(B * H);
  if (D == 64)
    emu_launch(EmuDim{BH, unsigned((Tq + 63) / 64), 1}, 128, lc::forward_smem<64, lc::kFwdWarps>(),
               lc::mma_forward_kernel<64, lc::kFwdWarps>, d, q.view(), k.view(), v.view(), kp, o.view(), lse.data());
  else
    emu_launch(EmuDim{BH, unsigned((Tq + 63) / 64), 1}, 128, lc::forward_smem<128, lc::kFwdWarps>(),
               lc::mma_forward_kernel<128, lc::kFwdWarps>, d, q.view(), k.view(), v.view(), kp, o.view(), lse.data());
  // delta as attention.cu's flash_delta_kernel computes it: dO · O in float32
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h)
      for (int i = 0; i < Tq; ++i) {
        float acc = 0;
        for (int x = 0; x < D; ++x) acc += o.el(b, h, i, x) * g.el(b, h, i, x);
        delta[(size_t(b) * H + h) * Tq + i] = acc;
      }
  emu_launch(EmuDim{unsigned((rows + 7) / 8), 1, 1}, 256, 0, lc::zero_rows_kernel, d, dq.view(), int64_t(Tq));
  if (D == 64)
    emu_launch(EmuDim{BH, unsigned((Tk + 63) / 64), 1}, 128, lc::backward_smem<64>(), lc::mma_backward_kernel<64>, d,
               q.view(), k.view(), v.view(), kp, (const float*)lse.data(), (const float*)delta.data(), g.view(),
               dq.view(), dk.view(), dv.view());
  else
    emu_launch(EmuDim{BH, unsigned((Tk + 63) / 64), 1}, 128, lc::backward_smem<128>(), lc::mma_backward_kernel<128>,
               d, q.view(), k.view(), v.view(), kp, (const float*)lse.data(), (const float*)delta.data(), g.view(),
               dq.view(), dk.view(), dv.view());

  auto gather = [&](const Operand& x, int T) {
    std::vector<double> out(size_t(B) * H * T * D);
    for (int b = 0; b < B; ++b)
      for (int h = 0; h < H; ++h)
        for (int t = 0; t < T; ++t)
          for (int e = 0; e < D; ++e) out[((size_t(b) * H + h) * T + t) * D + e] = x.el(b, h, t, e);
    return out;
  };
  check(c, "O", gather(o, Tq), ro);
  check(c, "lse", std::vector<double>(lse.begin(), lse.end()), rl);
  check(c, "dQ", gather(dq, Tq), rdq);
  check(c, "dK", gather(dk, Tk), rdk);
  check(c, "dV", gather(dv, Tk), rdv);
  // The row padding of every output stays NaN: nothing was written outside the views.
  bool untouched = true;
  for (const std::vector<float>* buf : {&ob, &dqb, &dkb, &dvb})
    for (size_t i = 0; i < buf->size(); ++i)
      if (i % (size_t(H) * D + pad) >= size_t(H) * D) untouched = untouched && std::isnan((*buf)[i]);
  g_fail += !untouched;
  printf("  %s %-46s writes stay inside the views\n", untouched ? "PASS" : "FAIL", c.name);
}

}  // namespace

int main() {
  printf("addon bf16 mma attention kernels (native/cuda/attention_mma.cu) on the CPU emulator\n");
  std::mt19937 rng(11);
  const Case cases[] = {
      // name, B, H, Tq, Tk, D, causal, window, padding, dropout, fused[, stream_aligned]
      {"D64 B1 H2 T77 causal, fused qkv", 1, 2, 77, 77, 64, true, 0, false, 0.f, true},
      {"D64 B2 H1 Tq1 Tk100 decode", 2, 1, 1, 100, 64, true, 0, false, 0.f, false},
      {"D64 B1 H1 Tq50 Tk130 causal", 1, 1, 50, 130, 64, true, 0, false, 0.f, false},
      {"D64 B2 H1 T70 non-causal padding dropout", 2, 1, 70, 70, 64, false, 0, true, 0.1f, false},
      {"D64 B2 H2 T77 causal padding dropout, fused", 2, 2, 77, 77, 64, true, 0, true, 0.1f, true},
      {"D64 B1 H2 T150 causal window 40", 1, 2, 150, 150, 64, true, 40, false, 0.f, false},
      {"D64 B2 H1 Tq20 Tk150 window 33 padding dropout", 2, 1, 20, 150, 64, true, 33, true, 0.2f, false},
      {"D64 B1 H1 T130 window 1", 1, 1, 130, 130, 64, true, 1, false, 0.f, false},
      {"D128 B1 H1 T129 causal", 1, 1, 129, 129, 128, true, 0, false, 0.f, false},
      {"D128 B2 H1 T70 causal padding dropout window 25", 2, 1, 70, 70, 128, true, 25, true, 0.1f, false},
      {"D128 B1 H1 Tq1 Tk100 decode", 1, 1, 1, 100, 128, true, 0, false, 0.f, false},
      {"D128 B1 H2 T45 non-causal, fused qkv", 1, 2, 45, 45, 128, false, 0, false, 0.f, true},
      {"D64 B2 H2 T128 causal padding dropout, aligned", 2, 2, 128, 128, 64, true, 0, true, 0.1f, false, true},
      {"D128 B1 H2 Tq70 Tk192 dropout, aligned", 1, 2, 70, 192, 128, true, 0, false, 0.2f, false, true},
  };
  for (const Case& c : cases) run_case(c, rng);
  printf("%s: %d failed checks\n", g_fail ? "FAIL" : "ALL PASS", g_fail);
  return g_fail ? 1 : 0;
}
