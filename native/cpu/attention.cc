// Scaled dot-product attention on the CPU, blocked over queries, with the products in the GEMMs
// of matmul.h.
//
// Forward, per (batch, head, block of kQueryBlock queries):
//   S = scale · Q_blk Kᵀ     (bq × n, n = keys the block's last query sees: causal blocks skip the
//                             keys no query of theirs sees)
//   E = exp(masked S - max)  row by row, unnormalized; lse = max + log(sum) is saved per query
//   O_blk = (drop(E) V) / sum  drop(E) = E ∘ M, M = Philox keep mask / (1 - p) (identity when
//                             p = 0); dividing O's D columns instead of E's n saves a pass over S
// Backward, per (batch, head), the blocks from the last (dK, dV accumulate over them; the last
// block sees every key, so it writes them and nothing zeroes them first):
//   P = exp(masked S - lse)  recomputed, flash-attention style, and M recomputed from (seed, offset)
//   dP = (dO Vᵀ) ∘ M,  dS = P ∘ (dP - rowsum(P ∘ dP)) · scale,
//   dV += drop(P)ᵀ dO,  dQ = dS K,  dK += dSᵀ Q
// Without a padding mask the keys a query sees are one range (causal, sliding window): exp, the
// dropout mask and the sums run over that range only, and the weights outside it are set to 0.
//
// Recomputing P instead of saving it: saving costs B·H·T² floats per layer (12.6 MB per layer,
// 150 MB for GPT-2 124M at B=4, T=256, growing with T²) to spare one of the five products of
// the backward (plus its exp), about a fifth of the backward's work; the backward then works
// from q, k, v and B·H·T floats of lse, like the CUDA twin.
//
// Precision (AttnDims::precision). float32: the products are gemm_f32 on q, k, v in place.
// bf16, as bf16 autocast's attention and the CUDA twin (attention_mma.cu) compute it: q, k, v and
// dout are rounded to bf16, and so are the weights E (forward), drop(P) and dS (backward) for
// their products; every sum is float32 (the exp, the softmax statistics and dS itself too). With
// kBf16GemmMinQueries queries or more, q, k, v and dout are rounded into bf16 copies (per head,
// inside each thread's work), each block of weights into one bf16 copy, and all five products
// run on gemm_bf16: vdpbf16ps where the CPU has AVX-512 BF16, 1.5-1.8x gemm_f32's rate at these
// 64-row blocks on Zen 5. Fewer queries (decoding a token) round q into a float32 copy and the
// weights in place, and run gemm_f32: the same values and sums in another order, without making a
// bf16 copy of the whole KV cache for every token (a cache that stores rounded keys and values,
// kv_rounded, is read in place).
//
// Measured on 2 Zen 5 cores (AVX-512 BF16, a shared VM: the fastest of 8 rounds of medians,
// bench/attention-cpu/run.sh), GPT-2 124M's layer, B=1, H=12, T=256, D=64, causal, dropout 0.1:
// float32 forward 0.54 ms, backward 1.08 ms; bf16 0.44 and 0.78 ms. Before (rounded float32
// copies of q, k, v, dout by a scalar loop, float32 products for bf16; P normalized in a pass of
// its own; dK, dV zeroed first): float32 0.68 and 1.15 ms, bf16 1.07 and 1.75 ms. At B=4 bf16
// 1.7 and 3.1 ms (before 7.5 and 11.4). See bench/RESULTS.md.
//
// Threads take whole work items (query blocks forward, (batch, key/value head) pairs backward, so
// that dK and dV have one writer), a contiguous run each, and the GEMMs run single-threaded
// inside them.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "../ops/matmul.h"
#include "../ops/attention.h"
#include "bf16_load.h"
#include "rows.h"
#include "parallel.h"
#include "simd.h"

#ifdef LOWRANK_X86
#include <immintrin.h>
// GCC 12 reports its own AVX-512 headers (the self-initialized _mm512_undefined_* values behind
// reduce_max, reduce_add, srli and cvtepi32_epi16) as reading uninitialized data: a false positive.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace lowrank {
namespace cpu {
namespace {

// Rows per query block: large enough for the gemm micro-kernels, small enough that the
// bq × Tk score block of each thread stays in L2 for GPT-2's 1024 positions.
constexpr int64_t kQueryBlock = 64;

// With bf16 precision, at least this many queries take the bf16 GEMMs on bf16 copies (see above).
constexpr int64_t kBf16GemmMinQueries = 16;

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Keys query i sees: keys j <= Tk - Tq + i when causal (query i is at that absolute position).
int64_t visible_keys(const AttnDims& d, int64_t i) { return d.causal ? d.Tk - d.Tq + i + 1 : d.Tk; }

// The first key query i sees: 0, or the start of its sliding window.
int64_t first_key(const AttnDims& d, int64_t i) { return d.window > 0 ? std::max<int64_t>(0, d.Tk - d.Tq + i - d.window + 1) : 0; }

// Whether query i sees key j (< Tk): inside its causal window and not padded.
bool sees(const AttnDims& d, int64_t i, int64_t j, const int32_t* keep) {
  return j >= first_key(d, i) && j < visible_keys(d, i) && (!keep || keep[j]);
}

// The row loops below, at the widest instruction set the CPU has: rows.h's portable reductions
// and loops compile for baseline x86-64 here (SSE).
#ifdef LOWRANK_X86
// f(j, m) over a row of n in steps of 16 lanes, the lanes of mask m (all but in the tail: plain
// loads and stores there, masked ones cost more on AMD).
template <class F>
LR_TARGET_AVX512 inline void steps16(int64_t n, F f) {
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) f(j, __mmask16(0xffff));
  if (j < n) f(j, __mmask16((1u << (n - j)) - 1));
}

LR_TARGET_AVX512 inline __m512 load(const float* p, __mmask16 m) {
  return m == 0xffff ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(m, p);
}

LR_TARGET_AVX512 inline void store(float* p, __mmask16 m, __m512 v) {
  if (m == 0xffff)
    _mm512_storeu_ps(p, v);
  else
    _mm512_mask_storeu_ps(p, m, v);
}

LR_TARGET_AVX512 float dot_avx512(const float* a, const float* b, int64_t n) {
  __m512 acc = _mm512_setzero_ps();
  steps16(n, [&](int64_t j, __mmask16 m) LR_TARGET_AVX512 { acc = _mm512_fmadd_ps(load(a + j, m), load(b + j, m), acc); });
  return _mm512_reduce_add_ps(acc);
}

// ds = p · (ds - delta) · scale
LR_TARGET_AVX512 void score_grad_avx512(const float* p, float* ds, int64_t n, float delta, float scale) {
  const __m512 vd = _mm512_set1_ps(delta), vs = _mm512_set1_ps(scale);
  steps16(n, [&](int64_t j, __mmask16 m) LR_TARGET_AVX512 {
    store(ds + j, m, _mm512_mul_ps(_mm512_mul_ps(load(p + j, m), _mm512_sub_ps(load(ds + j, m), vd)), vs));
  });
}

LR_TARGET_AVX512 void scale_avx512(float* x, int64_t n, float s) {
  const __m512 vs = _mm512_set1_ps(s);
  steps16(n, [&](int64_t j, __mmask16 m) LR_TARGET_AVX512 { store(x + j, m, _mm512_mul_ps(load(x + j, m), vs)); });
}
#endif

bool avx512() {
#ifdef LOWRANK_X86
  static const bool v = has_avx512();
  return v;
#else
  return false;
#endif
}

float dot_of(const float* a, const float* b, int64_t n) {
#ifdef LOWRANK_X86
  if (avx512()) return dot_avx512(a, b, n);
#endif
  return row_dot(a, b, n);
}

void scale_row(float* x, int64_t n, float s) {
#ifdef LOWRANK_X86
  if (avx512()) return scale_avx512(x, n, s);
#endif
  for (int64_t j = 0; j < n; ++j) x[j] *= s;
}

// Keys [lo, hi) of a row of n scores: outside them the row's weights are exactly 0.
struct KeyRange {
  int64_t lo, hi;
};

// Masks one row of n scores of query i. Without a padding mask the keys it sees are one range,
// returned (the scores outside it are left as they are: callers skip them); with one, the padded,
// causally hidden and out-of-window keys get -inf and the range is the whole row. A row left with
// no finite score gets probability 0 everywhere (see attention.h).
KeyRange mask_row(const AttnDims& d, int64_t i, float* s, int64_t n, const int32_t* keep) {
  if (!keep) {
    const int64_t hi = std::clamp<int64_t>(visible_keys(d, i), 0, n);
    return {std::min(first_key(d, i), hi), hi};
  }
  for (int64_t j = 0; j < n; ++j) s[j] = sees(d, i, j, keep) ? s[j] : kNegInf;
  return {0, n};
}

// Zeros a row of n outside [lo, hi).
void zero_outside(float* s, int64_t n, KeyRange r) {
  std::fill(s, s + r.lo, 0.0f);
  std::fill(s + r.hi, s + n, 0.0f);
}

// dS of one row of query i: ds[j] = p[j]·(ds[j] - delta)·scale where query i sees key j, else
// exactly 0: a masked score is a constant -inf, so its gradient is 0 even in a row whose P is NaN
// (0·NaN would otherwise spread that row's NaN into the dK of keys it never saw).
void score_grad_row(const AttnDims& d, int64_t i, const float* p, float* ds, int64_t n, KeyRange r, float delta,
                    const int32_t* keep) {
  if (!keep) {
#ifdef LOWRANK_X86
    if (avx512())
      score_grad_avx512(p + r.lo, ds + r.lo, r.hi - r.lo, delta, d.scale);
    else
#endif
      for (int64_t j = r.lo; j < r.hi; ++j) ds[j] = p[j] * (ds[j] - delta) * d.scale;
    zero_outside(ds, n, r);
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

int64_t query_blocks(const AttnDims& d) { return (d.Tq + kQueryBlock - 1) / kQueryBlock; }

// Applies attention dropout to elements [lo, hi) of src (weights or their gradient) of query i
// into dst: element j is weight ((b*H + h)*Tq + i)*Tk + j of the stream (see AttnDims). With
// `also` (not null) the same mask scales it in place: one Philox evaluation for drop(P) and dP.
void drop_row(const AttnDims& d, int64_t b, int64_t h, int64_t i, const float* src, float* dst, float* also, KeyRange r) {
  if (r.hi <= r.lo) return;
  const uint64_t first = uint64_t(((b * d.H + h) * d.Tq + i) * d.Tk + r.lo);
  dropout_run2(src + r.lo, dst + r.lo, also ? also + r.lo : nullptr, also ? also + r.lo : nullptr, r.hi - r.lo, d.dropout,
               1.0f / (1.0f - d.dropout), d.seed, d.offset, first);
}

// How the products read q, k, v and dout.
enum class Arith {
  F32,        // float32 precision: gemm_f32 on the tensors in place
  Bf16Gemm,   // bf16 precision: bf16 copies of the operands and of the weights, gemm_bf16
  Bf16Float,  // bf16 precision, few queries: rounded float32 copies (or kv_rounded k, v in place),
              // weights rounded in place, gemm_f32
};

Arith arith(const AttnDims& d) {
  if (d.precision != DType::BF16) return Arith::F32;
  return d.Tq >= kBf16GemmMinQueries ? Arith::Bf16Gemm : Arith::Bf16Float;
}

// Rows of one head as a product reads them: float32 (f) or bf16 bits (h), row stride st.
struct Rows {
  const float* f;
  const uint16_t* h;
  int64_t st;
};

// A thread's copies of the operands it works on, kept across calls (a fresh buffer of the KV
// cache's size would be mapped, faulted in and unmapped for every decoded token).
struct Copies {
  std::vector<float> f;
  std::vector<uint16_t> h;
};

// Rows [t0, t0 + rows) of head (b, h) of x rounded to bf16 into dst (rows × D). The rows of a head
// lie a page or more apart in GPT-2's fused qkv layout, too far for the hardware prefetchers:
// fetch a few rows ahead.
template <class T>
void round_rows(const AttnDims& d, AttnView x, int64_t b, int64_t h, int64_t t0, int64_t rows, T* dst) {
  constexpr int64_t kAhead = 8;
  for (int64_t t = 0; t < rows; ++t) {
    if (t + kAhead < rows) {
      const char* next = reinterpret_cast<const char*>(x.row(b, h, t0 + t + kAhead));
      for (int64_t byte = 0; byte < d.D * int64_t(sizeof(float)); byte += 64) __builtin_prefetch(next + byte);
    }
    round_to_bf16(x.row(b, h, t0 + t), dst + t * d.D, d.D);
  }
}

// Rows [t0, t0 + rows) of head (b, h) of x as `a` reads them: in place, or rounded to bf16 into c
// (bf16 bits for Bf16Gemm, rounded float32 for Bf16Float, unless `rounded`: x already holds bf16
// values, which Bf16Float then reads in place).
Rows head_rows(const AttnDims& d, AttnView x, int64_t b, int64_t h, int64_t t0, int64_t rows, Arith a, bool rounded,
               Copies& c) {
  const size_t size = size_t(rows * d.D);
  if (a == Arith::F32 || (a == Arith::Bf16Float && rounded)) return Rows{x.row(b, h, t0), nullptr, x.st};
  if (a == Arith::Bf16Gemm) {
    if (c.h.size() < size) c.h.resize(size);
    round_rows(d, x, b, h, t0, rows, c.h.data());
    return Rows{nullptr, c.h.data(), d.D};
  }
  if (c.f.size() < size) c.f.resize(size);
  round_rows(d, x, b, h, t0, rows, c.f.data());
  return Rows{c.f.data(), nullptr, d.D};
}

// C (m × n, row stride ldc) = alpha · A Bᵀ for rows A (m × k) and B (n × k) of the same kind.
void product_abt(int64_t m, int64_t n, int64_t k, float alpha, Rows a, Rows b, float* c, int64_t ldc) {
  if (a.h)
    gemm_bf16(false, true, m, n, k, alpha, a.h, a.st, 0, b.h, b.st, 0, 0.0f, c, ldc, 0, 1);
  else
    gemm_f32(false, true, m, n, k, alpha, a.f, a.st, 0, b.f, b.st, 0, 0.0f, c, ldc, 0, 1);
}

// C (m × n, row stride ldc) = op(W) B + beta · C for weights W (row stride w.st; op(W) is m × k)
// and rows B (k × n) of the same kind.
void product_wb(bool trans_w, int64_t m, int64_t n, int64_t k, Rows w, Rows b, float beta, float* c, int64_t ldc) {
  if (b.h)
    gemm_bf16(trans_w, false, m, n, k, 1.0f, w.h, w.st, 0, b.h, b.st, 0, beta, c, ldc, 0, 1);
  else
    gemm_f32(trans_w, false, m, n, k, 1.0f, w.f, w.st, 0, b.f, b.st, 0, beta, c, ldc, 0, 1);
}

// A block of weights (rows × n, contiguous) as the products read them: in place, or for Bf16Gemm
// rounded into a bf16 copy in buf (one pass, where gemm_f32_bf16 would round them in its packing
// of every product that reads them; measured 3-5% faster for the whole attention).
Rows weights(const float* w, int64_t rows, int64_t n, Arith a, std::vector<uint16_t>& buf) {
  if (a != Arith::Bf16Gemm) return Rows{w, nullptr, n};
  if (buf.size() < size_t(rows * n)) buf.resize(size_t(rows * n));
  round_to_bf16(w, buf.data(), rows * n);
  return Rows{nullptr, buf.data(), n};
}

// Per-thread scratch, kept across calls.
struct Scratch {
  std::vector<float> s, ds, pd, inv;  // bq × n blocks: scores / weights, their gradient, drop(P)
  std::vector<uint16_t> wh, dsh;  // bf16 copies of the weights (Bf16Gemm)
  Copies q, k, v, dout;
};

Scratch& scratch() {
  static thread_local Scratch s;
  return s;
}

template <class T>
T* sized(std::vector<T>& v, int64_t n) {
  if (v.size() < size_t(n)) v.resize(size_t(n));
  return v.data();
}

}  // namespace

void attention_forward_f32(const AttnDims& d, AttnView q, AttnView k, AttnView v, const int32_t* key_keep, AttnView out,
                           float* lse) {
  const Arith a = arith(d);
  const bool round_weights = a == Arith::Bf16Float;  // in place; Bf16Gemm rounds them into bf16 copies
  const int64_t nqb = query_blocks(d);
  if (nqb == 0) return;
  // Decoding one token (Tq = 1) over a short cache is a few µs of work per head: below ~1M
  // multiply-adds in all (GPT-2 124M up to ~640 positions) one thread does it before a woken
  // worker would have started, and far sooner when another process holds the second core.
  const int64_t work = d.B * d.H * nqb * std::min(d.Tq, kQueryBlock) * d.Tk * d.D * 2;
  // Items are query blocks, a thread's run of them head by head: k and v are rounded once per
  // thread for each key/value head it meets.
  const int64_t items = d.B * d.H * nqb;
  parallel_for(items, work < (int64_t(1) << 20) ? items : 1, [&](int64_t w0, int64_t w1) {
    Scratch& sc = scratch();
    int64_t kv_b = -1, kv_h = -1;  // the key/value head kr, vr read
    Rows kr{}, vr{};
    for (int64_t w = w0; w < w1; ++w) {
      const QueryBlock blk = query_block(d, w / nqb, w % nqb);
      const int64_t kvh = blk.h / d.kv_group;
      if (kv_b != blk.b || kv_h != kvh) {
        kr = head_rows(d, k, blk.b, kvh, 0, d.Tk, a, d.kv_rounded, sc.k);
        vr = head_rows(d, v, blk.b, kvh, 0, d.Tk, a, d.kv_rounded, sc.v);
        kv_b = blk.b, kv_h = kvh;
      }
      const int64_t n = blk.n;
      const Rows qr = head_rows(d, q, blk.b, blk.h, blk.i0, blk.bq, a, false, sc.q);
      float* S = sized(sc.s, blk.bq * n);
      float* inv = sized(sc.inv, blk.bq);
      product_abt(blk.bq, n, d.D, d.scale, qr, kr, S, n);
      const int32_t* keep = key_keep ? key_keep + blk.b * d.Tk : nullptr;
      float* lse_blk = lse + (blk.b * d.H + blk.h) * d.Tq + blk.i0;
      for (int64_t r = 0; r < blk.bq; ++r) {
        float* s = S + r * n;
        const KeyRange seen = mask_row(d, blk.i0 + r, s, n, keep);
        const float m = row_max(s + seen.lo, seen.hi - seen.lo);
        if (m == kNegInf) {  // nothing to attend to: zeros
          std::fill(s, s + n, 0.0f);
          lse_blk[r] = m;
          inv[r] = 0.0f;
          continue;
        }
        const float sum = row_exp_sum(s + seen.lo, seen.hi - seen.lo, m, 1.0f, s + seen.lo);
        zero_outside(s, n, seen);
        inv[r] = 1.0f / sum;
        lse_blk[r] = m + std::log(sum);
        if (d.dropout > 0) drop_row(d, blk.b, blk.h, blk.i0 + r, s, s, nullptr, seen);
        if (round_weights) round_to_bf16(s + seen.lo, s + seen.lo, seen.hi - seen.lo);
      }
      float* o = out.row(blk.b, blk.h, blk.i0);
      product_wb(false, blk.bq, d.D, n, weights(S, blk.bq, n, a, sc.wh), vr, 0.0f, o, out.st);
      for (int64_t r = 0; r < blk.bq; ++r) scale_row(o + r * out.st, d.D, inv[r]);
    }
  });
}

void attention_backward_f32(const AttnDims& d, AttnView q, AttnView k, AttnView v, const int32_t* key_keep,
                            const float* lse, AttnView out, AttnView dout, AttnView dq, AttnView dk, AttnView dv) {
  // out is unused here: delta comes from P and dP below
  const Arith a = arith(d);
  const bool round_weights = a == Arith::Bf16Float;
  // Items are (batch, key/value head) pairs, so that dK and dV have one writer: the query heads
  // of a group add into them one after the other.
  const int64_t nqb = query_blocks(d), kv_heads = d.H / d.kv_group;
  parallel_for(d.B * kv_heads, 1, [&](int64_t bj0, int64_t bj1) {
    for (int64_t bj = bj0; bj < bj1; ++bj) {
      Scratch& sc = scratch();
      const int64_t b = bj / kv_heads, j = bj % kv_heads;
      const Rows kr = head_rows(d, k, b, j, 0, d.Tk, a, d.kv_rounded, sc.k);
      const Rows vr = head_rows(d, v, b, j, 0, d.Tk, a, d.kv_rounded, sc.v);
      // dK and dV rows not yet written: the first product into them overwrites (beta 0)
      int64_t written = 0;
      Rows qr{}, gr{};
      for (int64_t w = 0; w < d.kv_group * nqb; ++w) {  // the group's query heads, each block by block, last first
        const int64_t h = j * d.kv_group + w / nqb, bh = b * d.H + h;
        const QueryBlock blk = query_block(d, bh, nqb - 1 - w % nqb);
        const int64_t n = blk.n;
        if (w % nqb == 0) {
          qr = head_rows(d, q, b, h, 0, d.Tq, a, false, sc.q);
          gr = head_rows(d, dout, b, h, 0, d.Tq, a, false, sc.dout);
        }
        const Rows qb{qr.f ? qr.f + blk.i0 * qr.st : nullptr, qr.h ? qr.h + blk.i0 * qr.st : nullptr, qr.st};
        const Rows gb{gr.f ? gr.f + blk.i0 * gr.st : nullptr, gr.h ? gr.h + blk.i0 * gr.st : nullptr, gr.st};
        float* P = sized(sc.s, blk.bq * n);
        float* dS = sized(sc.ds, blk.bq * n);
        product_abt(blk.bq, n, d.D, d.scale, qb, kr, P, n);
        // dP = dO V[0:n]ᵀ
        product_abt(blk.bq, n, d.D, 1.0f, gb, vr, dS, n);
        const int32_t* keep = key_keep ? key_keep + b * d.Tk : nullptr;
        const float* lse_blk = lse + bh * d.Tq + blk.i0;
        float* Pd = d.dropout > 0 ? sized(sc.pd, blk.bq * n) : P;  // drop(P)
        for (int64_t r = 0; r < blk.bq; ++r) {
          float* p = P + r * n;
          float* ds = dS + r * n;
          const KeyRange seen = mask_row(d, blk.i0 + r, p, n, keep);
          float p_sum = 0.0f;
          if (lse_blk[r] == kNegInf) {
            std::fill(p, p + n, 0.0f);
          } else {
            p_sum = row_exp_sum(p + seen.lo, seen.hi - seen.lo, lse_blk[r], 1.0f, p + seen.lo);
            zero_outside(p, n, seen);
          }
          // dP ∘ M and drop(P) with one evaluation of the mask
          if (d.dropout > 0) {
            float* pd = Pd + r * n;
            zero_outside(pd, n, seen);
            drop_row(d, b, h, blk.i0 + r, p, pd, ds, seen);
          }
          // dS = P ∘ (dP - rowsum(P ∘ dP)) · scale, in place
          const float dot = dot_of(p + seen.lo, ds + seen.lo, seen.hi - seen.lo);
          score_grad_row(d, blk.i0 + r, p, ds, n, seen, p_sum > 0.0f ? dot / p_sum : 0.0f, keep);
          if (round_weights) {  // P's float32 values were needed by dS; now the products read them rounded
            round_to_bf16(Pd + r * n + seen.lo, Pd + r * n + seen.lo, seen.hi - seen.lo);
            round_to_bf16(ds + seen.lo, ds + seen.lo, seen.hi - seen.lo);
          }
        }
        // dV[0:n] += drop(P)ᵀ dO;  dQ_blk = dS K[0:n];  dK[0:n] += dSᵀ Q_blk. The rows of dK and
        // dV from `written` to n are new: zero them, or take them whole (beta 0) when none is old.
        const float beta = written == 0 ? 0.0f : 1.0f;
        if (written > 0 && n > written)
          for (int64_t t = written; t < n; ++t) {
            std::fill(dk.row(b, j, t), dk.row(b, j, t) + d.D, 0.0f);
            std::fill(dv.row(b, j, t), dv.row(b, j, t) + d.D, 0.0f);
          }
        written = std::max(written, n);
        const Rows pw = weights(Pd, blk.bq, n, a, sc.wh), dsw = weights(dS, blk.bq, n, a, sc.dsh);
        product_wb(true, n, d.D, blk.bq, pw, gb, beta, dv.row(b, j, 0), dv.st);
        product_wb(false, blk.bq, d.D, n, dsw, kr, 0.0f, dq.row(b, h, blk.i0), dq.st);
        product_wb(true, n, d.D, blk.bq, dsw, qb, beta, dk.row(b, j, 0), dk.st);
      }
      for (int64_t t = written; t < d.Tk; ++t) {  // keys no query sees (or no queries): gradient 0
        std::fill(dk.row(b, j, t), dk.row(b, j, t) + d.D, 0.0f);
        std::fill(dv.row(b, j, t), dv.row(b, j, t) + d.D, 0.0f);
      }
    }
  });
}

}  // namespace cpu
}  // namespace lowrank
