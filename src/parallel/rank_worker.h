// A thread that runs one job at a time. A GPU rank's CUDA and NCCL calls
// all come from its worker (a rank's communicators block in collectives
// until the other ranks, on their own threads, join them). A job reports
// its end itself (RankSteps does).
//
// Decode steps come every few milliseconds, and a thread parked on a
// condition variable takes tens of microseconds to wake, with every GPU
// idle meanwhile. So an idle worker first polls for its next job for
// `spin` (yielding the core between polls), and parks only after that.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

namespace tandem::parallel {

class RankWorker {
 public:
  explicit RankWorker(std::chrono::microseconds spin = std::chrono::microseconds(2000))
      : spin_(spin), thread_([this] { loop(); }) {}
  // Joins the thread after the job in hand, if any, has ended.
  ~RankWorker() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
      posted_.store(true, std::memory_order_release);  // ends the poll
    }
    wake_.notify_all();
    thread_.join();
  }
  RankWorker(const RankWorker&) = delete;
  RankWorker& operator=(const RankWorker&) = delete;

  // PRECONDITIONS: the previous job has ended; `job` throws nothing.
  void post(std::function<void()> job) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      job_ = std::move(job);
      posted_.store(true, std::memory_order_release);
    }
    wake_.notify_all();
  }

 private:
  void loop() {
    for (;;) {
      // Polled without the lock; the job is taken under it.
      const auto until = std::chrono::steady_clock::now() + spin_;
      while (!posted_.load(std::memory_order_acquire) && std::chrono::steady_clock::now() < until)
        std::this_thread::yield();
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, [&] { return stop_ || job_; });
      if (!job_) return;
      std::function<void()> job = std::move(job_);
      job_ = nullptr;
      posted_.store(stop_, std::memory_order_relaxed);  // a stop asked meanwhile still ends the next poll
      lock.unlock();
      job();
    }
  }

  const std::chrono::microseconds spin_;
  std::mutex mu_;
  std::condition_variable wake_;
  std::function<void()> job_;
  std::atomic<bool> posted_{false};  // job_ or stop_ is set (a hint for the poll; they decide)
  bool stop_ = false;
  std::thread thread_;  // last: starts after the state above exists
};

}  // namespace tandem::parallel
