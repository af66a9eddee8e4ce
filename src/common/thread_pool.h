// A fixed set of worker threads for data-parallel loops in the CPU backend.
// The calling thread takes part as worker 0, so a pool of size 1 runs inline.
// Passed explicitly to whoever needs it; there is no global pool.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace tandem {

class ThreadPool {
 public:
  // n_threads <= 0 picks the number of online cores.
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }

  // Calls fn(thread_index) once on each of size() threads and waits for all.
  // PRECONDITIONS: not re-entered from inside fn.
  void run(const std::function<void(int thread_index)>& fn);

  // Splits [0, n) into size() contiguous ranges and calls fn(begin, end) for
  // each non-empty range, in parallel.
  void parallel_for(int64_t n, const std::function<void(int64_t begin, int64_t end)>& fn);

 private:
  void worker_loop(int index);
  void wait_for_workers();

  int n_threads_;
  std::vector<std::thread> workers_;
  // Hand-off: run() publishes job_ and bumps generation_; workers spin on
  // generation_ for a while, then sleep on start_cv_ (counted in sleepers_, so
  // that run() takes the mutex only when someone sleeps).
  std::atomic<const std::function<void(int)>*> job_{nullptr};
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};   // workers still running the current job
  std::atomic<int> sleepers_{0};  // workers waiting on start_cv_
  std::atomic<bool> caller_sleeping_{false};
  std::atomic<bool> stopping_{false};
  std::mutex mutex_;
  std::condition_variable start_cv_;
  std::condition_variable done_cv_;
};

}  // namespace tandem
