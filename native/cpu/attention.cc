// Scaled dot-product attention on the CPU, blocked over queries, with the products in gemm_f32.
//
// Forward, per (batch, head, block of kQueryBlock queries):
//   S = scale · Q_blk Kᵀ     (bq × n, n = keys the block's last query sees: causal blocks skip the
//                             keys no query of theirs sees)
//   P = softmax(masked S)    row by row; lse = max + log(sum) is saved per query
//   O_blk = drop(P) V        drop(P) = P ∘ M, M = Philox keep mask / (1 - p) (identity when p = 0)
// Backward, per (batch, head), the blocks in order (dK, dV accumulate over them):
//   P = exp(masked S - lse)  recomputed, flash-attention style, and M recomputed from (seed, offset)
//   dV += drop(P)ᵀ dO,  dP = (dO Vᵀ) ∘ M,  dS = P ∘ (dP - rowsum(P ∘ dP)) · scale,
//   dQ = dS K,  dK += dSᵀ Q
//
// Recomputing P instead of saving it: saving costs B·H·T² floats per layer (12.6 MB per layer,
// 150 MB for GPT-2 124M at B=4, T=256, growing with T²) to spare one of the five products of
// the backward (plus its exp), about a fifth of the backward's work; the backward then works
// from q, k, v and B·H·T floats of lse, like the CUDA twin. Measured on one AVX-512 core for
// B=4, H=12, T=256, D=64, causal: forward 6.7 ms, backward 11.7 ms (~60 GFLOP/s of useful work);
// with dropout 0.1 on the weights 9.9 and 16.2 ms.
//
// bf16 precision (AttnDims::precision) rounds q, k, v (and dout) to bf16 into contiguous copies
// and runs the same float32 kernels on them: what bf16 autocast's attention computes, up to the
// rounding of its products (the CUDA twin's tensor cores also round P and dS to bf16).
//
// Threads take whole work items (query blocks forward, (batch, key/value head) pairs backward, so
// that dK and dV have one writer), and gemm_f32 runs single-threaded inside them.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "../ops/matmul.h"
#include "../ops/attention.h"
#include "rows.h"
#include "parallel.h"

namespace lowrank {
namespace cpu {
namespace {

// Rows per query block: large enough for the gemm micro-kernels, small enough that the
// bq × Tk score block of each thread stays in L2 for GPT-2's 1024 positions.
constexpr int64_t kQueryBlock = 64;

// Keys query i sees: keys j <= Tk - Tq + i when causal (query i is at that absolute position).
int64_t visible_keys(const AttnDims& d, int64_t i) { return d.causal ? d.Tk - d.Tq + i + 1 : d.Tk; }

// The first key query i sees: 0, or the start of its sliding window.
int64_t first_key(const AttnDims& d, int64_t i) { return d.window > 0 ? std::max<int64_t>(0, d.Tk - d.Tq + i - d.window + 1) : 0; }

// Whether query i sees key j (< Tk): inside its causal window and not padded.
bool sees(const AttnDims& d, int64_t i, int64_t j, const int32_t* keep) {
  return j >= first_key(d, i) && j < visible_keys(d, i) && (!keep || keep[j]);
}

// Masks one row of n scores of query i: causally hidden, out-of-window and padded keys get -inf.
// A row left with no finite score gets probability 0 everywhere (see attention.h).
void mask_row(const AttnDims& d, int64_t i, float* s, int64_t n, const int32_t* keep) {
  const float ninf = -std::numeric_limits<float>::infinity();
  if (!keep && d.window == 0) {  // only the causally hidden tail: no test per key
    std::fill(s + std::clamp<int64_t>(visible_keys(d, i), 0, n), s + n, ninf);
    return;
  }
  for (int64_t j = 0; j < n; ++j) s[j] = sees(d, i, j, keep) ? s[j] : ninf;
}

// dS of one row of query i: ds[j] = p[j]·(ds[j] - delta)·scale where query i sees key j, else
// exactly 0: a masked score is a constant -inf, so its gradient is 0 even in a row whose P is NaN
// (0·NaN would otherwise spread that row's NaN into the dK of keys it never saw).
void score_grad_row(const AttnDims& d, int64_t i, const float* p, float* ds, int64_t n, float delta, const int32_t* keep) {
  if (!keep && d.window == 0) {  // keys [0, visible) seen, the rest hidden: no test per key
    const int64_t seen = std::clamp<int64_t>(visible_keys(d, i), 0, n);
    for (int64_t j = 0; j < seen; ++j) ds[j] = p[j] * (ds[j] - delta) * d.scale;
    std::fill(ds + seen, ds + n, 0.0f);
    return;
  }
  for (int64_t j = 0; j < n; ++j) ds[j] = sees(d, i, j, keep) ? p[j] * (ds[j] - delta) * d.scale : 0.0f;
}

struct QueryBlock {
  int64_t b, h, i0, bq, n;  // batch, head, first query, queries, keys seen
};

QueryBlock query_block(const AttnDims& d, int64_t bh, int64_t qb) {
  const int64_t i0 = qb * kQueryBlock, i1 = std::min(d.Tq, i0 + kQueryBlock);
  return {bh / d.H, bh % d.H, i0, i1 - i0, visible_keys(d, i1 - 1)};
}

// S (bq × n, row stride n) = scale · Q_blk K[0:n]ᵀ, masked.
void masked_scores(const AttnDims& d, const QueryBlock& blk, AttnView q, AttnView k, const int32_t* key_keep, float* S) {
  gemm_f32(false, true, blk.bq, blk.n, d.D, d.scale, q.row(blk.b, blk.h, blk.i0), q.st, 0, k.row(blk.b, blk.h / d.kv_group, 0),
           k.st, 0, 0.0f, S, blk.n, 0, 1);
  const int32_t* keep = key_keep ? key_keep + blk.b * d.Tk : nullptr;
  for (int64_t r = 0; r < blk.bq; ++r) mask_row(d, blk.i0 + r, S + r * blk.n, blk.n, keep);
}

int64_t query_blocks(const AttnDims& d) { return (d.Tq + kQueryBlock - 1) / kQueryBlock; }

std::vector<float>& scratch(int which) {
  static thread_local std::vector<float> buffers[3];
  return buffers[which];
}

// Applies attention dropout to src (probabilities or their gradient) of query i into dst: element j
// is weight ((b*H + h)*Tq + i)*Tk + j of the stream (see AttnDims). With `also` (not null) the same
// mask scales it in place: one Philox evaluation for drop(P) and dP in the backward.
void drop_rows(const AttnDims& d, int64_t b, int64_t h, int64_t i, const float* src, float* dst, float* also, int64_t n) {
  const uint64_t first = uint64_t(((b * d.H + h) * d.Tq + i) * d.Tk);
  dropout_run2(src, dst, also, also, n, d.dropout, 1.0f / (1.0f - d.dropout), d.seed, d.offset, first);
}

// A contiguous [B, heads, T, D] copy of x rounded to bf16, in buf (kept by the caller across calls:
// decoding rounds the whole KV cache for every token, and a fresh buffer of that size would be
// mapped, faulted in and unmapped each time).
AttnView bf16_rounded(const AttnDims& d, AttnView x, int64_t heads, int64_t T, std::vector<float>& buf) {
  if (buf.size() < size_t(d.B * heads * T * d.D)) buf.resize(size_t(d.B * heads * T * d.D));
  float* dst = buf.data();
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t t = 0; t < T; ++t, dst += d.D) {
        const float* src = x.row(b, h, t);
        for (int64_t i = 0; i < d.D; ++i) dst[i] = bf16_to_f32(f32_to_bf16(src[i]));
      }
  return AttnView{buf.data(), heads * T * d.D, T * d.D, d.D};
}

AttnDims float32_dims(const AttnDims& d) {
  AttnDims f = d;
  f.precision = DType::F32;
  return f;
}

}  // namespace

void attention_forward_f32(const AttnDims& d, AttnView q, AttnView k, AttnView v, const int32_t* key_keep, AttnView out,
                           float* lse) {
  if (d.precision == DType::BF16) {
    static thread_local std::vector<float> qr, kr, vr;
    const int64_t kv_heads = d.H / d.kv_group;
    return attention_forward_f32(float32_dims(d), bf16_rounded(d, q, d.H, d.Tq, qr), d.kv_rounded ? k : bf16_rounded(d, k, kv_heads, d.Tk, kr),
                                 d.kv_rounded ? v : bf16_rounded(d, v, kv_heads, d.Tk, vr), key_keep, out, lse);
  }
  const int64_t nqb = query_blocks(d);
  // Decoding one token (Tq = 1) over a short cache is a few µs of work per head: below ~1M
  // multiply-adds in all (GPT-2 124M up to ~640 positions) one thread does it before a woken
  // worker would have started, and far sooner when another process holds the second core.
  const int64_t items = d.B * d.H * nqb, work = items * std::min(d.Tq, kQueryBlock) * d.Tk * d.D * 2;
  parallel_for(items, work < (int64_t(1) << 20) ? items : 1, [&](int64_t w0, int64_t w1) {
    std::vector<float>& S = scratch(0);
    for (int64_t w = w0; w < w1; ++w) {
      const QueryBlock blk = query_block(d, w / nqb, w % nqb);
      S.resize(size_t(blk.bq * blk.n));
      masked_scores(d, blk, q, k, key_keep, S.data());
      float* lse_blk = lse + (blk.b * d.H + blk.h) * d.Tq + blk.i0;
      for (int64_t r = 0; r < blk.bq; ++r) {
        float* s = S.data() + r * blk.n;
        const float m = row_max(s, blk.n);
        if (m == -std::numeric_limits<float>::infinity()) {  // nothing to attend to: zeros
          std::fill(s, s + blk.n, 0.0f);
          lse_blk[r] = m;
          continue;
        }
        const float sum = row_exp_sum(s, blk.n, m, 1.0f, s);
        const float inv = 1.0f / sum;
        for (int64_t j = 0; j < blk.n; ++j) s[j] *= inv;
        lse_blk[r] = m + std::log(sum);
        if (d.dropout > 0) drop_rows(d, blk.b, blk.h, blk.i0 + r, s, s, nullptr, blk.n);
      }
      gemm_f32(false, false, blk.bq, d.D, blk.n, 1.0f, S.data(), blk.n, 0, v.row(blk.b, blk.h / d.kv_group, 0), v.st, 0, 0.0f,
               out.row(blk.b, blk.h, blk.i0), out.st, 0, 1);
    }
  });
}

void attention_backward_f32(const AttnDims& d, AttnView q, AttnView k, AttnView v, const int32_t* key_keep,
                            const float* lse, AttnView out, AttnView dout, AttnView dq, AttnView dk, AttnView dv) {
  if (d.precision == DType::BF16) {
    static thread_local std::vector<float> qr, kr, vr, gr;
    const int64_t kv_heads = d.H / d.kv_group;
    return attention_backward_f32(float32_dims(d), bf16_rounded(d, q, d.H, d.Tq, qr), d.kv_rounded ? k : bf16_rounded(d, k, kv_heads, d.Tk, kr),
                                  d.kv_rounded ? v : bf16_rounded(d, v, kv_heads, d.Tk, vr), key_keep, lse, out,
                                  bf16_rounded(d, dout, d.H, d.Tq, gr), dq, dk, dv);
  }
  // out is unused here: delta comes from P and dP below
  // Threads take whole (batch, key/value head) pairs, so that dK and dV have one writer: the
  // query heads of a group add into them one after the other.
  const int64_t nqb = query_blocks(d), kv_heads = d.H / d.kv_group;
  parallel_for(d.B * kv_heads, 1, [&](int64_t bj0, int64_t bj1) {
    std::vector<float>& P = scratch(0);
    std::vector<float>& dS = scratch(1);
    std::vector<float>& Pd = scratch(2);  // drop(P), with dropout only
    for (int64_t bj = bj0; bj < bj1; ++bj) {
      const int64_t b = bj / kv_heads, j = bj % kv_heads;
      for (int64_t t = 0; t < d.Tk; ++t) {
        std::fill(dk.row(b, j, t), dk.row(b, j, t) + d.D, 0.0f);
        std::fill(dv.row(b, j, t), dv.row(b, j, t) + d.D, 0.0f);
      }
      for (int64_t w = 0; w < d.kv_group * nqb; ++w) {  // the group's query heads, each block by block
        const int64_t h = j * d.kv_group + w / nqb, bh = b * d.H + h;
        const QueryBlock blk = query_block(d, bh, w % nqb);
        const int64_t n = blk.n;
        P.resize(size_t(blk.bq * n));
        dS.resize(size_t(blk.bq * n));
        masked_scores(d, blk, q, k, key_keep, P.data());
        const float* lse_blk = lse + bh * d.Tq + blk.i0;
        for (int64_t r = 0; r < blk.bq; ++r) {
          float* p = P.data() + r * n;
          if (lse_blk[r] == -std::numeric_limits<float>::infinity())
            std::fill(p, p + n, 0.0f);
          else
            row_exp_sum(p, n, lse_blk[r], 1.0f, p);
        }
        const float* dO = dout.row(b, h, blk.i0);
        // dP = (dO V[0:n]ᵀ) ∘ M; with dropout one mask evaluation gives both drop(P) and dP
        gemm_f32(false, true, blk.bq, n, d.D, 1.0f, dO, dout.st, 0, v.row(b, j, 0), v.st, 0, 0.0f, dS.data(), n, 0, 1);
        const float* drop_p = P.data();
        if (d.dropout > 0) {
          Pd.resize(P.size());
          for (int64_t r = 0; r < blk.bq; ++r)
            drop_rows(d, b, h, blk.i0 + r, P.data() + r * n, Pd.data() + r * n, dS.data() + r * n, n);
          drop_p = Pd.data();
        }
        // dV[0:n] += drop(P)ᵀ dO
        gemm_f32(true, false, n, d.D, blk.bq, 1.0f, drop_p, n, 0, dO, dout.st, 0, 1.0f, dv.row(b, j, 0), dv.st, 0, 1);
        // dS = P ∘ (dP - rowsum(P ∘ dP)) · scale, in place
        for (int64_t r = 0; r < blk.bq; ++r) {
          const float* p = P.data() + r * n;
          float* ds = dS.data() + r * n;
          score_grad_row(d, blk.i0 + r, p, ds, n, row_dot(p, ds, n), key_keep ? key_keep + b * d.Tk : nullptr);
        }
        // dQ_blk = dS K[0:n];  dK[0:n] += dSᵀ Q_blk
        gemm_f32(false, false, blk.bq, d.D, n, 1.0f, dS.data(), n, 0, k.row(b, j, 0), k.st, 0, 0.0f,
                 dq.row(b, h, blk.i0), dq.st, 0, 1);
        gemm_f32(true, false, n, d.D, blk.bq, 1.0f, dS.data(), n, 0, q.row(b, h, blk.i0), q.st, 0, 1.0f, dk.row(b, j, 0),
                 dk.st, 0, 1);
      }
    }
  });
}

}  // namespace cpu
}  // namespace lowrank
