// run_level against a fake backend: how many streams are in flight, that
// every request runs once, and that a stop request ends the level early.
#include <gtest/gtest.h>

#include <set>

#include "client/bench/bench_runner.h"

namespace tandem::client::bench {
namespace {

class FakeBackend : public Backend {
 public:
  explicit FakeBackend(asio::any_io_executor ex) : ex_(std::move(ex)) {}
  asio::awaitable<ServerInfo> open() override { co_return ServerInfo{"fake", "", 0}; }
  asio::awaitable<int64_t> count_prompt_tokens(const std::string& text) override { co_return 1; }
  bool cheap_token_counts() const override { return true; }
  asio::awaitable<void> close() override { co_return; }

  asio::awaitable<RequestResult> run(const PreparedRequest& request, Clock::time_point level_start) override {
    in_flight++;
    max_in_flight = std::max(max_in_flight, in_flight);
    seen.insert(request.spec.index);
    RequestResult r;
    r.index = request.spec.index;
    r.max_tokens = request.spec.max_tokens;
    r.start_ms = ms_between(level_start, Clock::now());
    asio::steady_timer t(ex_, std::chrono::milliseconds(3));
    co_await t.async_wait(asio::use_awaitable);
    r.arrival_ms = {1.0, 2.0};
    r.arrival_tokens = {1, 1};
    r.e2e_ms = 3.0;
    r.completion_tokens = 2;
    r.prompt_tokens = 5;
    r.finish_reason = "length";
    r.ok = request.spec.index != 4;  // one failure
    if (!r.ok) r.error_code = "overloaded";
    in_flight--;
    if (++completed == stop_after && stop) *stop = true;
    co_return r;
  }

  int in_flight = 0, max_in_flight = 0, completed = 0, stop_after = -1;
  bool* stop = nullptr;
  std::set<size_t> seen;

 private:
  asio::any_io_executor ex_;
};

std::vector<PreparedRequest> requests(size_t n) {
  std::vector<PreparedRequest> out;
  for (const RequestSpec& s : make_workload(static_cast<int64_t>(n), {5, 5}, {2, 2}, 1)) out.push_back({s, "x"});
  return out;
}

LevelReport run_one(FakeBackend& backend, asio::io_context& io, size_t n, int concurrency, const bool* stop) {
  LevelReport report;
  const auto reqs = requests(n);
  asio::co_spawn(io, run_level(backend, reqs, concurrency, nullptr, stop),
                 [&](std::exception_ptr e, LevelReport r) {
                   if (e) std::rethrow_exception(e);
                   report = std::move(r);
                 });
  io.run();
  io.restart();
  return report;
}

TEST(BenchRunLevel, KeepsConcurrencyStreamsInFlightAndRunsEachRequestOnce) {
  asio::io_context io;
  FakeBackend backend(io.get_executor());
  const LevelReport r = run_one(backend, io, 10, 3, nullptr);
  EXPECT_EQ(backend.max_in_flight, 3);
  EXPECT_EQ(backend.seen.size(), 10u);
  EXPECT_EQ(r.concurrency, 3);
  EXPECT_EQ(r.requests, 10u);
  EXPECT_EQ(r.succeeded, 9u);
  EXPECT_EQ(r.errors.at("overloaded"), 1u);
  EXPECT_FALSE(r.interrupted);
  EXPECT_EQ(r.output_tokens, 18);
  // 10 requests of 3 ms, 3 at a time: at least 4 rounds.
  EXPECT_GE(r.duration_s, 0.012);
  for (size_t i = 0; i < r.results.size(); ++i) EXPECT_EQ(r.results[i].index, i);
}

TEST(BenchRunLevel, MoreStreamsThanRequests) {
  asio::io_context io;
  FakeBackend backend(io.get_executor());
  const LevelReport r = run_one(backend, io, 4, 64, nullptr);
  EXPECT_EQ(backend.max_in_flight, 4);
  EXPECT_EQ(r.requests, 4u);
}

TEST(BenchRunLevel, StopEndsTheLevelAfterTheRequestsInFlight) {
  asio::io_context io;
  FakeBackend backend(io.get_executor());
  bool stop = false;
  backend.stop = &stop;
  backend.stop_after = 3;
  const LevelReport r = run_one(backend, io, 20, 2, &stop);
  EXPECT_TRUE(r.interrupted);
  EXPECT_GE(r.requests, 3u);
  EXPECT_LE(r.requests, 4u) << "only the request in flight finishes after the stop";
  EXPECT_EQ(r.results.size(), r.requests);
  EXPECT_EQ(static_cast<size_t>(backend.completed), r.requests);
}

}  // namespace
}  // namespace tandem::client::bench
