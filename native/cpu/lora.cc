// The fused LoRA forward and backward and the merge on the CPU (native/ops/lora.h), by blocks of rows.
//
// Rows are cut into blocks of at most 128K elements of x, a multiple of 16 rows, the same blocks
// whatever the number of threads. Per block, on one thread (gemm_f32 runs inline inside a
// parallel region):
//   forward   xd = drop(x_b)            u_b = xd·Aᵀ             out_b = y_b + s·u_b·Bᵀ
//   backward  v = g_b·B                 gBᵀ_q += s·u_bᵀ·g_b     gx_b = s·v·A
//             xd = drop(x_b) and gx_b ⊙= mask/(1-p), one Philox evaluation for both
//             gA_q += s·vᵀ·xd
// gA and gB are sums over all rows: the blocks are grouped into at most kPartitions contiguous
// partitions q, each summed in block order into its own partial (partition 0's gA is the output),
// and the partials are added in partition order. Threads take whole partitions, so the result does
// not depend on how many there are.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

#include "../ops/lora.h"
#include "../ops/matmul.h"
#include "../backend.h"
#include "bf16_load.h"
#include "parallel.h"
#include "rows.h"

namespace lowrank {
namespace cpu {
namespace {

// Elements of x per block of rows, at most. Larger blocks spread what each block costs beyond its
// products (the partials of gA and gB read and written, a dropout run, gemm_f32's set-up) over
// more rows, which outweighs keeping a block in L2: at N = 256, r = 16, one thread, 64K -> 128K
// (k = 768: 4 -> 2 blocks; k = 3072: 16 -> 8) made the backward 6-22% and the forward 4-10%
// faster; 256K a few % more, but then k = 768 is one block, for one thread.
constexpr int64_t kBlockElements = int64_t(1) << 17;
constexpr int64_t kPartitions = 8;  // partial sums of gA and gB, at most
// Block rows are a multiple of the micro-kernels' 16-row tiles, which gemm_f32 would pad (one
// thread, u = x·Aᵀ at N = 256, k = 3072: 535 µs in 13 blocks of 19-20 rows, 294 in 16 of 16).
constexpr int64_t kRowQuantum = 16;

// Rows [row(b), row(b + 1)) form block b of `blocks`: `rows` each (a multiple of kRowQuantum), the
// last one fewer.
struct RowBlocks {
  int64_t N, blocks, rows;
  explicit RowBlocks(const LoraDims& d) : N(d.N) {
    const int64_t max_rows = std::max<int64_t>(kRowQuantum, kBlockElements / std::max<int64_t>(1, d.k) / kRowQuantum * kRowQuantum);
    blocks = (N + max_rows - 1) / max_rows;
    rows = blocks ? ((N + blocks - 1) / blocks + kRowQuantum - 1) / kRowQuantum * kRowQuantum : 0;
  }
  int64_t row(int64_t b) const { return std::min(N, rows * b); }
};

// A per-thread scratch buffer of at least n floats, kept across calls.
float* scratch(std::vector<float>& buf, int64_t n) {
  if (int64_t(buf.size()) < n) buf.resize(size_t(n));
  return buf.data();
}

// dst [cols, rows] = srcᵀ (src [rows, cols] row-major), in 16×16 tiles that keep both sides'
// lines in L1.
void transpose(const float* src, int64_t rows, int64_t cols, float* dst) {
  constexpr int64_t kTile = 16;
  for (int64_t i0 = 0; i0 < rows; i0 += kTile)
    for (int64_t j0 = 0; j0 < cols; j0 += kTile)
      for (int64_t i = i0; i < std::min(rows, i0 + kTile); ++i)
        for (int64_t j = j0; j < std::min(cols, j0 + kTile); ++j) dst[j * rows + i] = src[i * cols + j];
}

// A block of rows as a gemm_f32 operand: its first element and its row stride.
struct Rows {
  const float* p;
  int64_t ld;
};

// The row stride of drop(x) in a block's scratch buffer: k, or k + 16 where rows k apart would fall
// into the same few sets of L1 (k a multiple of 512: 2 KiB apart and more), which the 16-row panels
// gemm_f32 reads in place then evict from each other. Measured at N = 256, k = 3072, 32-row
// blocks, one thread: u = drop(x)·Aᵀ ~215 -> ~160 µs, gA's product ~220 -> ~140 µs.
int64_t dropped_ld(int64_t k) { return k % 512 == 0 ? k + 16 : k; }

// xd = drop(x) for rows [i0, i1) into `buf`, or x itself without dropout. With x2 (a block of
// rows d.k apart; may be null), x2 ⊙= the same mask/(1-p), from the same Philox evaluation.
Rows dropped_rows(const LoraDims& d, const float* x, int64_t i0, int64_t i1, std::vector<float>& buf, float* x2 = nullptr) {
  const float* xb = x + i0 * d.k;
  if (d.p == 0) return {xb, d.k};
  const int64_t ld = dropped_ld(d.k);
  float* xd = scratch(buf, (i1 - i0) * ld);
  // One run for the block when its rows stay contiguous: a run starting inside a Philox group of
  // 64 evaluates that group again (k = 768 in runs of a row: ~8% more).
  const int64_t run = ld == d.k ? i1 - i0 : 1;
  for (int64_t i = i0; i < i1; i += run) {
    float* x2i = x2 ? x2 + (i - i0) * d.k : nullptr;
    dropout_run2(x + i * d.k, xd + (i - i0) * ld, x2i, x2i, run * d.k, d.p, d.mask_scale, d.seed, d.offset, uint64_t(i * d.k));
  }
  return {xd, ld};
}

// fn(t) for t = 0..count-1 on the pool's threads, each task to the next free thread: with a core
// taken by another process, the caller runs the tasks its worker has not got to.
template <typename Fn>
void for_each_task(int64_t count, Fn fn) {
  std::atomic<int64_t> next{0};
  parallel_threads([&](int, int) {
    for (int64_t t; (t = next.fetch_add(1)) < count;) fn(t);
  });
}

// fn(i0, i1, xd) for each block of rows [i0, i1), on the pool's threads, with xd = drop(x) of the
// block (x's rows [N, d.k], the mask of d; x itself without dropout) as dropped_rows gives it.
template <typename Fn>
void for_row_blocks(const LoraDims& d, const float* x, Fn fn) {
  const RowBlocks rb(d);
  for_each_task(rb.blocks, [&](int64_t b) {
    static thread_local std::vector<float> xd_buf;
    fn(rb.row(b), rb.row(b + 1), dropped_rows(d, x, rb.row(b), rb.row(b + 1), xd_buf));
  });
}

}  // namespace

void lora_forward_f32(const LoraDims& d, const float* x, const float* A, const float* B, const float* y, float* out, float* u) {
  // Aᵀ [k, r] once: gemm_f32 reads it in place, where it would transpose A into its packing for
  // each block (k = 3072, 8 blocks of 32 rows, one thread: u = x·Aᵀ 390 -> 220 µs).
  static thread_local std::vector<float> at_buf;
  float* At = scratch(at_buf, d.k * d.r);
  transpose(A, d.r, d.k, At);
  for_row_blocks(d, x, [&](int64_t i0, int64_t i1, Rows xd) {
    const int64_t rows = i1 - i0;
    float* ub = u + i0 * d.r;
    float* ob = out + i0 * d.d;
    gemm_f32(false, false, rows, d.r, d.k, 1.0f, xd.p, xd.ld, 0, At, d.r, 0, 0.0f, ub, d.r, 0, 1);  // u = drop(x)·Aᵀ
    if (out != y) std::memcpy(ob, y + i0 * d.d, size_t(rows * d.d) * sizeof(float));
    gemm_f32(false, true, rows, d.d, d.r, d.scaling, ub, d.r, 0, B, d.r, 0, 1.0f, ob, d.d, 0, 1);  // out += s·u·Bᵀ
  });
}

void lora_backward_f32(const LoraDims& d, const float* g, const float* x, const float* A, const float* B, const float* u,
                       float* gx, float* gA, float* gB) {
  const int64_t nA = d.r * d.k, nB = d.d * d.r;
  const RowBlocks rb(d);
  const int64_t parts = std::min(kPartitions, rb.blocks);
  if (parts == 0) {  // no rows: the sums are empty
    if (gA) std::fill(gA, gA + nA, 0.0f);
    if (gB) std::fill(gB, gB + nB, 0.0f);
    return;
  }
  // Partials of gA for partitions 1..parts-1 (partition 0 sums into gA directly), and of gBᵀ [r, d]
  // for every partition: as s·uᵀ·g (r rows of output) gemm_f32's 8×32 micro-kernel loads two
  // vectors of g per 8 broadcasts of u, where s·gᵀ·u's 16×16 one broadcasts g for every FMA
  // (c_attn, d = 2304, one thread: 141 -> 100 µs). The same products, in the same order where a
  // block has at most 384 rows (both kernels sum them in one k block).
  const int64_t partsA = gA ? parts - 1 : 0, partsB = gB ? parts : 0;
  const size_t partial_bytes = size_t(partsA * nA + partsB * nB) * sizeof(float);
  float* partials = partial_bytes ? static_cast<float*>(alloc(partial_bytes)) : nullptr;
  auto part_gA = [&](int64_t q) { return q == 0 ? gA : partials + (q - 1) * nA; };
  auto part_gBt = [&](int64_t q) { return partials + partsA * nA + q * nB; };

  for_each_task(parts, [&](int64_t q) {
    static thread_local std::vector<float> xd_buf, v_buf;
    float* qA = gA ? part_gA(q) : nullptr;
    float* qBt = gB ? part_gBt(q) : nullptr;
    const int64_t first = rb.blocks * q / parts, last = rb.blocks * (q + 1) / parts;
    for (int64_t b = first; b < last; ++b) {
      const int64_t i0 = rb.row(b), i1 = rb.row(b + 1), rows = i1 - i0;
      const float beta = b == first ? 0.0f : 1.0f;  // a partition's first block starts its sums
      const float* gb = g + i0 * d.d;
      if (qBt) gemm_f32(true, false, d.r, d.d, rows, d.scaling, u + i0 * d.r, d.r, 0, gb, d.d, 0, beta, qBt, d.d, 0, 1);
      if (!qA && !gx) continue;
      float* v = scratch(v_buf, rows * d.r);
      gemm_f32(false, false, rows, d.r, d.d, 1.0f, gb, d.d, 0, B, d.r, 0, 0.0f, v, d.r, 0, 1);  // v = g·B
      float* gxb = gx ? gx + i0 * d.k : nullptr;
      if (gxb) gemm_f32(false, false, rows, d.k, d.r, d.scaling, v, d.r, 0, A, d.k, 0, 0.0f, gxb, d.k, 0, 1);  // s·v·A
      // drop(x) for gA and gx ⊙= mask/(1-p), one Philox evaluation for both
      if (qA) {
        const Rows xd = dropped_rows(d, x, i0, i1, xd_buf, gxb);
        gemm_f32(true, false, d.r, d.k, rows, d.scaling, v, d.r, 0, xd.p, xd.ld, 0, beta, qA, d.k, 0, 1);  // s·vᵀ·xd
      } else if (gxb && d.p > 0) {
        dropout_run(gxb, gxb, rows * d.k, d.p, d.mask_scale, d.seed, d.offset, uint64_t(i0 * d.k));
      }
    }
  });

  // Add the partials in partition order; gB is the transpose of the gBᵀ sum.
  auto add_partials = [&](float* sum, int64_t n, auto partial) {
    parallel_for(n, kStreamGrain, [&](int64_t j0, int64_t j1) {
      for (int64_t q = 1; q < parts; ++q) {
        const float* src = partial(q);
        for (int64_t j = j0; j < j1; ++j) sum[j] += src[j];
      }
    });
  };
  if (partsA) add_partials(gA, nA, part_gA);
  if (partsB) {
    add_partials(part_gBt(0), nB, part_gBt);
    transpose(part_gBt(0), d.r, d.d, gB);
  }
  if (partials) free(partials, partial_bytes);
}

void lora_merge(const LoraMergeDims& m, void* W, DType w_dtype, const float* A, const float* B) {
  // Rows [i0, i1) of W, as float32 in w (row stride ldw), += s·ΔW: one GEMM with beta = 1.
  auto merge_rows = [&](float* w, int64_t ldw, int64_t i0, int64_t i1) {
    if (m.transposed)  // W [k, d] += s·Aᵀ·Bᵀ: columns i0.. of A
      gemm_f32(true, true, i1 - i0, m.cols, m.r, m.scaling, A + i0, m.rows, 0, B, m.r, 0, 1.0f, w, ldw, 0, 1);
    else  // W [d, k] += s·B·A: rows i0.. of B
      gemm_f32(false, false, i1 - i0, m.cols, m.r, m.scaling, B + i0 * m.r, m.r, 0, A, m.cols, 0, 1.0f, w, ldw, 0, 1);
  };
  if (w_dtype == DType::F32) return merge_rows(static_cast<float*>(W), m.ld, 0, m.rows);
  // bfloat16: blocks of rows widened into a float32 buffer, merged, rounded back (each thread its blocks).
  uint16_t* wb = static_cast<uint16_t*>(W);
  const int64_t block_rows = std::max<int64_t>(1, kBlockElements / std::max<int64_t>(1, m.cols));
  parallel_for((m.rows + block_rows - 1) / block_rows, 1, [&](int64_t b0, int64_t b1) {
    static thread_local std::vector<float> buf;
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t i0 = b * block_rows, i1 = std::min(m.rows, i0 + block_rows);
      float* w = scratch(buf, (i1 - i0) * m.cols);
      for (int64_t i = i0; i < i1; ++i)
        for (int64_t c = 0; c < m.cols; ++c) w[(i - i0) * m.cols + c] = bf16_to_f32(wb[i * m.ld + c]);
      merge_rows(w, m.cols, i0, i1);
      for (int64_t i = i0; i < i1; ++i) round_to_bf16(w + (i - i0) * m.cols, wb + i * m.ld, m.cols);
    }
  });
}

void lora_aug_pack(const LoraAugPack& pk, uint16_t* W, const float* A, const float* B, const float* bias) {
  auto at = [&](int64_t a, int64_t b) -> uint16_t& { return W[pk.transposed ? a * pk.ld + b : b * pk.ld + a]; };
  for (int64_t c = 0; c < pk.d; ++c) {
    for (int64_t j = 0; j < pk.r; ++j) at(pk.k + j, c) = f32_to_bf16(B[c * pk.r + j]);
    at(pk.k + pk.r, c) = f32_to_bf16(bias ? bias[c] : 0.0f);
  }
  for (int64_t j = 0; j < pk.r; ++j)
    for (int64_t i = 0; i < pk.k; ++i) at(i, pk.d + j) = f32_to_bf16(A[j * pk.k + i]);
}

void lora_down_aug(const LoraAugDims& a, const float* x, const float* f, float* u, uint16_t* xa) {
  // Blocks of rows as the forward's (the same mask: element (i, c) is i·K + c of the stream).
  const LoraDims d{a.N, a.K, a.r, 0, 1.0f, a.p, a.mask_scale, a.seed, a.offset};
  for_row_blocks(d, x, [&](int64_t i0, int64_t i1, Rows xd) {
    float* ub = u + i0 * a.r;
    if (a.f_transposed)  // u = drop(x)·F with F = B [K, r]
      gemm_f32(false, false, i1 - i0, a.r, a.K, 1.0f, xd.p, xd.ld, 0, f, a.r, 0, 0.0f, ub, a.r, 0, 1);
    else  // u = drop(x)·Fᵀ with F = A [r, K]
      gemm_f32(false, true, i1 - i0, a.r, a.K, 1.0f, xd.p, xd.ld, 0, f, a.K, 0, 0.0f, ub, a.r, 0, 1);
    for (int64_t i = i0; i < i1; ++i) {
      uint16_t* row = xa + i * a.ld;
      round_to_bf16(x + i * a.K, row, a.K);
      for (int64_t j = 0; j < a.ld - a.K; ++j) {
        const float value = j < a.r ? a.tail_scale * u[i * a.r + j] : (a.ones && j == a.r ? 1.0f : 0.0f);
        row[a.K + j] = f32_to_bf16(value);
      }
    }
  });
}

void lora_backward_aug(const LoraDims& d, const float* v, const float* u, const uint16_t* xa, int64_t ldx, const uint16_t* ga,
                       int64_t ldg, const float* A, float* gx, float* gA, float* gB) {
  // The twin of the CUDA passes, plainly: the bf16 operands widened whole, then one GEMM each.
  auto widen = [&](const uint16_t* src, int64_t ld, int64_t cols) {
    std::vector<float> out(size_t(d.N * cols));
    parallel_for(d.N, 1, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i)
        for (int64_t c = 0; c < cols; ++c) out[size_t(i * cols + c)] = bf16_to_f32(src[i * ld + c]);
    });
    return out;
  };
  if (gA) {
    std::vector<float> xd = widen(xa, ldx, d.k);
    if (d.p > 0) dropout_run(xd.data(), xd.data(), d.N * d.k, d.p, d.mask_scale, d.seed, d.offset, 0);
    gemm_f32(true, false, d.r, d.k, d.N, d.scaling, v, d.r, 0, xd.data(), d.k, 0, 0.0f, gA, d.k, 0, 1);
  }
  if (gB) {
    std::vector<float> gw = widen(ga, ldg, d.d);
    gemm_f32(true, false, d.d, d.r, d.N, d.scaling, gw.data(), d.d, 0, u, d.r, 0, 0.0f, gB, d.r, 0, 1);
  }
  if (gx) {  // gx += s·(v·A) ⊙ mask/(1-p)
    std::vector<float> t(size_t(d.N * d.k));
    gemm_f32(false, false, d.N, d.k, d.r, d.scaling, v, d.r, 0, A, d.k, 0, 0.0f, t.data(), d.k, 0, 1);
    if (d.p > 0) dropout_run(t.data(), t.data(), d.N * d.k, d.p, d.mask_scale, d.seed, d.offset, 0);
    parallel_for(d.N * d.k, kStreamGrain, [&](int64_t e0, int64_t e1) {
      for (int64_t e = e0; e < e1; ++e) gx[e] += t[size_t(e)];
    });
  }
}

}  // namespace cpu
}  // namespace lowrank
