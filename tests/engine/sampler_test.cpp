// Sampler: validation, greedy, the sampling pipeline against an independent
// double-precision reference (checked statistically), penalties, logprobs,
// seeding and non-finite logits.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "common/error.h"
#include "engine/sampler.h"

namespace tandem {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
const std::vector<int32_t> kNoTokens;

// ---- reference, written for clarity: full sorts, doubles --------------------

std::vector<double> log_softmax(const std::vector<double>& logits) {
  double max = -INFINITY;
  for (double l : logits) max = std::max(max, l);
  double sum = 0.0;
  for (double l : logits) sum += std::exp(l - max);
  std::vector<double> out(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) out[i] = logits[i] - max - std::log(sum);
  return out;
}

// The distribution the pipeline should draw from (no penalties): temperature
// -> top-k -> softmax -> min-p -> top-p -> renormalise. Avoid inputs that sit
// exactly on a top-p or min-p boundary here; boundary cases have their own tests.
std::vector<double> reference_distribution(const std::vector<float>& logits, const SamplingParams& p) {
  const size_t n = logits.size();
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return logits[a] > logits[b]; });
  size_t keep = n;
  if (p.top_k > 0) keep = std::min<size_t>(keep, p.top_k);
  std::vector<double> prob(n, 0.0);
  double max = static_cast<double>(logits[order[0]]) / p.temperature;
  double sum = 0.0;
  for (size_t r = 0; r < keep; ++r) sum += std::exp(logits[order[r]] / static_cast<double>(p.temperature) - max);
  for (size_t r = 0; r < keep; ++r) {
    prob[order[r]] = std::exp(logits[order[r]] / static_cast<double>(p.temperature) - max) / sum;
  }
  const double p_max = prob[order[0]];
  double kept_mass = 0.0;
  for (size_t r = 0; r < keep; ++r) {
    if (prob[order[r]] < p.min_p * p_max) prob[order[r]] = 0.0;
    kept_mass += prob[order[r]];
  }
  for (double& x : prob) x /= kept_mass;
  if (p.top_p < 1.0f) {
    double cum = 0.0;
    bool done = false;
    for (size_t r = 0; r < n; ++r) {
      if (done) {
        prob[order[r]] = 0.0;
      } else {
        cum += prob[order[r]];
        done = cum >= p.top_p;
      }
    }
    for (double& x : prob) x /= cum;
  }
  return prob;
}

// Pearson chi-square of `counts` against `expected` probabilities; cells with
// an expected count below 5 are pooled. Fails on any draw of a token with
// expected probability 0. Critical value at p = 0.001 (Wilson-Hilferty).
void expect_matches_distribution(const std::vector<int>& counts, const std::vector<double>& expected, int draws) {
  double stat = 0.0;
  int cells = 0;
  double pooled_expected = 0.0;
  double pooled_observed = 0.0;
  for (size_t i = 0; i < counts.size(); ++i) {
    if (expected[i] == 0.0) {
      EXPECT_EQ(counts[i], 0) << "token " << i << " has probability 0 but was drawn";
      continue;
    }
    const double e = expected[i] * draws;
    if (e < 5.0) {
      pooled_expected += e;
      pooled_observed += counts[i];
      continue;
    }
    stat += (counts[i] - e) * (counts[i] - e) / e;
    ++cells;
  }
  if (pooled_expected > 0.0) {
    stat += (pooled_observed - pooled_expected) * (pooled_observed - pooled_expected) / std::max(pooled_expected, 1.0);
    ++cells;
  }
  const int df = std::max(cells - 1, 1);
  const double z = 3.0902;  // upper 0.001 quantile of N(0, 1)
  const double h = 2.0 / (9.0 * df);
  const double critical = df * std::pow(1.0 - h + z * std::sqrt(h), 3.0);
  EXPECT_LT(stat, critical) << "chi-square " << stat << " with " << df << " degrees of freedom";
}

std::vector<int> draw_counts(const std::vector<float>& logits, const SamplingParams& params, int draws) {
  Sampler sampler(params);
  std::vector<int> counts(logits.size(), 0);
  std::vector<float> row;
  for (int i = 0; i < draws; ++i) {
    row = logits;
    const int32_t token = sampler.sample(row, kNoTokens, kNoTokens);
    EXPECT_GE(token, 0);
    EXPECT_LT(token, static_cast<int32_t>(logits.size()));
    if (token >= 0 && token < static_cast<int32_t>(logits.size())) ++counts[token];
  }
  return counts;
}

std::vector<float> random_logits(size_t n, uint64_t seed, float scale = 3.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> logits(n);
  for (float& l : logits) l = normal(rng);
  return logits;
}

SamplingParams seeded(uint64_t seed) {
  SamplingParams p;
  p.seed = seed;
  return p;
}

// ---- validate ---------------------------------------------------------------

void expect_rejected(const SamplingParams& p, const std::string& field) {
  try {
    validate(p);
    ADD_FAILURE() << "validate accepted a bad " << field;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(field), std::string::npos) << e.what();
  }
  EXPECT_THROW(Sampler{p}, Error) << field;
}

TEST(SamplerValidate, AcceptsDefaultsAndBoundaries) {
  EXPECT_NO_THROW(validate(SamplingParams{}));
  SamplingParams p;
  p.temperature = 0.0f;
  p.top_p = 1.0f;
  p.min_p = 1.0f;
  p.top_k = 0;
  p.max_tokens = 0;
  p.presence_penalty = -2.0f;
  p.frequency_penalty = 2.0f;
  p.repetition_penalty = 0.01f;
  p.stop = {"a", "\n\n"};
  EXPECT_NO_THROW(validate(p));
  p.min_p = 0.0f;
  p.top_p = 1e-6f;
  EXPECT_NO_THROW(validate(p));
}

TEST(SamplerValidate, RejectsEachBadFieldByName) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  auto with = [](auto edit) {
    SamplingParams p;
    edit(p);
    return p;
  };
  expect_rejected(with([](SamplingParams& p) { p.temperature = -0.1f; }), "temperature");
  expect_rejected(with([&](SamplingParams& p) { p.temperature = nan; }), "temperature");
  expect_rejected(with([](SamplingParams& p) { p.temperature = kInf; }), "temperature");
  expect_rejected(with([](SamplingParams& p) { p.top_k = -1; }), "top_k");
  expect_rejected(with([](SamplingParams& p) { p.top_p = 0.0f; }), "top_p");
  expect_rejected(with([](SamplingParams& p) { p.top_p = 1.01f; }), "top_p");
  expect_rejected(with([&](SamplingParams& p) { p.top_p = nan; }), "top_p");
  expect_rejected(with([](SamplingParams& p) { p.min_p = -0.01f; }), "min_p");
  expect_rejected(with([](SamplingParams& p) { p.min_p = 1.5f; }), "min_p");
  expect_rejected(with([&](SamplingParams& p) { p.min_p = nan; }), "min_p");
  expect_rejected(with([](SamplingParams& p) { p.repetition_penalty = 0.0f; }), "repetition_penalty");
  expect_rejected(with([](SamplingParams& p) { p.repetition_penalty = -1.0f; }), "repetition_penalty");
  expect_rejected(with([](SamplingParams& p) { p.repetition_penalty = kInf; }), "repetition_penalty");
  expect_rejected(with([](SamplingParams& p) { p.presence_penalty = 2.5f; }), "presence_penalty");
  expect_rejected(with([&](SamplingParams& p) { p.presence_penalty = nan; }), "presence_penalty");
  expect_rejected(with([](SamplingParams& p) { p.frequency_penalty = -3.0f; }), "frequency_penalty");
  expect_rejected(with([&](SamplingParams& p) { p.frequency_penalty = nan; }), "frequency_penalty");
  expect_rejected(with([](SamplingParams& p) { p.max_tokens = -1; }), "max_tokens");
  expect_rejected(with([](SamplingParams& p) { p.stop = {"ok", ""}; }), "stop[1]");
}

// ---- greedy -----------------------------------------------------------------

TEST(SamplerGreedy, ReturnsArgmaxOnRandomRows) {
  SamplingParams p = seeded(1);
  p.temperature = 0.0f;
  Sampler sampler(p);
  for (size_t vocab : {1u, 2u, 15u, 16u, 17u, 1000u, 152064u}) {
    for (uint64_t seed = 0; seed < 5; ++seed) {
      std::vector<float> logits = random_logits(vocab, seed * 7919 + vocab);
      const auto expected = std::max_element(logits.begin(), logits.end()) - logits.begin();
      EXPECT_EQ(sampler.sample(logits, kNoTokens, kNoTokens), expected) << "vocab " << vocab;
    }
  }
}

TEST(SamplerGreedy, TiesGoToTheLowestId) {
  SamplingParams p;
  p.temperature = 0.0f;
  Sampler sampler(p);
  std::vector<float> logits(100, 0.0f);
  logits[77] = 5.0f;
  logits[31] = 5.0f;
  logits[90] = 5.0f;
  EXPECT_EQ(sampler.sample(logits, kNoTokens, kNoTokens), 31);
  std::vector<float> flat(40, -1.0f);
  EXPECT_EQ(sampler.sample(flat, kNoTokens, kNoTokens), 0);
}

// ---- temperature, top-k, top-p, min-p ---------------------------------------

TEST(SamplerTemperature, DrawsMatchSoftmaxOfScaledLogits) {
  const std::vector<float> logits = {1.0f, 2.0f, 0.5f, -1.0f, 3.0f, 0.0f, 2.5f, -0.5f};
  for (float temperature : {0.3f, 1.0f, 2.5f}) {
    SamplingParams p = seeded(100 + static_cast<uint64_t>(temperature * 10));
    p.temperature = temperature;
    const int draws = 40000;
    const auto counts = draw_counts(logits, p, draws);
    std::vector<double> scaled(logits.begin(), logits.end());
    for (double& l : scaled) l /= temperature;
    std::vector<double> expected = log_softmax(scaled);
    for (double& x : expected) x = std::exp(x);
    SCOPED_TRACE(testing::Message() << "temperature " << temperature);
    expect_matches_distribution(counts, expected, draws);
  }
}

TEST(SamplerTemperature, TinyAndHugeTemperaturesStayFinite) {
  std::vector<float> logits = {1.0f, 4.0f, 2.0f, 4.0f - 1e-6f};
  SamplingParams cold = seeded(3);
  cold.temperature = 1e-30f;
  Sampler sampler(cold);
  for (int i = 0; i < 200; ++i) {
    std::vector<float> row = logits;
    EXPECT_EQ(sampler.sample(row, kNoTokens, kNoTokens), 1);
  }
  SamplingParams denormal = seeded(3);
  denormal.temperature = 1e-45f;  // 1 / T overflows: greedy
  Sampler tiny(denormal);
  std::vector<float> row = logits;
  EXPECT_EQ(tiny.sample(row, kNoTokens, kNoTokens), 1);
  SamplingParams hot = seeded(4);
  hot.temperature = 1e30f;
  const auto counts = draw_counts(logits, hot, 8000);
  expect_matches_distribution(counts, {0.25, 0.25, 0.25, 0.25}, 8000);
}

TEST(SamplerTopK, NeverLeavesTheKLargest) {
  // Ascending logits make every token enter the bounded buffer: the worst case.
  for (bool ascending : {false, true}) {
    std::vector<float> logits = random_logits(152064, 5, 1.0f);
    if (ascending) std::sort(logits.begin(), logits.end());
    for (int k : {1, 5, 40, 1000}) {
      std::vector<size_t> order(logits.size());
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return logits[a] > logits[b]; });
      const std::set<size_t> allowed(order.begin(), order.begin() + k);
      SamplingParams p = seeded(k);
      p.top_k = k;
      p.temperature = 5.0f;  // flatten, so that all k get drawn
      Sampler sampler(p);
      std::set<int32_t> seen;
      for (int i = 0; i < 150; ++i) {
        std::vector<float> row = logits;
        const int32_t token = sampler.sample(row, kNoTokens, kNoTokens);
        EXPECT_TRUE(allowed.count(token)) << "k " << k << " token " << token;
        seen.insert(token);
      }
      if (k <= 5) {
        EXPECT_EQ(seen.size(), static_cast<size_t>(k));
      }
    }
  }
}

TEST(SamplerTopK, TiesAtTheCutKeepLowerIds) {
  // Ten tokens tie for the last two of k = 3 places: ids 4 and 9 win (the two
  // lowest), with 20 at the top.
  std::vector<float> logits(3000, -5.0f);
  logits[20] = 2.0f;
  for (int id : {4, 9, 13, 100, 500, 999, 1500, 2000, 2500, 2999}) logits[id] = 1.0f;
  SamplingParams p = seeded(9);
  p.top_k = 3;
  const auto counts = draw_counts(logits, p, 3000);
  std::vector<double> expected(logits.size(), 0.0);
  const double z = std::exp(2.0) + 2.0 * std::exp(1.0);
  expected[20] = std::exp(2.0) / z;
  expected[4] = expected[9] = std::exp(1.0) / z;
  expect_matches_distribution(counts, expected, 3000);
}

TEST(SamplerTopP, KeepsTheSmallestSetReachingTopP) {
  // Probabilities 0.5, 0.3, 0.2 on shuffled ids (so id order is not rank order).
  std::vector<float> logits(6, -kInf);
  logits[4] = std::log(0.5f);
  logits[1] = std::log(0.3f);
  logits[3] = std::log(0.2f);
  struct Case {
    float top_p;
    std::vector<double> expected;  // by id
  };
  const std::vector<Case> cases = {
      {0.3f, {0, 0, 0, 0, 1, 0}},
      {0.5f, {0, 0, 0, 0, 1, 0}},               // boundary: 0.5 alone reaches 0.5
      {0.51f, {0, 0.375, 0, 0, 0.625, 0}},
      {0.8f, {0, 0.375, 0, 0, 0.625, 0}},       // boundary: 0.5 + 0.3
      {0.801f, {0, 0.3, 0, 0.2, 0.5, 0}},
      {1.0f, {0, 0.3, 0, 0.2, 0.5, 0}},
  };
  for (const Case& c : cases) {
    SamplingParams p = seeded(17);
    p.top_p = c.top_p;
    const auto counts = draw_counts(logits, p, 10000);
    SCOPED_TRACE(testing::Message() << "top_p " << c.top_p);
    expect_matches_distribution(counts, c.expected, 10000);
  }
}

TEST(SamplerTopP, LargeVocabWithLongTail) {
  // Three heads of 0.4, 0.3, 0.2 and a tail of 0.1 spread over 99997 tokens.
  const size_t vocab = 100000;
  std::vector<float> logits(vocab, std::log(0.1f / (vocab - 3)));
  logits[70000] = std::log(0.4f);
  logits[10] = std::log(0.3f);
  logits[55555] = std::log(0.2f);
  SamplingParams p = seeded(23);
  p.top_p = 0.9f;  // exactly the three heads
  auto counts = draw_counts(logits, p, 3000);
  std::vector<double> expected(vocab, 0.0);
  expected[70000] = 4.0 / 9.0;
  expected[10] = 3.0 / 9.0;
  expected[55555] = 2.0 / 9.0;
  expect_matches_distribution(counts, expected, 3000);

  p.top_p = 0.95f;  // the heads plus half the tail: the lower ids of it
  counts = draw_counts(logits, p, 1000);
  int tail = 0;
  int upper_half_of_tail = 0;
  for (size_t i = 0; i < vocab; ++i) {
    if (i != 70000 && i != 10 && i != 55555) tail += counts[i];
    if (i > 50002 && i != 70000 && i != 55555) upper_half_of_tail += counts[i];
  }
  // Tail mass after renormalising: 0.05 / 0.95, about 53 of 1000 draws
  // (sd 7). Equal weights tie, and ties go to lower ids, so the kept half of
  // the tail is ids below about 50002.
  EXPECT_GT(tail, 25);
  EXPECT_LT(tail, 85);
  EXPECT_EQ(upper_half_of_tail, 0);
}

TEST(SamplerTopP, FlatRowOverManyCandidatesMatchesTheReferenceSet) {
  // A flat row: the cut falls among tens of thousands of candidates, the
  // path that narrows by histogram before the quickselect.
  const std::vector<float> logits = random_logits(30000, 61, 2.0f);
  SamplingParams p = seeded(61);
  p.temperature = 1.5f;
  p.top_p = 0.9f;
  const std::vector<double> expected = reference_distribution(logits, p);
  size_t kept = 0;
  for (double x : expected) kept += x > 0.0;
  ASSERT_GT(kept, 5000u);  // else this test would not reach the path it is for
  // The lightest tokens of the kept set holding 2.5% of its mass: a set cut
  // short or long shows up as too few or too many draws here.
  std::vector<size_t> order;
  for (size_t i = 0; i < expected.size(); ++i) {
    if (expected[i] > 0.0) order.push_back(i);
  }
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return expected[a] < expected[b]; });
  std::set<size_t> light;
  double light_mass = 0.0;
  for (size_t i : order) {
    if (light_mass >= 0.025) break;
    light.insert(i);
    light_mass += expected[i];
  }
  const int draws = 3000;
  const auto counts = draw_counts(logits, p, draws);
  int in_light = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    if (expected[i] == 0.0) {
      EXPECT_EQ(counts[i], 0) << "token " << i << " is outside the top-p set";
    }
    if (light.count(i)) in_light += counts[i];
  }
  const double mean = light_mass * draws;
  const double sd = std::sqrt(draws * light_mass * (1.0 - light_mass));
  EXPECT_NEAR(in_light, mean, 4.5 * sd);
}

TEST(SamplerMinP, DropsTokensBelowTheFractionOfTheBest) {
  // Probabilities relative to the best: 1, 0.5, 0.2, 0.05.
  const std::vector<float> logits = {std::log(0.2f), std::log(0.05f), std::log(1.0f), std::log(0.5f)};
  SamplingParams p = seeded(31);
  p.min_p = 0.15f;
  auto counts = draw_counts(logits, p, 10000);
  expect_matches_distribution(counts, {0.2 / 1.7, 0.0, 1.0 / 1.7, 0.5 / 1.7}, 10000);
  p.min_p = 0.6f;
  counts = draw_counts(logits, p, 1000);
  EXPECT_EQ(counts[2], 1000);
  p.min_p = 0.01f;
  counts = draw_counts(logits, p, 10000);
  expect_matches_distribution(counts, {0.2 / 1.75, 0.05 / 1.75, 1.0 / 1.75, 0.5 / 1.75}, 10000);
}

TEST(SamplerPipeline, TopKRenormalisesBeforeTopP) {
  // 0.4, 0.3, 0.2, 0.1: top-k 2 leaves 4/7 and 3/7, and 4/7 alone reaches
  // top_p 0.55. Top-p on the raw distribution would have kept two tokens.
  const std::vector<float> logits = {std::log(0.3f), std::log(0.1f), std::log(0.4f), std::log(0.2f)};
  SamplingParams p = seeded(37);
  p.top_k = 2;
  p.top_p = 0.55f;
  const auto counts = draw_counts(logits, p, 2000);
  EXPECT_EQ(counts[2], 2000);
}

TEST(SamplerPipeline, MatchesReferenceAcrossParameterMixes) {
  struct Mix {
    float temperature;
    int top_k;
    float top_p;
    float min_p;
  };
  const std::vector<Mix> mixes = {
      {1.0f, 0, 1.0f, 0.0f},  {0.7f, 0, 1.0f, 0.0f},  {1.3f, 50, 1.0f, 0.0f}, {0.8f, 0, 0.9f, 0.0f},
      {1.0f, 0, 1.0f, 0.05f}, {0.6f, 20, 0.8f, 0.0f}, {1.5f, 0, 0.7f, 0.1f}, {0.9f, 100, 0.95f, 0.02f},
  };
  uint64_t seed = 1000;
  for (const Mix& m : mixes) {
    const std::vector<float> logits = random_logits(600, seed, 2.0f);
    SamplingParams p = seeded(seed++);
    p.temperature = m.temperature;
    p.top_k = m.top_k;
    p.top_p = m.top_p;
    p.min_p = m.min_p;
    const int draws = 20000;
    const auto counts = draw_counts(logits, p, draws);
    SCOPED_TRACE(testing::Message() << "T " << m.temperature << " top_k " << m.top_k << " top_p " << m.top_p
                                    << " min_p " << m.min_p);
    expect_matches_distribution(counts, reference_distribution(logits, p), draws);
  }
}

// ---- penalties and logprobs --------------------------------------------------

void expect_logprobs_of(const Sampler& sampler, const std::vector<double>& penalised) {
  const std::vector<double> expected = log_softmax(penalised);
  ASSERT_EQ(sampler.last_logprobs().size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_NEAR(sampler.last_logprobs()[i], expected[i], 1e-5) << "token " << i;
  }
}

TEST(SamplerPenalties, RepetitionDividesPositiveAndMultipliesNegativeOncePerToken) {
  SamplingParams p;
  p.temperature = 0.0f;
  p.repetition_penalty = 2.0f;
  Sampler sampler(p);
  std::vector<float> logits = {2.0f, -1.0f, 0.5f, 3.0f, 1.5f};
  const std::vector<int32_t> prompt = {0, 0, 3};
  const std::vector<int32_t> generated = {1, 1, 1, 0};
  // 3.0 -> 1.5 ties with token 4 (1.5): the lowest id wins.
  EXPECT_EQ(sampler.sample(logits, prompt, generated), 3);
  const std::vector<double> penalised = {1.0, -2.0, 0.5, 1.5, 1.5};
  for (size_t i = 0; i < logits.size(); ++i) EXPECT_FLOAT_EQ(logits[i], penalised[i]) << i;
  expect_logprobs_of(sampler, penalised);
}

TEST(SamplerPenalties, RepetitionFlipsTheArgmax) {
  SamplingParams p;
  p.temperature = 0.0f;
  p.repetition_penalty = 1.3f;
  Sampler sampler(p);
  std::vector<float> logits = {1.0f, 2.0f, 1.8f};
  EXPECT_EQ(sampler.sample(logits, kNoTokens, std::vector<int32_t>{1}), 2);  // 2.0 / 1.3 < 1.8
  std::vector<float> again = {1.0f, 2.0f, 1.8f};
  EXPECT_EQ(sampler.sample(again, kNoTokens, kNoTokens), 1);
}

TEST(SamplerPenalties, PresenceAndFrequencyFollowTheOpenAIDefinition) {
  SamplingParams p;
  p.temperature = 0.0f;
  p.presence_penalty = 0.25f;
  p.frequency_penalty = 0.5f;
  Sampler sampler(p);
  std::vector<float> logits = {0.0f, 1.0f, 2.0f, 1.0f};
  const std::vector<int32_t> prompt = {3, 3};  // the prompt does not count
  const std::vector<int32_t> generated = {2, 1, 2, 2};
  EXPECT_EQ(sampler.sample(logits, prompt, generated), 3);
  // 2: 2 - (3 * 0.5 + 0.25); 1: 1 - (1 * 0.5 + 0.25).
  const std::vector<double> penalised = {0.0, 0.25, 0.25, 1.0};
  for (size_t i = 0; i < logits.size(); ++i) EXPECT_FLOAT_EQ(logits[i], penalised[i]) << i;
  expect_logprobs_of(sampler, penalised);
}

TEST(SamplerPenalties, NegativePresenceEncouragesRepeats) {
  SamplingParams p;
  p.temperature = 0.0f;
  p.presence_penalty = -1.0f;
  Sampler sampler(p);
  std::vector<float> logits = {1.0f, 0.5f};
  EXPECT_EQ(sampler.sample(logits, kNoTokens, std::vector<int32_t>{1}), 1);
}

TEST(SamplerPenalties, ScratchIsClearBetweenCalls) {
  // A token penalised in one call must not stay marked for the next.
  SamplingParams p;
  p.temperature = 0.0f;
  p.repetition_penalty = 4.0f;
  p.frequency_penalty = 1.0f;
  Sampler sampler(p);
  std::vector<float> first = {3.0f, 2.0f};
  EXPECT_EQ(sampler.sample(first, kNoTokens, std::vector<int32_t>{0}), 1);
  std::vector<float> second = {3.0f, 2.0f};
  EXPECT_EQ(sampler.sample(second, kNoTokens, std::vector<int32_t>{1}), 0);
  EXPECT_FLOAT_EQ(second[0], 3.0f);
  EXPECT_FLOAT_EQ(second[1], 2.0f / 4.0f - 1.0f);
}

TEST(SamplerLogprobs, LogSoftmaxBeforeTemperatureOnALargeVocab) {
  // Temperature 1 reuses the sampling pass's sum; the others compute their own.
  for (float temperature : {0.0f, 0.5f, 1.0f}) {
    SamplingParams p = seeded(41);
    p.temperature = temperature;
    Sampler sampler(p);
    std::vector<float> logits = random_logits(152064, 41, 4.0f);
    const std::vector<double> expected = log_softmax(std::vector<double>(logits.begin(), logits.end()));
    sampler.sample(logits, kNoTokens, kNoTokens);
    const auto& lp = sampler.last_logprobs();
    ASSERT_EQ(lp.size(), expected.size());
    double mass = 0.0;
    for (size_t i = 0; i < lp.size(); ++i) {
      ASSERT_NEAR(lp[i], expected[i], 2e-5) << "token " << i << " temperature " << temperature;
      mass += std::exp(static_cast<double>(lp[i]));
    }
    EXPECT_NEAR(mass, 1.0, 1e-4) << "temperature " << temperature;
  }
}

// ---- seeding ------------------------------------------------------------------

std::vector<int32_t> token_stream(const SamplingParams& p, int steps) {
  Sampler sampler(p);
  std::vector<int32_t> out;
  for (int step = 0; step < steps; ++step) {
    std::vector<float> logits = random_logits(5000, 900 + step, 1.0f);
    out.push_back(sampler.sample(logits, kNoTokens, out));
  }
  return out;
}

TEST(SamplerSeed, SameSeedSameTokensDifferentSeedDifferentTokens) {
  for (int top_k : {0, 40}) {
    SamplingParams p = seeded(2024);
    p.top_k = top_k;
    p.top_p = 0.95f;
    p.frequency_penalty = 0.3f;
    const auto a = token_stream(p, 64);
    EXPECT_EQ(a, token_stream(p, 64));
    p.seed = 2025;
    EXPECT_NE(a, token_stream(p, 64));
  }
}

TEST(SamplerSeed, UnseededSamplersDiffer) {
  SamplingParams p;
  EXPECT_NE(token_stream(p, 64), token_stream(p, 64));
}

// ---- bad logits and bad ids --------------------------------------------------

TEST(SamplerNonFinite, NaNIsNeverChosen) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> logits = {nan, 1.0f, nan, 0.5f, nan};
  SamplingParams greedy;
  greedy.temperature = 0.0f;
  Sampler g(greedy);
  std::vector<float> row = logits;
  EXPECT_EQ(g.sample(row, kNoTokens, kNoTokens), 1);
  EXPECT_EQ(g.last_logprobs()[0], -kInf);
  EXPECT_TRUE(std::isfinite(g.last_logprobs()[1]));
  for (int top_k : {0, 2}) {
    SamplingParams p = seeded(5);
    p.top_k = top_k;
    p.top_p = 0.99f;
    const auto counts = draw_counts(logits, p, 2000);
    EXPECT_EQ(counts[0] + counts[2] + counts[4], 0);
    EXPECT_GT(counts[3], 0);
  }
}

TEST(SamplerNonFinite, PositiveInfinitySharesAllTheMass) {
  std::vector<float> logits = {1.0f, kInf, 50.0f, kInf, -kInf};
  SamplingParams greedy;
  greedy.temperature = 0.0f;
  Sampler g(greedy);
  std::vector<float> row = logits;
  EXPECT_EQ(g.sample(row, kNoTokens, kNoTokens), 1);
  EXPECT_NEAR(g.last_logprobs()[3], std::log(0.5), 1e-6);
  EXPECT_EQ(g.last_logprobs()[2], -kInf);
  const auto counts = draw_counts(logits, seeded(6), 4000);
  expect_matches_distribution(counts, {0, 0.5, 0, 0.5, 0}, 4000);
}

TEST(SamplerNonFinite, PenaltyOverflowToInfinityIsHandled) {
  SamplingParams p = seeded(8);
  p.repetition_penalty = 1e-3f;  // 3e38 / 1e-3 overflows to +inf
  Sampler sampler(p);
  std::vector<float> logits = {3e38f, 1.0f, 2.0f};
  EXPECT_EQ(sampler.sample(logits, std::vector<int32_t>{0}, kNoTokens), 0);
}

TEST(SamplerNonFinite, NoUsableLogitIsAnError) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (float temperature : {0.0f, 1.0f}) {
    SamplingParams p;
    p.temperature = temperature;
    Sampler sampler(p);
    std::vector<float> good = {0.0f, 1.0f};
    sampler.sample(good, kNoTokens, kNoTokens);
    EXPECT_EQ(sampler.last_logprobs().size(), 2u);
    std::vector<float> bad = {nan, -kInf, nan};
    EXPECT_THROW(sampler.sample(bad, kNoTokens, kNoTokens), Error);
    EXPECT_TRUE(sampler.last_logprobs().empty());  // nothing stale from the last step
    std::vector<float> empty;
    EXPECT_THROW(sampler.sample(empty, kNoTokens, kNoTokens), Error);
  }
}

TEST(SamplerBadIds, OutOfRangeIdsThrowAndLeaveLogitsAlone) {
  SamplingParams p;
  p.repetition_penalty = 2.0f;
  p.frequency_penalty = 1.0f;
  Sampler sampler(p);
  std::vector<float> logits = {1.0f, 2.0f, 3.0f};
  EXPECT_THROW(sampler.sample(logits, std::vector<int32_t>{0, 3}, kNoTokens), Error);
  EXPECT_THROW(sampler.sample(logits, kNoTokens, std::vector<int32_t>{-1}), Error);
  EXPECT_EQ(logits, (std::vector<float>{1.0f, 2.0f, 3.0f}));
  try {
    sampler.sample(logits, kNoTokens, std::vector<int32_t>{1, 7});
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("7"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace tandem
