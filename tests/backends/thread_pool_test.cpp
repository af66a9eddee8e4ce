// The thread pool the CPU kernels run on: every index once, every time, also
// across the spin-then-sleep boundary of the workers.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "common/thread_pool.h"

namespace tandem {
namespace {

TEST(ThreadPool, RunCallsEveryIndexOnce) {
  for (int n : {1, 2, 3, 5}) {
    ThreadPool pool(n);
    EXPECT_EQ(pool.size(), n);
    for (int iter = 0; iter < 500; ++iter) {
      std::vector<std::atomic<int>> hits(n);
      pool.run([&](int i) { hits[i].fetch_add(1); });
      for (int i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "pool " << n << " iter " << iter;
    }
  }
}

TEST(ThreadPool, ParallelForCoversRangeExactly) {
  ThreadPool pool(3);
  for (int64_t n : {0, 1, 2, 3, 7, 1000}) {
    std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
    pool.parallel_for(n, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) hits[i].fetch_add(1);
    });
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << n;
  }
}

TEST(ThreadPool, WakesAfterWorkersWentToSleep) {
  ThreadPool pool(2);
  std::atomic<int> sum{0};
  for (int iter = 0; iter < 3; ++iter) {
    std::this_thread::sleep_for(std::chrono::milliseconds(30));  // past the spin phase
    pool.run([&](int i) { sum.fetch_add(i + 1); });
  }
  EXPECT_EQ(sum.load(), 9);
}

}  // namespace
}  // namespace tandem
