#include "parallel/rank_steps.h"

#include <thread>
#include <utility>

namespace tandem::parallel {

RankSteps::RankSteps(std::vector<Rank> ranks, std::chrono::milliseconds watch_period,
                     std::chrono::microseconds spin)
    : ranks_(std::move(ranks)),
      watch_period_(watch_period),
      spin_(spin),
      give_up_(std::make_unique<std::atomic<bool>[]>(ranks_.size())) {
  for (size_t i = 0; i < ranks_.size(); ++i) give_up_[i].store(false);
}

bool RankSteps::asked_to_give_up(size_t rank) const { return give_up_[rank].load(); }

void RankSteps::set_broken(const std::string& why) { broken_ = why.empty() ? "unknown error" : why; }

void RankSteps::run(const std::function<void(size_t)>& job, const std::function<std::string()>& watch) {
  check(broken_.empty(), "the multi-GPU runner stopped after an error: " + broken_);
  const size_t n = ranks_.size();
  {
    std::lock_guard<std::mutex> lock(mu_);
    pending_ = n;
    errors_.clear();
    running_.assign(n, true);
    for (size_t i = 0; i < n; ++i) give_up_[i].store(false);  // before any rank can fail
  }
  // Every rank asked to give up, and its host-memory waits released.
  auto ask_all = [this, n] {
    for (size_t i = 0; i < n; ++i) give_up_[i].store(true);
    for (const Rank& r : ranks_)
      if (r.release) r.release();
  };
  for (size_t i = 0; i < n; ++i) {
    ranks_[i].worker->post([this, i, &job, &ask_all] {
      std::exception_ptr error;
      try {
        job(i);
      } catch (...) {
        error = std::current_exception();
      }
      if (error) {
        // Recorded, and the others asked, before this rank's abort: its
        // peers may see the abort as NCCL errors of their own, which must
        // come after this one (and the abort may take a while).
        {
          std::lock_guard<std::mutex> lock(mu_);
          errors_.push_back(error);
          ask_all();
        }
        try {
          if (ranks_[i].abort_own) ranks_[i].abort_own();
        } catch (...) {
        }
      }
      std::lock_guard<std::mutex> lock(mu_);
      running_[i] = false;
      --pending_;
      finished_.notify_all();
    });
  }
  const auto spin_until = std::chrono::steady_clock::now() + spin_;
  while (pending_.load() != 0 && std::chrono::steady_clock::now() < spin_until) std::this_thread::yield();
  std::unique_lock<std::mutex> lock(mu_);
  std::string gave_up;        // why `watch` gave the step up
  bool failed_first = false;  // a rank failed before that (its error is the cause)
  while (!finished_.wait_for(lock, watch_period_, [&] { return pending_ == 0; })) {
    if (!watch || !gave_up.empty()) continue;
    lock.unlock();
    std::string why;
    try {
      why = watch();
    } catch (const std::exception& e) {  // the workers still run: never unwind past them
      why = e.what();
    } catch (...) {
      why = "the step's watch failed";
    }
    lock.lock();
    if (why.empty() || pending_ == 0) continue;  // the step ended meanwhile: it stands
    failed_first = !errors_.empty();
    std::string still;
    for (size_t i = 0; i < n; ++i)
      if (running_[i]) still += (still.empty() ? "" : ", ") + ranks_[i].name;
    gave_up = why + (still.empty() ? "" : "; still running: " + still);
    ask_all();
  }
  if (!gave_up.empty() && !failed_first) {
    broken_ = gave_up;
    throw Error(gave_up);
  }
  // The first error to come that is not a rank giving up because of another.
  std::exception_ptr first;
  for (const std::exception_ptr& e : errors_) {
    if (!e) continue;
    try {
      std::rethrow_exception(e);
    } catch (const RankGaveUp&) {
      if (!first) first = e;
    } catch (const std::exception& x) {
      first = e;
      broken_ = x.what();
      break;
    } catch (...) {
      first = e;
      broken_ = "unknown error";
      break;
    }
  }
  if (first && broken_.empty()) broken_ = "a rank gave up";
  if (first) std::rethrow_exception(first);
}

}  // namespace tandem::parallel
