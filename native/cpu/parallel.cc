#include "parallel.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#include "../backend.h"

namespace lowrank {
namespace cpu {
namespace {

thread_local bool t_in_parallel = false;

// How long a thread that waits on the pool (a worker for its next job, the caller for the workers
// to finish) polls before it sleeps on a condition variable. A training step runs hundreds of
// jobs back to back, most under a millisecond (a 256x768x768 GEMM takes ~1 ms on 2 cores), and a
// futex wake-up in a VM takes tens of microseconds, sometimes far more; polling briefly makes the
// next job start at once. Short, so a worker idle between steps gives its core back quickly.
constexpr auto kSpin = std::chrono::microseconds(100);

// Polls done() until it holds or kSpin has passed. Each poll yields the core, so that on
// a busy machine, where the thread we wait for may be queued behind us, it gets to run.
template <class F>
void spin_until(F done) {
  const auto end = std::chrono::steady_clock::now() + kSpin;
  while (!done() && std::chrono::steady_clock::now() < end) std::this_thread::yield();
}

class Pool {
 public:
  explicit Pool(int n) { resize(n); }
  ~Pool() { stop(); }

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  void resize(int n) {
    stop();
    n = std::max(1, n);
    shutdown_ = false;
    // New workers must wait for the next job, not replay the generation already finished.
    uint64_t current;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      current = generation_;
    }
    for (int t = 1; t < n; ++t) workers_.emplace_back([this, t, current] { loop(t, current); });
  }

  void run(const std::function<void(int, int)>& fn) {
    int nt = size();
    if (nt == 1 || t_in_parallel) {
      fn(0, 1);
      return;
    }
    std::unique_lock<std::mutex> job_lock(job_mutex_);  // one job at a time
    {
      std::lock_guard<std::mutex> lock(mutex_);
      job_ = &fn;
      pending_ = nt - 1;
      ++generation_;
    }
    wake_.notify_all();
    t_in_parallel = true;
    fn(0, nt);
    t_in_parallel = false;
    spin_until([this] { return pending_.load(std::memory_order_acquire) == 0; });
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [this] { return pending_ == 0; });
    job_ = nullptr;
  }

 private:
  void loop(int t, uint64_t seen) {
    t_in_parallel = true;
    for (;;) {
      const std::function<void(int, int)>* job;
      int nt;
      spin_until([&] { return generation_.load(std::memory_order_acquire) != seen; });
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return shutdown_ || generation_ != seen; });
        if (shutdown_) return;
        seen = generation_;
        job = job_;
        nt = size();
      }
      (*job)(t, nt);
      std::lock_guard<std::mutex> lock(mutex_);
      if (--pending_ == 0) done_.notify_one();
    }
  }

  void stop() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      shutdown_ = true;
    }
    wake_.notify_all();
    for (auto& w : workers_) w.join();
    workers_.clear();
  }

  std::vector<std::thread> workers_;
  std::mutex mutex_, job_mutex_;
  std::condition_variable wake_, done_;
  const std::function<void(int, int)>* job_ = nullptr;
  // Written under mutex_; atomic so that spin_until may poll them without it.
  std::atomic<int> pending_{0};
  std::atomic<uint64_t> generation_{0};
  bool shutdown_ = false;
};

int default_threads() {
  if (const char* env = std::getenv("LOWRANK_NUM_THREADS")) {
    int n = std::atoi(env);
    if (n > 0) return n;
  }
  return std::max(1u, std::thread::hardware_concurrency());
}

Pool& pool() {
  static Pool p(default_threads());
  return p;
}

}  // namespace

int num_threads() { return pool().size(); }
void set_num_threads(int n) { pool().resize(n); }

void parallel_threads(const std::function<void(int, int)>& fn) { pool().run(fn); }

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  int64_t max_chunks = std::max<int64_t>(1, n / std::max<int64_t>(1, grain));
  if (max_chunks == 1 || t_in_parallel || num_threads() == 1) {
    fn(0, n);
    return;
  }
  pool().run([&](int t, int nt) {
    int64_t chunks = std::min<int64_t>(nt, max_chunks);
    if (t >= chunks) return;
    int64_t begin = n * t / chunks, end = n * (t + 1) / chunks;
    fn(begin, end);
  });
}

}  // namespace cpu
}  // namespace lowrank
