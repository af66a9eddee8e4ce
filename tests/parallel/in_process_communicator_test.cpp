// InProcessCommunicator: collectives across threads give every rank the
// same result, repeatedly (no rank overwrites a buffer another still reads),
// and send/recv deliver in order between chosen peers.
#include "parallel/in_process_communicator.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace tandem::parallel {
namespace {

// Runs fn(comm) on `world` threads, one per rank.
template <typename Fn>
void run_ranks(int world, Fn fn) {
  InProcessGroup group(world);
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r)
    threads.emplace_back([&, r] {
      auto comm = group.communicator(r);
      fn(*comm);
    });
  for (auto& t : threads) t.join();
}

TEST(InProcessCommunicator, AllReduceSumsOverRanksEveryRound) {
  for (int world : {1, 2, 3, 4}) {
    std::vector<std::vector<float>> results(static_cast<size_t>(world));
    run_ranks(world, [&](Communicator& comm) {
      EXPECT_EQ(comm.world_size(), world);
      std::vector<float> data(5);
      for (int round = 0; round < 50; ++round) {
        for (int i = 0; i < 5; ++i) data[static_cast<size_t>(i)] = static_cast<float>((comm.rank() + 1) * (i + round));
        comm.all_reduce_sum(data.data(), 5);
        // sum over ranks of (rank + 1) * (i + round) = world(world+1)/2 * (i + round)
        for (int i = 0; i < 5; ++i)
          ASSERT_EQ(data[static_cast<size_t>(i)], static_cast<float>(world * (world + 1) / 2 * (i + round)))
              << "rank " << comm.rank() << " round " << round;
      }
      results[static_cast<size_t>(comm.rank())] = data;
    });
    for (const auto& r : results) EXPECT_EQ(r, results[0]);
  }
}

TEST(InProcessCommunicator, AllGatherPlacesEachRankInOrder) {
  run_ranks(3, [](Communicator& comm) {
    for (int round = 0; round < 20; ++round) {
      const float in[2] = {static_cast<float>(comm.rank() * 10 + round), static_cast<float>(comm.rank() * 10 + 1)};
      float out[6];
      comm.all_gather(in, 2, out);
      for (int r = 0; r < 3; ++r) {
        ASSERT_EQ(out[2 * r], static_cast<float>(r * 10 + round));
        ASSERT_EQ(out[2 * r + 1], static_cast<float>(r * 10 + 1));
      }
    }
  });
}

TEST(InProcessCommunicator, SendRecvPassesActivationsDownAPipeline) {
  // Rank r receives from r - 1, adds its rank, sends to r + 1: the last rank
  // sees the sum of all ranks, for each of several micro-batches in order.
  const int world = 4;
  std::vector<float> last;
  run_ranks(world, [&](Communicator& comm) {
    for (int micro = 0; micro < 3; ++micro) {
      std::vector<float> x(3, static_cast<float>(micro * 100));
      if (comm.rank() > 0) comm.recv(x.data(), 3, comm.rank() - 1);
      for (float& v : x) v += static_cast<float>(comm.rank());
      if (comm.rank() + 1 < world) comm.send(x.data(), 3, comm.rank() + 1);
      else last.insert(last.end(), x.begin(), x.end());
    }
  });
  ASSERT_EQ(last.size(), 9u);
  for (int micro = 0; micro < 3; ++micro)
    for (int i = 0; i < 3; ++i) EXPECT_EQ(last[static_cast<size_t>(micro * 3 + i)], micro * 100 + 6.0f);
}

}  // namespace
}  // namespace tandem::parallel
