// A small persistent thread pool: the calling thread takes part, so with N threads N-1 workers
// wait on a condition variable between jobs. Kernels split their outer loops with parallel_for.
#pragma once
#include <cstdint>
#include <functional>

namespace lowrank {
namespace cpu {

// Runs fn(begin, end) over [0, n) split into at most num_threads() contiguous chunks of at least
// `grain` items. Runs inline when the work is small or when called from inside a parallel region.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

// Runs fn(t, nt) once on each of nt threads (t = 0..nt-1), for kernels that split work themselves.
void parallel_threads(const std::function<void(int, int)>& fn);

}  // namespace cpu
}  // namespace lowrank
