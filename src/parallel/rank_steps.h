// The steps of a group of ranks, each on its own thread (RankWorker): a job
// per rank, a wait for all of them, and what happens when one fails or the
// step is given up.
//
// A rank that fails mid-step leaves its peers waiting in collectives it will
// never join. So its own `abort_own` runs on its thread (aborting its
// communicators, which ends what it queued), every rank is asked to give up
// (asked_to_give_up(), which the ranks' waits poll: they abort their own
// communicators then and throw RankGaveUp), and every rank's `release` runs
// at once from the failing thread (for waits no communicator abort ends).
// The step then fails with the first error to come that is not a
// RankGaveUp, and the group is broken: it refuses further steps.
//
// While it waits, run() asks `watch` every watch period whether to give the
// step up (parallel::StepWatch: a lost node, a time limit); when it says
// why, the ranks are asked to give up as for a failure, and the step fails
// with that reason and the ranks still running, unless a rank had failed
// before (its error is the cause; errors after the give-up are its
// knock-on). A step whose ranks all ended while the watch was asked stands.
//
// run() polls for the ranks' end for `spin` (yielding the core) before it
// parks on a condition variable: a decode step lasts a few milliseconds,
// and a parked thread takes tens of microseconds to wake, the GPUs idle.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/error.h"
#include "parallel/rank_worker.h"

namespace tandem::parallel {

// Thrown by a rank's wait that gave up because it was asked to (another
// rank failed, or the step was given up), not by the failure itself.
struct RankGaveUp : Error {
  using Error::Error;
};

class RankSteps {
 public:
  struct Rank {
    RankWorker* worker = nullptr;  // runs the rank's jobs; outlives the RankSteps
    std::string name;              // in messages: "rank 2 (GPU 0)"
    // On the rank's own thread, after its job threw: ends what the rank
    // queued (its communicators' abort). May be empty.
    std::function<void()> abort_own;
    // From any thread, when any rank failed or the step is given up: ends
    // waits that no communicator abort ends (host memory only). May be empty.
    std::function<void()> release;
  };

  explicit RankSteps(std::vector<Rank> ranks,
                     std::chrono::milliseconds watch_period = std::chrono::milliseconds(100),
                     std::chrono::microseconds spin = std::chrono::microseconds(5000));
  RankSteps(const RankSteps&) = delete;
  RankSteps& operator=(const RankSteps&) = delete;

  // Runs job(i) on rank i's worker for every rank and waits for all; throws
  // as the header says. Throws tandem::Error at once when broken.
  void run(const std::function<void(size_t rank)>& job, const std::function<std::string()>& watch = {});

  // Whether rank i's waits should give up now (polled from its thread).
  bool asked_to_give_up(size_t rank) const;

  // Why the group stopped ("" while it works). set_broken (which replaces
  // the reason): from the thread that calls run(), for failures outside the
  // ranks' jobs.
  const std::string& broken() const { return broken_; }
  void set_broken(const std::string& why);

  size_t size() const { return ranks_.size(); }

 private:
  std::vector<Rank> ranks_;
  std::chrono::milliseconds watch_period_;
  std::chrono::microseconds spin_;
  std::unique_ptr<std::atomic<bool>[]> give_up_;  // by rank
  std::mutex mu_;
  std::condition_variable finished_;
  std::atomic<size_t> pending_{0};  // ranks whose job has not ended; written under mu_
  std::vector<std::exception_ptr> errors_;  // in the order they came
  std::vector<bool> running_;               // by rank: its job has not ended
  std::string broken_;
};

}  // namespace tandem::parallel
