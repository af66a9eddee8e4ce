// A thread that runs one job at a time. A GPU rank's CUDA and NCCL calls
// all come from its worker (a rank's communicators block in collectives
// until the other ranks, on their own threads, join them). A job reports
// its end itself (RankSteps does).
#pragma once

#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

namespace tandem::parallel {

class RankWorker {
 public:
  RankWorker() : thread_([this] { loop(); }) {}
  // Joins the thread after the job in hand, if any, has ended.
  ~RankWorker() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
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
    }
    wake_.notify_all();
  }

 private:
  void loop() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      wake_.wait(lock, [&] { return stop_ || job_; });
      if (!job_) return;
      std::function<void()> job = std::move(job_);
      job_ = nullptr;
      lock.unlock();
      job();
      lock.lock();
    }
  }

  std::mutex mu_;
  std::condition_variable wake_;
  std::function<void()> job_;
  bool stop_ = false;
  std::thread thread_;  // last: starts after the state above exists
};

}  // namespace tandem::parallel
