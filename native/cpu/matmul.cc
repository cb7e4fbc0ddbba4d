// CPU fp32 GEMM, GotoBLAS/BLIS style: the op CPU training spends its time in.
//
//   for pc over k in steps of kc:
//     for ic over m in steps of mc:
//       pack A[ic:ic+mc, pc:pc+kc] into MR-tall micro-panels           packed A block  mc×kc  (L3)
//       for jc over n in steps of nc:
//         pack B[pc:pc+kc, jc:jc+nc] into NR-wide micro-panels         packed B block  kc×nc  (L2)
//         for ir over mc in steps of MR:                               A micro-panel   kc×MR  (L1)
//           for jr over nc in steps of NR:
//             micro-kernel: C[ir:ir+MR, jr:jr+NR] (+)= A panel · B panel   (registers)
//
// The micro-kernels broadcast A and load B as vectors along n, so the small broadcast panel stays
// in L1 and the wide vector panels stream from L2 (BLIS's arrangement, with A and B swapped
// because C is row-major). Packing reads op(A) and op(B) through (row, column) strides, so all
// four transpose cases feed the same micro-kernel. Threads split C into disjoint blocks and each
// packs its own operands, so they never wait on each other. Micro-kernels and vectorized packing
// live in matmul_avx512.cc / matmul_avx2.cc; the portable ones are below.
//
// gemm_bf16 (bf16 operands: a frozen bf16 weight and x rounded to bf16) runs the same driver. Where
// the CPU has AVX-512 BF16 its packing pairs bf16 along k (two k values per 32-bit word) for
// micro-kernels that multiply them with vdpbf16ps, 2x the float32 FMA's flops; elsewhere it
// widens each panel to float32 for the float32 micro-kernels. Either way a bf16 weight is
// packed one kc×nc block at a time and no float32 copy of it is made. m == 1 goes to gemv.cc,
// which reads bf16 directly. gemm_f32_bf16 is the same product with A still float32: its packing
// rounds A to bf16 (as a cast would) on the way into the same words, which saves a pass that
// writes a bf16 copy of x (or dY) and reads it back.
#include <algorithm>
#include <cstdlib>
#include <new>
#include <type_traits>

#include "../ops/elementwise.h"
#include "../ops/matmul.h"
#include "bf16_load.h"
#include "matmul_kernels.h"
#include "parallel.h"
#include "simd.h"

namespace lowrank {
namespace cpu {
namespace {

// Portable micro-kernel for hosts without AVX2: a 4×16 tile that compilers auto-vectorize with
// whatever vector unit the baseline target has (SSE2, NEON).
constexpr int kScalarMR = 4, kScalarNR = 16;

void micro_scalar(int64_t kc, const float* a, int64_t a_rs, int64_t a_cs, const float* b, int64_t b_rs, float* c,
                  int64_t ldc, float alpha, float beta) {
  float acc[kScalarMR][kScalarNR] = {};
  for (int64_t p = 0; p < kc; ++p, a += a_cs, b += b_rs)
    for (int i = 0; i < kScalarMR; ++i)
      for (int j = 0; j < kScalarNR; ++j) acc[i][j] += a[i * a_rs] * b[j];
  for (int i = 0; i < kScalarMR; ++i)
    for (int j = 0; j < kScalarNR; ++j)
      c[i * ldc + j] = alpha * acc[i][j] + (beta == 0 ? 0.0f : beta * c[i * ldc + j]);
}

// Packs one micro-panel: `rows` ≤ w rows × kc columns, dst[p*w + r], zero rows up to w.
template <class T>
void pack_panel(const T* src, int64_t rs, int64_t cs, int rows, int64_t kc, int w, float* dst) {
  if (rs == 1) {  // each column of the panel is contiguous in memory
    for (int64_t p = 0; p < kc; ++p, dst += w) {
      const T* s = src + p * cs;
      for (int r = 0; r < rows; ++r) dst[r] = widen(s[r]);
      for (int r = rows; r < w; ++r) dst[r] = 0;
    }
  } else {  // each row is a stream along p
    for (int r = 0; r < rows; ++r) {
      const T* s = src + r * rs;
      for (int64_t p = 0; p < kc; ++p) dst[p * w + r] = widen(s[p * cs]);
    }
    for (int64_t p = 0; p < kc; ++p)
      for (int r = rows; r < w; ++r) dst[p * w + r] = 0;
  }
}

// The portable kernel's packing (matmul_kernels.h): micro-panel by micro-panel.
template <class T>
void pack_portable(const T* src, int64_t rs, int64_t cs, int64_t rows, int64_t kc, int w, float* dst) {
  for (int64_t r = 0; r < rows; r += w, dst += w * kc)
    pack_panel(src + r * rs, rs, cs, int(std::min<int64_t>(w, rows - r)), kc, w, dst);
}

const GemmKernel kScalarKernel{"scalar 4x16", kScalarMR, kScalarNR, 1024, 256, 256, 256, 1.0f, micro_scalar, pack_portable<float>,
                               pack_portable<uint16_t>, pack_portable<F32AsBf16>};
const GemmKernelSet kScalarSet{1, {&kScalarKernel}};

// The kernel with the least estimated time for an m×n C: padded tile area over relative speed,
// among those of the best instruction set LOWRANK_SIMD allows for products of `Bf16` precision.
template <bool Bf16>
const GemmKernel& pick_kernel(int64_t m, int64_t n) {
  static const GemmKernelSet* set = [] {
    if (Bf16 && has_avx512_bf16()) return gemm_kernels_avx512bf16();
    return has_avx512() ? gemm_kernels_avx512() : has_avx2_fma() ? gemm_kernels_avx2() : nullptr;
  }();
  const GemmKernelSet& s = set ? *set : kScalarSet;
  const GemmKernel* best = s.kernels[0];
  double best_cost = 0;
  for (int i = 0; i < s.count; ++i) {
    const GemmKernel* K = s.kernels[i];
    double cost = double((m + K->mr - 1) / K->mr * K->mr) * double((n + K->nr - 1) / K->nr * K->nr) / K->speed;
    if (i == 0 || cost < best_cost) best = K, best_cost = cost;
  }
  return *best;
}

// A strided read-only view of op(X) of float32, bf16 or rounded elements: (i, j) is at p[i * rs + j * cs].
template <class T>
struct View {
  const T* p;
  int64_t rs, cs;
  const T* at(int64_t i, int64_t j) const { return p + i * rs + j * cs; }
};

// m up to this takes the small-m blocking in gemm_block.
constexpr int64_t kSmallM = 512;

// Per-thread packing buffers, kept across calls (the pool's threads live as long as the addon).
struct Scratch {
  float* a = nullptr;
  float* b = nullptr;
  size_t a_cap = 0, b_cap = 0;
  ~Scratch() {
    std::free(a);
    std::free(b);
  }
  static float* grow(float*& p, size_t& cap, size_t n) {
    if (n > cap) {
      std::free(p);
      p = static_cast<float*>(std::aligned_alloc(64, ((n * sizeof(float) + 63) / 64) * 64));
      if (!p) throw std::bad_alloc();
      cap = n;
    }
    return p;
  }
};

// ceil(total / ceil(total / cap)) rounded up to `unit`: the most even split of total into blocks
// of at most cap (rounded), so a remainder never makes one thin, slow block.
int64_t balanced_block(int64_t total, int64_t cap, int64_t unit) {
  int64_t blocks = (total + cap - 1) / cap;
  int64_t size = (total + blocks - 1) / blocks;
  return (size + unit - 1) / unit * unit;
}

// One operand of the micro-kernel: word (i, q) of an A panel at p[i*rs + q*cs]; word row q of a
// B panel at p[q*rs + 0..NR-1] (cs unused).
struct Panel {
  const float* p;
  int64_t rs, cs;
};

// The kernel's packing for each source type.
inline GemmPack<float> packer(const GemmKernel& K, const float*) { return K.pack; }
inline GemmPack<uint16_t> packer(const GemmKernel& K, const uint16_t*) { return K.pack_bf16; }
inline GemmPack<F32AsBf16> packer(const GemmKernel& K, const F32AsBf16*) { return K.pack_rounded; }

// C (m×n, row stride ldc) = alpha · op(A) (m×k) · op(B) (k×n) + beta · C, on the calling thread.
template <class TA, class TB>
void gemm_block(const GemmKernel& K, View<TA> A, View<TB> B, float* c, int64_t ldc, int64_t m, int64_t n, int64_t k,
                float alpha, float beta) {
  static thread_local Scratch scratch;
  // Only float32 operands of a float32 product can be read in place; bf16 ones and rounded ones
  // are always packed: the packing is where they become float32 words or bf16 pairs.
  constexpr bool kFloatA = std::is_same_v<TA, float>, kFloatB = std::is_same_v<TB, float>;
  const int MR = K.mr, NR = K.nr;
  // Small m (a step's few hundred tokens): the whole of A is one mc block and C is the largest
  // operand, rewritten once per k block. Longer k blocks (K.kc_small_m, with B blocks as large as
  // usual: kc·nc fixed) cut that traffic; A is read in place where its rows are contiguous, since
  // every thread would pack all of it (threads split n) for few B panels. Measured on 2 Zen 5
  // cores at m = 256, k = 768: 256x768x768 from ~0.65x to ~1.1x OpenBLAS (bench/RESULTS.md).
  // k blocks are whole words (bf16 pairs), so only the last one can end in half a pair.
  const bool small_m = m <= kSmallM;
  const int KW = K.k_per_word;
  const int64_t kc_max = balanced_block(k, small_m ? K.kc_small_m : K.kc, KW), kw_max = kc_max / KW;
  const int64_t mc_max = balanced_block(m, K.mc, MR);
  const int64_t nc_max = balanced_block(n, std::max<int64_t>(NR, K.nc * K.kc / kc_max / NR * NR), NR);
  // Packing A pays off when each A panel meets many B panels. When n spans at most two tiles (a
  // LoRA rank, say) the kernel reads full A panels in place and only a ragged last panel is
  // packed; likewise B when m spans at most two tiles and op(B)'s rows are contiguous.
  const bool pack_a = !kFloatA || (n > 2 * NR && !(small_m && A.cs == 1));
  const bool pack_b = !kFloatB || m > 2 * MR || B.cs != 1;
  float* ap = Scratch::grow(scratch.a, scratch.a_cap, size_t((pack_a ? mc_max : MR) * kw_max));
  float* bp = Scratch::grow(scratch.b, scratch.b_cap, size_t((pack_b ? nc_max : NR) * kw_max));
  alignas(64) float tile[32 * 64];  // edge tiles: MR×NR ≤ 32×64 for every kernel
  for (int64_t pc = 0; pc < k; pc += kc_max) {
    const int64_t kc = std::min(kc_max, k - pc), kw = (kc + KW - 1) / KW;  // k values, packed words
    const float beta_pc = pc == 0 ? beta : 1.0f;  // later k blocks accumulate onto the first
    for (int64_t ic = 0; ic < m; ic += mc_max) {
      const int64_t mc = std::min(mc_max, m - ic);
      const int64_t a_packed_from = pack_a ? 0 : mc / MR * MR;  // panels before it are read in place
      if (a_packed_from < mc) packer(K, A.p)(A.at(ic + a_packed_from, pc), A.rs, A.cs, mc - a_packed_from, kc, MR, ap);
      for (int64_t jc = 0; jc < n; jc += nc_max) {
        const int64_t nc = std::min(nc_max, n - jc);
        const int64_t b_packed_from = pack_b ? 0 : nc / NR * NR;
        // Rows of a B panel are columns of op(B), hence the swapped strides.
        if (b_packed_from < nc) packer(K, B.p)(B.at(pc, jc + b_packed_from), B.cs, B.rs, nc - b_packed_from, kc, NR, bp);
        for (int64_t ir = 0; ir < mc; ir += MR) {
          const int mr = int(std::min<int64_t>(MR, mc - ir));
          Panel a_panel{ap + (ir - a_packed_from) * kw, 1, MR};
          if constexpr (kFloatA)
            if (ir < a_packed_from) a_panel = Panel{A.at(ic + ir, pc), A.rs, A.cs};
          // The packed A block lives in L3; pull the next A micro-panel into L2 while this one
          // sweeps the B block (measured 2-5% on 1024..4096 squares).
          if (pack_a && ir + MR < mc)
            for (int64_t x = 0; x < kw * MR; x += 16) __builtin_prefetch(a_panel.p + kw * MR + x, 0, 2);
          for (int64_t jr = 0; jr < nc; jr += NR) {
            const int nr = int(std::min<int64_t>(NR, nc - jr));
            Panel b_panel{bp + (jr - b_packed_from) * kw, NR, 1};
            if constexpr (kFloatB)
              if (jr < b_packed_from) b_panel = Panel{B.at(pc, jc + jr), B.rs, 1};
            float* cij = c + (ic + ir) * ldc + jc + jr;
            if (mr == MR && nr == NR) {
              K.micro(kw, a_panel.p, a_panel.rs, a_panel.cs, b_panel.p, b_panel.rs, cij, ldc, alpha, beta_pc);
              continue;
            }
            K.micro(kw, a_panel.p, a_panel.rs, a_panel.cs, b_panel.p, b_panel.rs, tile, NR, alpha, 0.0f);
            for (int i = 0; i < mr; ++i)
              for (int j = 0; j < nr; ++j)
                cij[i * ldc + j] = tile[i * NR + j] + (beta_pc == 0 ? 0.0f : beta_pc * cij[i * ldc + j]);
          }
        }
      }
    }
  }
}

// C = beta · C for k == 0 or alpha == 0 (beta == 0 writes zeros without reading C).
void scale_c(float* c, int64_t ldc, int64_t m, int64_t n, float beta) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = beta == 0 ? 0.0f : beta * c[i * ldc + j];
}

// Below this many multiply-adds (~160³, ~40 µs on one core) a call runs on one thread: waking
// the pool's worker costs about as much as it saves, and far more when the machine is busy.
constexpr int64_t kParallelMinWork = int64_t(1) << 22;

// gemm_f32, gemm_bf16 and gemm_f32_bf16: one driver over float32 or bf16 operands, or a float32 A
// rounded to bf16 times a bf16 B (packed into float32 words or bf16 pairs, as the kernel takes
// them). B's element type is the product's: float32, or bf16 with A bf16 or rounded to it.
template <class TA, class TB>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const TA* a, int64_t lda,
          int64_t batch_stride_a, const TB* b, int64_t ldb, int64_t batch_stride_b, float beta, float* c, int64_t ldc,
          int64_t batch_stride_c, int64_t batch) {
  static_assert(std::is_same_v<TA, TB> || (std::is_same_v<TA, F32AsBf16> && std::is_same_v<TB, uint16_t>));
  if (m == 0 || n == 0 || batch == 0) return;
  const GemmKernel& K = pick_kernel<std::is_same_v<TB, uint16_t>>(m, n);
  // op(A)(i, p) and op(B)(p, j) as strided views: packing absorbs the transposes.
  const int64_t a_rs = trans_a ? 1 : lda, a_cs = trans_a ? lda : 1;
  const int64_t b_rs = trans_b ? 1 : ldb, b_cs = trans_b ? ldb : 1;
  const bool trivial = k == 0 || alpha == 0;
  // One row of C (decoding a token): stream each weight once (gemv.cc), no tiles, no packing.
  if (m == 1 && !trivial && (b_rs == 1 || b_cs == 1))
    return gemv(n, k, alpha, a, a_cs, batch_stride_a, b, b_rs, b_cs, batch_stride_b, beta, c, batch_stride_c, batch);

  // Work items: each matrix of the batch is cut into `parts` blocks of whole tiles along m or n;
  // item w is block w / batch of matrix w % batch, and thread t takes a contiguous run of items.
  // With parts == threads each thread owns one block of every matrix; tiny matrices (parts == 1)
  // are shared out whole. Cutting m makes every thread pack all of op(B) (k×n), cutting n all of
  // op(A) (m×k): cut the dimension that duplicates less, if it has a tile for every thread.
  const int64_t tiles_m = (m + K.mr - 1) / K.mr, tiles_n = (n + K.nr - 1) / K.nr;
  const int64_t threads = num_threads();
  const bool split_m = tiles_m >= threads && tiles_n >= threads ? n <= m : tiles_m >= tiles_n;
  const int64_t tiles = split_m ? tiles_m : tiles_n, tile = split_m ? K.mr : K.nr;
  const bool parallel = m * n * std::max<int64_t>(k, 1) * batch >= kParallelMinWork;
  auto run = [&](int t, int nt) {
    const int64_t parts = std::min<int64_t>(nt, tiles), items = parts * batch;
    for (int64_t w = items * t / nt; w < items * (t + 1) / nt; ++w) {
      const int64_t part = w / batch, bi = w % batch;
      const int64_t lo = std::min(tiles * part / parts * tile, split_m ? m : n);
      const int64_t hi = std::min(tiles * (part + 1) / parts * tile, split_m ? m : n);
      const int64_t i0 = split_m ? lo : 0, mb = split_m ? hi - lo : m;
      const int64_t j0 = split_m ? 0 : lo, nb = split_m ? n : hi - lo;
      float* cb = c + bi * batch_stride_c + i0 * ldc + j0;
      if (trivial) {
        scale_c(cb, ldc, mb, nb, beta);
        continue;
      }
      View<TA> A{a + bi * batch_stride_a + i0 * a_rs, a_rs, a_cs};
      View<TB> B{b + bi * batch_stride_b + j0 * b_cs, b_rs, b_cs};
      gemm_block(K, A, B, cb, ldc, mb, nb, k, alpha, beta);
    }
  };
  if (parallel)
    parallel_threads(run);
  else
    run(0, 1);
}
}  // namespace

void gemm_f32(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
              int64_t batch_stride_a, const float* b, int64_t ldb, int64_t batch_stride_b, float beta, float* c,
              int64_t ldc, int64_t batch_stride_c, int64_t batch) {
  gemm(trans_a, trans_b, m, n, k, alpha, a, lda, batch_stride_a, b, ldb, batch_stride_b, beta, c, ldc, batch_stride_c, batch);
}

// Products of bf16 values are exact in float32 and the sums are float32, as PyTorch's autocast
// matmuls on CUDA compute them (without rounding C to bf16). With AVX-512 BF16, vdpbf16ps also
// flushes denormals (below 2^-126) to zero and rounds after each of its two products
// (matmul_avx512.cc), as gemv.cc's bf16 kernels do.
void gemm_bf16(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const uint16_t* a, int64_t lda,
               int64_t batch_stride_a, const uint16_t* b, int64_t ldb, int64_t batch_stride_b, float beta, float* c,
               int64_t ldc, int64_t batch_stride_c, int64_t batch) {
  gemm(trans_a, trans_b, m, n, k, alpha, a, lda, batch_stride_a, b, ldb, batch_stride_b, beta, c, ldc, batch_stride_c, batch);
}

// A is read through F32AsBf16 (bf16_load.h): every packer and gemv.cc round it as they load it.
void gemm_f32_bf16(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
                   int64_t batch_stride_a, const uint16_t* b, int64_t ldb, int64_t batch_stride_b, float beta, float* c,
                   int64_t ldc, int64_t batch_stride_c, int64_t batch) {
  gemm(trans_a, trans_b, m, n, k, alpha, reinterpret_cast<const F32AsBf16*>(a), lda, batch_stride_a, b, ldb, batch_stride_b,
       beta, c, ldc, batch_stride_c, batch);
}

void gemm_epilogue(DType a_dtype, DType b_dtype, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const void* a,
                   int64_t lda, const void* b, int64_t ldb, const float* bias, float* pre, float* c, int64_t ldc) {
  auto run = [&](auto* a_typed, auto* b_typed) {
    gemm(trans_a, trans_b, m, n, k, 1.0f, a_typed, lda, 0, b_typed, ldb, 0, 0.0f, c, ldc, 0, 1);
  };
  if (b_dtype == DType::F32)
    run(static_cast<const float*>(a), static_cast<const float*>(b));
  else if (a_dtype == DType::BF16)
    run(static_cast<const uint16_t*>(a), static_cast<const uint16_t*>(b));
  else  // float32 a of a bf16 product
    run(static_cast<const F32AsBf16*>(a), static_cast<const uint16_t*>(b));
  if (bias || pre) bias_gelu_rows_f32(c, bias, pre, m, n, ldc);
}

}  // namespace cpu
}  // namespace lowrank
