// RankSteps on plain threads: the ranks' jobs stand in for GPU ranks whose
// waits poll asked_to_give_up(), as the CUDA runner's do. A failure is
// reported as itself (not as the others' giving up) and breaks the group;
// a watch that says why gives the step up with the ranks still running,
// unless a rank failed first; hooks run where the header says.
#include "parallel/rank_steps.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/error.h"

namespace tandem::parallel {
namespace {

using namespace std::chrono_literals;

// Workers and the hooks' records for n ranks.
struct Group {
  explicit Group(size_t n, std::chrono::milliseconds period = 10ms) : workers(n) {
    std::vector<RankSteps::Rank> ranks;
    for (size_t i = 0; i < n; ++i) {
      RankSteps::Rank r;
      r.worker = &workers[i];
      r.name = "rank " + std::to_string(i);
      r.abort_own = [this, i] {
        aborted_own_on[i] = std::this_thread::get_id();
        ++aborts;
      };
      r.release = [this] { ++releases; };
      ranks.push_back(std::move(r));
    }
    steps = std::make_unique<RankSteps>(std::move(ranks), period);
  }
  // What a rank's wait does: poll until asked to give up (or `ready`).
  void wait_until_asked(size_t i, const std::atomic<bool>* ready = nullptr) {
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    while (!(ready && ready->load())) {
      if (steps->asked_to_give_up(i)) throw RankGaveUp("rank " + std::to_string(i) + " gave up");
      if (std::chrono::steady_clock::now() > deadline) throw Error("never asked to give up");
      std::this_thread::sleep_for(1ms);
    }
  }

  std::vector<RankWorker> workers;
  std::vector<std::thread::id> aborted_own_on = std::vector<std::thread::id>(workers.size());
  std::atomic<int> aborts{0}, releases{0};
  std::unique_ptr<RankSteps> steps;  // last: destroyed before the workers
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

TEST(RankSteps, EveryRankRunsItsJobOnItsOwnThread) {
  Group g(3);
  std::vector<std::thread::id> ran_on(3);
  for (int step = 0; step < 5; ++step) {
    g.steps->run([&](size_t i) { ran_on[i] = std::this_thread::get_id(); });
  }
  EXPECT_NE(ran_on[0], ran_on[1]);
  EXPECT_NE(ran_on[1], ran_on[2]);
  EXPECT_NE(ran_on[0], std::this_thread::get_id());
  EXPECT_EQ(g.steps->broken(), "");
  EXPECT_EQ(g.aborts.load(), 0);
}

// Workers poll for their next job for a while, then park; run() polls for
// the ranks' end, then parks. Steps posted back to back (found while
// polling), after a pause past every poll (found parked), and with jobs
// outlasting run()'s poll each run every rank's job once (a lost wake-up
// would hang here until ctest's timeout).
TEST(RankSteps, StepsRunWhetherTheThreadsPollOrHaveParked) {
  std::vector<RankWorker> workers(2);  // default poll: 2 ms
  std::vector<RankSteps::Rank> ranks(2);
  for (size_t i = 0; i < 2; ++i) {
    ranks[i].worker = &workers[i];
    ranks[i].name = "rank " + std::to_string(i);
  }
  RankSteps steps(std::move(ranks), 10ms, 1ms);  // run() polls 1 ms
  std::vector<int> counts(2, 0);
  auto step = [&](std::chrono::milliseconds job_time) {
    steps.run([&](size_t i) {
      std::this_thread::sleep_for(job_time);
      ++counts[i];
    });
  };
  for (int n = 0; n < 50; ++n) step(0ms);  // back to back: the workers still poll
  EXPECT_EQ(counts, std::vector<int>(2, 50));
  for (int n = 0; n < 3; ++n) {
    std::this_thread::sleep_for(20ms);  // the workers have parked
    step(0ms);
  }
  EXPECT_EQ(counts, std::vector<int>(2, 53));
  for (int n = 0; n < 3; ++n) step(5ms);  // run() parks before the jobs end
  EXPECT_EQ(counts, std::vector<int>(2, 56));
}

TEST(RankSteps, AFailureIsReportedAsItselfAndBreaksTheGroup) {
  Group g(3);
  std::thread::id failing_thread;
  const std::string error = error_of([&] {
    g.steps->run([&](size_t i) {
      if (i == 1) {
        failing_thread = std::this_thread::get_id();
        throw Error("rank 1: out of memory");
      }
      g.wait_until_asked(i);  // the others wait in "collectives" until asked
    });
  });
  EXPECT_EQ(error, "rank 1: out of memory");
  EXPECT_EQ(g.steps->broken(), "rank 1: out of memory");
  // Every rank that threw aborted its own communicators on its own thread;
  // every rank's release ran (for the failure, from its thread).
  EXPECT_EQ(g.aborted_own_on[1], failing_thread);
  EXPECT_EQ(g.aborts.load(), 3);
  EXPECT_GE(g.releases.load(), 3);
  // Broken: further steps are refused at once.
  bool ran = false;
  EXPECT_NE(error_of([&] { g.steps->run([&](size_t) { ran = true; }); }).find("stopped after an error: rank 1"),
            std::string::npos);
  EXPECT_FALSE(ran);
}

TEST(RankSteps, TheWatchGivesTheStepUpNamingTheRanksStillRunning) {
  Group g(3);
  std::atomic<int> asked{0};
  const std::string error = error_of([&] {
    g.steps->run(
        [&](size_t i) {
          if (i == 0) return;  // done at once
          g.wait_until_asked(i);  // ranks 1 and 2 "hang"
        },
        [&]() -> std::string { return ++asked >= 3 ? "a step ran past 1 s" : ""; });
  });
  // (Rank 0 is named too if its thread had not run yet.)
  EXPECT_EQ(error.rfind("a step ran past 1 s; still running: ", 0), 0u) << error;
  EXPECT_NE(error.find("rank 1, rank 2"), std::string::npos) << error;
  EXPECT_EQ(g.steps->broken(), error);
  EXPECT_EQ(asked.load(), 3) << "asked until it said why, then no more";
  EXPECT_EQ(g.aborts.load(), 2);  // the two that gave up
}

TEST(RankSteps, ARankThatFailedBeforeTheGiveUpIsTheCause) {
  Group g(2);
  const std::string error = error_of([&] {
    g.steps->run(
        [&](size_t i) {
          if (i == 1) throw Error("rank 1: NCCL: remote process exited");
          // Rank 0 is stuck where no request to give up reaches it until
          // the watch has given the step up too: releases ran once for the
          // failure (2 ranks) and once for the give-up. Its error is the
          // knock-on, though it comes first in rank order.
          while (g.releases < 4) std::this_thread::sleep_for(1ms);
          throw Error("rank 0: NCCL: the communicator was aborted");
        },
        // Says why once the failure is recorded (it asked every rank).
        [&]() -> std::string {
          return g.steps->asked_to_give_up(0) ? "node 0 lost node 1: it closed the link, mid-step" : "";
        });
  });
  EXPECT_EQ(error, "rank 1: NCCL: remote process exited");
  EXPECT_EQ(g.releases.load(), 6);  // rank 0's knock-on asked every rank again
}

// A failing rank's error is recorded before its abort runs: errors its
// abort causes in its peers come later.
TEST(RankSteps, AFailureComesBeforeTheErrorsItsAbortCauses) {
  std::atomic<bool> peer_threw{false};
  Group g(2);
  // Rank 1's abort "ends" rank 0's collective: rank 0 then fails with an
  // NCCL error of its own (not a RankGaveUp), before the abort returns.
  std::vector<RankSteps::Rank> ranks;
  for (size_t i = 0; i < 2; ++i) {
    RankSteps::Rank r;
    r.worker = &g.workers[i];
    r.name = "rank " + std::to_string(i);
    if (i == 1) {
      r.abort_own = [&] {
        while (!peer_threw) std::this_thread::sleep_for(1ms);
      };
    }
    ranks.push_back(std::move(r));
  }
  g.steps = std::make_unique<RankSteps>(std::move(ranks), 10ms);
  const std::string error = error_of([&] {
    g.steps->run([&](size_t i) {
      if (i == 1) throw Error("rank 1: out of memory");
      while (!g.steps->asked_to_give_up(0)) std::this_thread::sleep_for(1ms);
      peer_threw = true;
      throw Error("rank 0: NCCL: the communicator was aborted");
    });
  });
  EXPECT_EQ(error, "rank 1: out of memory");
}

TEST(RankSteps, KnockOnErrorsAfterTheGiveUpDoNotReplaceItsReason) {
  Group g(2);
  const std::string error = error_of([&] {
    g.steps->run(
        [&](size_t) {
          while (!g.steps->asked_to_give_up(0)) std::this_thread::sleep_for(1ms);
          throw Error("NCCL: the communicator was aborted");
        },
        [] { return std::string("node 1 lost node 0: it closed the link, mid-step"); });
  });
  EXPECT_EQ(error, "node 1 lost node 0: it closed the link, mid-step; still running: rank 0, rank 1");
}

TEST(RankSteps, AWatchThatThrowsGivesTheStepUpWithoutUnwindingPastTheJobs) {
  Group g(2);
  std::atomic<int> finished{0};
  const std::string error = error_of([&] {
    g.steps->run(
        [&](size_t i) {
          struct Count {
            std::atomic<int>& n;
            ~Count() { ++n; }
          } count{finished};
          g.wait_until_asked(i);
        },
        []() -> std::string { throw Error("cannot read a node link"); });
  });
  EXPECT_EQ(error, "cannot read a node link; still running: rank 0, rank 1");
  EXPECT_EQ(finished.load(), 2) << "run() returned only after every job had ended";
}

}  // namespace
}  // namespace tandem::parallel
