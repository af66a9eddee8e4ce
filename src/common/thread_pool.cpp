#include "common/thread_pool.h"

#include <algorithm>

namespace tandem {

namespace {

// Spin budgets. A decode step issues ~200 parallel loops, each a few tens of
// microseconds long, so a futex wake per loop would cost more than the loop:
// workers and the caller spin first. After kPauseSpins they also yield, so that
// an oversubscribed machine (more threads than free cores) still progresses;
// after kYieldSpins they sleep.
constexpr int kPauseSpins = 4000;
constexpr int kYieldSpins = 2000;

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

}  // namespace

ThreadPool::ThreadPool(int n_threads) {
  if (n_threads <= 0) n_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  n_threads_ = n_threads;
  for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  stopping_.store(true);
  generation_.fetch_add(1);
  {
    std::lock_guard<std::mutex> lock(mutex_);
  }
  start_cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::worker_loop(int index) {
  uint64_t seen = 0;
  for (;;) {
    int spin = 0;
    while (generation_.load(std::memory_order_acquire) == seen) {
      if (++spin < kPauseSpins) {
        cpu_relax();
      } else if (spin < kPauseSpins + kYieldSpins) {
        std::this_thread::yield();
      } else {
        // Sleep. sleepers_ is raised before the last check of generation_ (both
        // seq_cst), so run() either sees a sleeper and notifies under the mutex,
        // or this check sees the new generation.
        std::unique_lock<std::mutex> lock(mutex_);
        sleepers_.fetch_add(1);
        start_cv_.wait(lock, [&] { return generation_.load() != seen; });
        sleepers_.fetch_sub(1);
        break;
      }
    }
    seen = generation_.load(std::memory_order_acquire);
    if (stopping_.load()) return;
    (*job_.load(std::memory_order_acquire))(index);
    // seq_cst pairs with caller_sleeping_ in wait_for_workers (store, then load).
    if (pending_.fetch_sub(1) == 1 && caller_sleeping_.load()) {
      std::lock_guard<std::mutex> lock(mutex_);
      done_cv_.notify_one();
    }
  }
}

void ThreadPool::wait_for_workers() {
  for (int spin = 0; spin < kPauseSpins + kYieldSpins; ++spin) {
    if (pending_.load(std::memory_order_acquire) == 0) return;
    if (spin < kPauseSpins) {
      cpu_relax();
    } else {
      std::this_thread::yield();
    }
  }
  std::unique_lock<std::mutex> lock(mutex_);
  caller_sleeping_.store(true);
  done_cv_.wait(lock, [&] { return pending_.load() == 0; });
  caller_sleeping_.store(false);
}

void ThreadPool::run(const std::function<void(int)>& fn) {
  if (n_threads_ == 1) {
    fn(0);
    return;
  }
  job_.store(&fn, std::memory_order_relaxed);
  pending_.store(n_threads_ - 1, std::memory_order_relaxed);
  generation_.fetch_add(1);  // seq_cst: publishes job_ and pending_, ordered before the sleepers_ check
  if (sleepers_.load() > 0) {
    { std::lock_guard<std::mutex> lock(mutex_); }
    start_cv_.notify_all();
  }
  fn(0);
  wait_for_workers();
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  const int64_t parts = std::min<int64_t>(n, n_threads_);
  if (parts == 1) {
    fn(0, n);
    return;
  }
  run([&](int t) {
    if (t >= parts) return;
    const int64_t begin = n * t / parts;
    const int64_t end = n * (t + 1) / parts;
    if (begin < end) fn(begin, end);
  });
}

}  // namespace tandem
