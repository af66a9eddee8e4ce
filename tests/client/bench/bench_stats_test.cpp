// Statistics, options parsing and workload generation of `tandem bench`.
#include <gtest/gtest.h>

#include <cmath>
#include <set>
#include <stdexcept>

#include "client/bench/bench_options.h"
#include "client/bench/level_report.h"
#include "client/bench/stats.h"
#include "client/bench/workload.h"

namespace tandem::client::bench {
namespace {

TEST(BenchStats, QuantilesInterpolateBetweenClosestRanks) {
  std::vector<double> v;
  for (int i = 1; i <= 10; ++i) v.push_back(i);
  EXPECT_DOUBLE_EQ(quantile_sorted(v, 0.0), 1.0);
  EXPECT_DOUBLE_EQ(quantile_sorted(v, 0.5), 5.5);
  EXPECT_DOUBLE_EQ(quantile_sorted(v, 0.9), 9.1);
  EXPECT_NEAR(quantile_sorted(v, 0.99), 9.91, 1e-12);
  EXPECT_DOUBLE_EQ(quantile_sorted(v, 1.0), 10.0);
  EXPECT_DOUBLE_EQ(quantile_sorted({7.0}, 0.99), 7.0);
}

TEST(BenchStats, SummarySortsItsInput) {
  const Summary s = summarize({30, 10, 20, 40, 1000});
  EXPECT_EQ(s.count, 5u);
  EXPECT_DOUBLE_EQ(s.mean, 220.0);
  EXPECT_DOUBLE_EQ(s.min, 10.0);
  EXPECT_DOUBLE_EQ(s.max, 1000.0);
  EXPECT_DOUBLE_EQ(s.p50, 30.0);
  EXPECT_DOUBLE_EQ(s.p90, 40 + 0.6 * 960);  // position 3.6
  EXPECT_LE(s.p50, s.p90);
  EXPECT_LE(s.p90, s.p99);
  EXPECT_LE(s.p99, s.max);
}

TEST(BenchStats, EmptySummaryHasNoSamples) {
  const Summary s = summarize({});
  EXPECT_EQ(s.count, 0u);
  EXPECT_EQ(s.mean, 0.0);
  EXPECT_EQ(s.p99, 0.0);
}

TEST(BenchOptions, LengthRanges) {
  const LengthRange fixed = parse_length_range("128", "--prompt-tokens", 1);
  EXPECT_EQ(fixed.min, 128);
  EXPECT_EQ(fixed.max, 128);
  EXPECT_TRUE(fixed.fixed());
  const LengthRange range = parse_length_range("64:256", "--prompt-tokens", 1);
  EXPECT_EQ(range.min, 64);
  EXPECT_EQ(range.max, 256);
  EXPECT_FALSE(range.fixed());
  for (const char* bad : {"", "abc", "5:2", "0", "-3", "1:2:3", "12x", ":5", "5:"})
    EXPECT_THROW(parse_length_range(bad, "--max-tokens", 1), std::invalid_argument) << bad;
  try {
    parse_length_range("5:2", "--max-tokens", 1);
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("--max-tokens"), std::string::npos);
  }
}

TEST(BenchOptions, ConcurrencyLists) {
  EXPECT_EQ(parse_concurrency_list("1,4,16,64"), (std::vector<int>{1, 4, 16, 64}));
  EXPECT_EQ(parse_concurrency_list("8"), (std::vector<int>{8}));
  for (const char* bad : {"", "0", "1,,2", "4,4", "a", "1,-2", "2,"})
    EXPECT_THROW(parse_concurrency_list(bad), std::invalid_argument) << bad;
}

TEST(BenchOptions, BackendUrls) {
  BackendUrl u = parse_backend_url("http://127.0.0.1:8765");
  EXPECT_EQ(u.scheme, "http");
  EXPECT_EQ(u.host, "127.0.0.1");
  EXPECT_EQ(u.port, "8765");
  EXPECT_EQ(u.base_path, "");
  u = parse_backend_url("http://gpu-box:8000/v1/");
  EXPECT_EQ(u.port, "8000");
  EXPECT_EQ(u.base_path, "");
  u = parse_backend_url("http://proxy/llm/v1");
  EXPECT_EQ(u.port, "80");
  EXPECT_EQ(u.base_path, "/llm");
  EXPECT_EQ(u.text(), "http://proxy:80/llm");
  u = parse_backend_url("ws://[::1]:9000/ws");
  EXPECT_EQ(u.scheme, "ws");
  EXPECT_EQ(u.host, "::1");
  EXPECT_EQ(u.port, "9000");
  EXPECT_EQ(u.base_path, "");
  for (const char* bad : {"127.0.0.1:8765", "https://h:1", "wss://h", "ftp://h", "http://:80", "http://h:0",
                          "http://h:70000", "http://h:1/x?y=1", "http://user@h:1"})
    EXPECT_THROW(parse_backend_url(bad), std::invalid_argument) << bad;
}

TEST(BenchWorkload, SplitMix64MatchesTheReferenceSequence) {
  SplitMix64 rng(0);
  EXPECT_EQ(rng.next(), 0xe220a8397b1dcdafULL);
  EXPECT_EQ(rng.next(), 0x6e789e6aa1b965f4ULL);
}

TEST(BenchWorkload, FixedLengthsAndDeterminism) {
  const auto a = make_workload(20, {128, 128}, {64, 64}, 7);
  ASSERT_EQ(a.size(), 20u);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].index, i);
    EXPECT_EQ(a[i].prompt_tokens, 128);
    EXPECT_EQ(a[i].max_tokens, 64);
  }
  const auto b = make_workload(20, {128, 128}, {64, 64}, 7);
  const auto c = make_workload(20, {128, 128}, {64, 64}, 8);
  std::set<uint64_t> seeds;
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].word_seed, b[i].word_seed);
    EXPECT_NE(a[i].word_seed, c[i].word_seed);
    seeds.insert(a[i].word_seed);
  }
  EXPECT_EQ(seeds.size(), a.size()) << "every request gets its own words";
}

TEST(BenchWorkload, RandomLengthsStayInRangeAndReachBothEnds) {
  const auto w = make_workload(2000, {10, 20}, {1, 3}, 42);
  std::set<int64_t> prompts, outputs;
  for (const RequestSpec& s : w) {
    EXPECT_GE(s.prompt_tokens, 10);
    EXPECT_LE(s.prompt_tokens, 20);
    EXPECT_GE(s.max_tokens, 1);
    EXPECT_LE(s.max_tokens, 3);
    prompts.insert(s.prompt_tokens);
    outputs.insert(s.max_tokens);
  }
  EXPECT_EQ(prompts.size(), 11u);
  EXPECT_EQ(outputs.size(), 3u);
  EXPECT_EQ(make_workload(2000, {10, 20}, {1, 3}, 42)[1999].prompt_tokens, w[1999].prompt_tokens);
}

TEST(BenchWorkload, PromptTextIsPrefixStableWords) {
  const std::string five = prompt_text(99, 5);
  const std::string six = prompt_text(99, 6);
  EXPECT_EQ(six.rfind(five, 0), 0u);
  EXPECT_EQ(std::count(five.begin(), five.end(), ' '), 4);
  EXPECT_NE(prompt_text(99, 20), prompt_text(100, 20));
  EXPECT_EQ(prompt_text(99, 0), "");
  const auto& words = prompt_words();
  EXPECT_EQ(std::set<std::string>(words.begin(), words.end()).size(), words.size()) << "no duplicate words";
}

TEST(BenchWorkload, TokenModelFit) {
  const TokenModel m = fit_token_model(8, 9, 64, 65);  // one BOS + one token per word
  EXPECT_DOUBLE_EQ(m.tokens_per_word, 1.0);
  EXPECT_DOUBLE_EQ(m.fixed_tokens, 1.0);
  EXPECT_EQ(m.words_for(128), 127);
  EXPECT_EQ(m.words_for(1), 1) << "at least one word";
  const TokenModel two = fit_token_model(10, 21, 20, 41);
  EXPECT_EQ(two.words_for(101), 50);
  const TokenModel broken = fit_token_model(8, 50, 64, 10);  // nonsense counts
  EXPECT_DOUBLE_EQ(broken.tokens_per_word, 1.0);
}

RequestResult ok_result(size_t index, double start, std::vector<double> arrivals, std::vector<int> tokens, double e2e,
                        int64_t completion) {
  RequestResult r;
  r.index = index;
  r.ok = true;
  r.start_ms = start;
  r.arrival_ms = std::move(arrivals);
  r.arrival_tokens = std::move(tokens);
  r.e2e_ms = e2e;
  r.prompt_tokens = 10;
  r.completion_tokens = completion;
  r.finish_reason = "length";
  return r;
}

TEST(BenchLevelReport, ComputesLatenciesAndThroughput) {
  std::vector<RequestResult> results;
  // 4 tokens: first at 10 ms, then one every 5 ms; e2e 25 ms.
  results.push_back(ok_result(0, 0, {10, 15, 20, 25}, {1, 1, 1, 1}, 25, 4));
  // 4 tokens: first at 30 ms, then 3 tokens in one arrival 9 ms later.
  results.push_back(ok_result(1, 5, {30, 39}, {1, 3}, 39, 4));
  RequestResult failed;
  failed.index = 2;
  failed.error_code = "context_length_exceeded";
  failed.error_message = "too long";
  results.push_back(failed);
  const LevelReport r = make_level_report(2, 0.5, results);
  EXPECT_EQ(r.requests, 3u);
  EXPECT_EQ(r.succeeded, 2u);
  EXPECT_EQ(r.failed, 1u);
  EXPECT_EQ(r.errors.at("context_length_exceeded"), 1u);
  EXPECT_EQ(r.first_error_message, "too long");
  EXPECT_EQ(r.output_tokens, 8);
  EXPECT_EQ(r.prompt_tokens, 20);
  EXPECT_DOUBLE_EQ(r.output_tokens_per_s, 16.0);
  EXPECT_DOUBLE_EQ(r.total_tokens_per_s, 56.0);  // (20 prompt + 8 output) / 0.5 s
  EXPECT_DOUBLE_EQ(r.requests_per_s, 4.0);
  EXPECT_EQ(r.ttft_ms.count, 2u);
  EXPECT_DOUBLE_EQ(r.ttft_ms.mean, 20.0);
  // ITL samples: 5, 5, 5 and 3, 3, 3 (9 ms shared by 3 tokens).
  EXPECT_EQ(r.itl_ms.count, 6u);
  EXPECT_DOUBLE_EQ(r.itl_ms.mean, 4.0);
  EXPECT_DOUBLE_EQ(r.itl_ms.min, 3.0);
  // TPOT: (25 - 10) / 3 = 5 and (39 - 30) / 3 = 3; stream rates 200 and 333.3 tok/s.
  EXPECT_DOUBLE_EQ(r.tpot_ms.mean, 4.0);
  EXPECT_NEAR(r.stream_tokens_per_s.mean, (200.0 + 1000.0 / 3) / 2, 1e-9);
  EXPECT_EQ(r.results.size(), 3u);
  EXPECT_EQ(r.short_outputs, 0u);
}

TEST(BenchLevelReport, CountsOutputsShorterThanMaxTokens) {
  RequestResult full = ok_result(0, 0, {10, 20}, {1, 1}, 20, 2);
  full.max_tokens = 2;
  RequestResult cut = ok_result(1, 0, {10, 20}, {1, 1}, 20, 2);
  cut.max_tokens = 8;
  EXPECT_EQ(make_level_report(1, 1.0, {full, cut}).short_outputs, 1u);
}

TEST(BenchLevelReport, CountsTokensFromArrivalsWithoutUsage) {
  RequestResult r = ok_result(0, 0, {10, 20, 30}, {1, 2, 1}, 30, -1);
  EXPECT_EQ(r.output_tokens(), 4);
  const LevelReport l = make_level_report(1, 1.0, {r});
  EXPECT_EQ(l.requests_without_usage, 1u);
  EXPECT_EQ(l.output_tokens, 4);
}

}  // namespace
}  // namespace tandem::client::bench
