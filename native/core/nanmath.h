// max that keeps NaN, shared by the CPU and CUDA kernels. std::max, fmax and fmaxf drop a NaN
// argument: a row maximum taken with them turns a row of NaN scores into -inf, which reads as a
// fully masked row (output 0) instead of NaN, and an inf-norm of NaN gradients into a number.
#pragma once
#include "dtype.h"

namespace lowrank {

// NaN when either argument is NaN, else the larger one.
template <typename T>
LR_HD T nan_max(T a, T b) { return a != a || a > b ? a : b; }

}  // namespace lowrank
