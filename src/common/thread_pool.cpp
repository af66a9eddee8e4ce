#include "common/thread_pool.h"

#include <algorithm>

namespace tandem {

ThreadPool::ThreadPool(int n_threads) {
  if (n_threads <= 0) n_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  n_threads_ = n_threads;
  for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    ++generation_;
  }
  spin_generation_.fetch_add(1, std::memory_order_release);
  start_cv_.notify_all();
  for (auto& t : workers_) t.join();
}

// Workers spin briefly on a generation counter before sleeping: decode issues
// hundreds of small parallel loops per token, and a futex wake per loop would
// cost more than the loop itself.
void ThreadPool::worker_loop(int index) {
  uint64_t seen = 0;
  for (;;) {
    const std::function<void(int)>* job = nullptr;
    bool got = false;
    for (int spin = 0; spin < 20000; ++spin) {
      if (spin_generation_.load(std::memory_order_acquire) != seen) {
        got = true;
        break;
      }
#if defined(__x86_64__)
      __builtin_ia32_pause();
#endif
    }
    {
      std::unique_lock<std::mutex> lock(mutex_);
      if (!got) start_cv_.wait(lock, [&] { return generation_ != seen; });
      seen = generation_;
      if (stopping_) return;
      job = job_;
    }
    (*job)(index);
    if (spin_pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::lock_guard<std::mutex> lock(mutex_);
      done_cv_.notify_one();
    }
  }
}

void ThreadPool::run(const std::function<void(int)>& fn) {
  if (n_threads_ == 1) {
    fn(0);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    job_ = &fn;
    spin_pending_.store(n_threads_ - 1, std::memory_order_relaxed);
    ++generation_;
    spin_generation_.store(generation_, std::memory_order_release);
  }
  start_cv_.notify_all();
  fn(0);
  for (int spin = 0; spin < 200000; ++spin) {
    if (spin_pending_.load(std::memory_order_acquire) == 0) return;
#if defined(__x86_64__)
    __builtin_ia32_pause();
#endif
  }
  std::unique_lock<std::mutex> lock(mutex_);
  done_cv_.wait(lock, [&] { return spin_pending_.load(std::memory_order_acquire) == 0; });
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
