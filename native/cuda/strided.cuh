// Strided walks over a row-major shape shared by several operands (a copy's source and
// destination, a binary op's inputs and output), simplified on the host before a launch: dims of
// size 1 dropped, and each dim merged into the one before it where every operand steps over the
// pair as over one dim. Most walks then have one or two dims (a contiguous add, a bias broadcast
// over rows, a transpose) and run in a 2-D kernel with no per-element index divisions.
#pragma once
#include <cstdint>

#include "../backend.h"

namespace lowrank {
namespace cuda {

template <int kOperands>
struct StridedShape {
  int ndim = 0;
  int64_t shape[kMaxDims] = {};
  int64_t strides[kOperands][kMaxDims] = {};
};

// strides[o] holds operand o's `ndim` strides. The result has at least 2 dims (leading ones of size
// 1 with stride 0 added), so a 2-D kernel takes it whenever it has exactly 2.
template <int kOperands>
StridedShape<kOperands> merge_dims(int ndim, const int64_t* shape, const int64_t* const (&strides)[kOperands]) {
  StridedShape<kOperands> s;
  for (int d = 0; d < ndim; ++d) {
    if (shape[d] == 1) continue;
    const int m = s.ndim - 1;
    bool merges = m >= 0;
    for (int o = 0; o < kOperands && merges; ++o) merges = s.strides[o][m] == shape[d] * strides[o][d];
    const int at = merges ? m : s.ndim++;
    s.shape[at] = merges ? s.shape[m] * shape[d] : shape[d];
    for (int o = 0; o < kOperands; ++o) s.strides[o][at] = strides[o][d];
  }
  while (s.ndim < 2) {  // shift right, a leading dim of 1
    for (int d = s.ndim; d > 0; --d) {
      s.shape[d] = s.shape[d - 1];
      for (int o = 0; o < kOperands; ++o) s.strides[o][d] = s.strides[o][d - 1];
    }
    s.shape[0] = 1;
    for (int o = 0; o < kOperands; ++o) s.strides[o][0] = 0;
    ++s.ndim;
  }
  return s;
}

// Grid of the 2-D kernels: x across a row's columns, y over the rows (a kernel loops past 65535).
inline dim3 grid_2d(int64_t rows, int64_t cols, int threads) {
  const int64_t col_blocks = (cols + threads - 1) / threads;
  return dim3(unsigned(col_blocks < 1024 ? col_blocks : 1024), unsigned(rows < 65535 ? rows : 65535));
}

}  // namespace cuda
}  // namespace lowrank
