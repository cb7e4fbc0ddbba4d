// A small persistent thread pool: the calling thread takes part, so with N threads N-1 workers
// wait between jobs, polling for ~100 µs and then sleeping on a condition variable. Kernels split their outer loops with parallel_for.
#pragma once
#include <cstdint>
#include <functional>

namespace lowrank {
namespace cpu {

// Grain for loops that only stream memory (adds, copies, fills). Up to ~1M elements (4 MB an
// operand, still in L2/L3) one thread is as fast as two and waking the pool's worker costs more,
// far more when another process holds the second core. Measured on 2 cores (min of 200): add of
// 256x768 30 us on one thread vs 45 us on two, 256x3072 127 vs 142 us, 1024x3072 940 vs 630 us.
constexpr int64_t kStreamGrain = int64_t(1) << 19;

// Grain for compute loops (exp, GELU, Philox, row-wise norms): chunks below about this many
// elements don't pay for waking a worker.
constexpr int64_t kComputeGrain = int64_t(1) << 14;

// Runs fn(begin, end) over [0, n) split into at most num_threads() contiguous chunks of at least
// `grain` items. Runs inline when the work is small or when called from inside a parallel region.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

// Runs fn(t, nt) once on each of nt threads (t = 0..nt-1), for kernels that split work themselves.
void parallel_threads(const std::function<void(int, int)>& fn);

}  // namespace cpu
}  // namespace lowrank
