// The row sampling rule (engine/row_sampling.h): Sampler::plan_row gives the
// same penalties and draw as Sampler::sample, and sample_row_reference draws
// from the distribution Sampler does, with the rule's tie and boundary cases.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <vector>

#include "common/error.h"
#include "engine/row_sampling.h"
#include "engine/sampler.h"

namespace tandem {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

std::vector<float> random_logits(size_t n, uint32_t seed, float scale = 3.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// The draw that sits at quantile q of [0, 1).
uint64_t draw_at(double q) { return static_cast<uint64_t>(q * 0x1p53); }

// Token frequencies of sample_row_reference over n evenly spaced draws: each
// token's share of the unit interval, to within 1 / n.
std::vector<double> grid_frequencies(const std::vector<float>& logits, RowSampling s, int n) {
  std::vector<double> freq(logits.size(), 0.0);
  for (int j = 0; j < n; ++j) {
    s.draw = draw_at((j + 0.5) / n);
    std::vector<float> row = logits;
    const int32_t id = sample_row_reference(row, s);
    EXPECT_GE(id, 0);
    if (id >= 0) freq[static_cast<size_t>(id)] += 1.0 / n;
  }
  return freq;
}

// The distribution by the book, in double: temperature -> top-k -> softmax
// -> min-p -> top-p -> renormalise. (Inputs avoid ties and boundaries.)
std::vector<double> expected_distribution(const std::vector<float>& logits, float temperature, int top_k, float top_p,
                                          float min_p) {
  const size_t n = logits.size();
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return logits[a] > logits[b]; });
  const size_t k = top_k > 0 ? std::min(n, static_cast<size_t>(top_k)) : n;
  order.resize(k);
  std::vector<double> w(k);
  for (size_t j = 0; j < k; ++j) w[j] = std::exp((static_cast<double>(logits[order[j]]) - logits[order[0]]) / temperature);
  size_t live = 0;  // min-p: weights are falling, so the kept ones are a prefix
  double sum = 0;
  while (live < k && w[live] >= min_p * w[0]) sum += w[live++];
  std::vector<double> p(n, 0.0);
  double kept = 0;
  for (size_t j = 0; j < live; ++j) {
    p[order[j]] = w[j];
    kept += w[j] / sum;
    if (top_p < 1.0f && kept >= top_p) break;
  }
  double total = 0;
  for (double x : p) total += x;
  for (double& x : p) x /= total;
  return p;
}

// plan_row's entries turn the raw logits into the bits Sampler::sample
// leaves in its row after its own penalties, for every combination.
TEST(RowSampling, PlanRowPenalisesAsTheSamplerDoes) {
  const std::vector<int32_t> prompt = {3, 9, 9, 40, 7, 3};
  const std::vector<int32_t> generated = {9, 12, 12, 12, 7, 55, 63};
  for (int combo = 0; combo < 8; ++combo) {
    SamplingParams p;
    p.temperature = 0.9f;
    p.seed = 11;
    p.repetition_penalty = combo & 1 ? 1.3f : 1.0f;
    p.presence_penalty = combo & 2 ? 0.7f : 0.0f;
    p.frequency_penalty = combo & 4 ? -0.35f : 0.0f;
    const std::vector<float> logits = random_logits(64, 100 + combo);
    std::vector<float> by_sampler = logits;
    Sampler(p).sample(by_sampler, prompt, generated);
    RowSampling rs;
    Sampler(p).plan_row(prompt, generated, logits.size(), rs);
    std::vector<float> by_entries = logits;
    for (const PenaltyEntry& e : rs.penalties) {
      by_entries[static_cast<size_t>(e.id)] = penalised_logit(by_entries[static_cast<size_t>(e.id)], e, rs.repetition_penalty);
    }
    EXPECT_EQ(0, std::memcmp(by_sampler.data(), by_entries.data(), logits.size() * sizeof(float))) << "combo " << combo;
    // One entry per distinct id, none when no penalty is on.
    std::vector<int32_t> ids;
    for (const PenaltyEntry& e : rs.penalties) ids.push_back(e.id);
    std::sort(ids.begin(), ids.end());
    EXPECT_EQ(std::adjacent_find(ids.begin(), ids.end()), ids.end()) << "combo " << combo;
    const size_t want = combo & 1 ? 7 : (combo & 6 ? 5 : 0);  // distinct ids of prompt + generated, or of generated
    EXPECT_EQ(rs.penalties.size(), want) << "combo " << combo;
  }
}

// The draw is the sampler's next 53 bits, one a row; greedy rows take none.
TEST(RowSampling, PlanRowTakesTheSamplersDraw) {
  SamplingParams p;
  p.temperature = 0.8f;
  p.seed = 77;
  Sampler sampler(p);
  std::mt19937_64 rng(77);
  RowSampling rs;
  for (int i = 0; i < 3; ++i) {
    sampler.plan_row({}, {}, 10, rs);
    EXPECT_EQ(rs.draw, rng() >> 11);
    EXPECT_FALSE(rs.greedy);
    EXPECT_EQ(rs.scale, 1.0f / 0.8f);
  }
  p.temperature = 0.0f;
  p.repetition_penalty = 1.2f;
  Sampler greedy(p);
  greedy.plan_row({}, {}, 10, rs);
  EXPECT_TRUE(rs.greedy);
  EXPECT_EQ(rs.draw, 0u);
  const std::vector<int32_t> bad = {10};
  EXPECT_THROW(greedy.plan_row(bad, {}, 10, rs), Error);
}

// Greedy with penalties: the token Sampler::sample picks.
TEST(RowSampling, GreedyWithPenaltiesMatchesTheSampler) {
  SamplingParams p;
  p.temperature = 0.0f;
  p.repetition_penalty = 1.5f;
  p.frequency_penalty = 0.4f;
  const std::vector<int32_t> prompt = {1, 2, 3};
  for (uint32_t seed = 0; seed < 20; ++seed) {
    std::vector<float> logits = random_logits(200, seed, 1.0f);
    std::vector<int32_t> generated;
    for (int i = 0; i < 6; ++i) {
      generated.push_back(static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin()));
    }
    std::vector<float> a = logits, b = logits;
    Sampler sampler(p);
    const int32_t want = sampler.sample(a, prompt, generated);
    RowSampling rs;
    Sampler(p).plan_row(prompt, generated, logits.size(), rs);
    EXPECT_EQ(sample_row_reference(b, rs), want) << "seed " << seed;
  }
}

// Over evenly spaced draws, each token's share is its probability under
// temperature, top-k, min-p and top-p (to within the grid step, and the
// fixed point's 2^-40), and Sampler's own frequencies agree statistically.
TEST(RowSampling, DrawsTheSamplersDistribution) {
  struct Case {
    float temperature;
    int top_k;
    float top_p;
    float min_p;
  };
  const Case cases[] = {{1.0f, 0, 1.0f, 0.0f}, {0.7f, 5, 1.0f, 0.0f}, {1.3f, 0, 0.83f, 0.0f},
                        {0.9f, 8, 0.9f, 0.02f}, {1.0f, 0, 1.0f, 0.1f}};
  const std::vector<float> logits = random_logits(40, 5, 1.5f);
  constexpr int kGrid = 20000;
  constexpr int kSamples = 20000;
  for (const Case& c : cases) {
    SamplingParams p;
    p.temperature = c.temperature;
    p.top_k = c.top_k;
    p.top_p = c.top_p;
    p.min_p = c.min_p;
    p.seed = 3;
    RowSampling rs;
    Sampler(p).plan_row({}, {}, logits.size(), rs);
    const std::vector<double> got = grid_frequencies(logits, rs, kGrid);
    const std::vector<double> want = expected_distribution(logits, c.temperature, c.top_k, c.top_p, c.min_p);
    std::vector<double> sampler_freq(logits.size(), 0.0);
    Sampler sampler(p);
    for (int i = 0; i < kSamples; ++i) {
      std::vector<float> row = logits;
      sampler_freq[static_cast<size_t>(sampler.sample(row, {}, {}))] += 1.0 / kSamples;
    }
    for (size_t t = 0; t < logits.size(); ++t) {
      EXPECT_NEAR(got[t], want[t], 2.0 / kGrid) << "T " << c.temperature << " k " << c.top_k << " p " << c.top_p
                                                << " min_p " << c.min_p << ", token " << t;
      EXPECT_EQ(got[t] > 0, want[t] > 0) << "token " << t << ": the kept sets differ";
      const double sigma = std::sqrt(std::max(want[t] * (1 - want[t]), 1e-9) / kSamples);
      EXPECT_NEAR(sampler_freq[t], got[t], 5 * sigma + 2.0 / kGrid) << "token " << t << " against Sampler";
    }
  }
}

// The rule's edges: ties, boundaries, non-finite logits.
TEST(RowSampling, TiesBoundariesAndNonFiniteLogits) {
  RowSampling s;
  s.scale = 1.0f;
  // Equal logits: top-k keeps the lowest ids; -0 equals +0.
  {
    const std::vector<float> flat = {0.0f, -0.0f, 0.0f, -0.0f, 0.0f, 0.0f};
    RowSampling k = s;
    k.top_k = 3;
    const std::vector<double> f = grid_frequencies(flat, k, 3000);
    EXPECT_NEAR(f[0], 1.0 / 3, 1e-3);
    EXPECT_NEAR(f[1], 1.0 / 3, 1e-3);
    EXPECT_NEAR(f[2], 1.0 / 3, 1e-3);
    EXPECT_EQ(f[3] + f[4] + f[5], 0.0);
  }
  // Probabilities 0.5, 0.3, 0.2 with top_p 0.8 keep two tokens.
  {
    const std::vector<float> three = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
    RowSampling p = s;
    p.top_p = 0.8f;
    const std::vector<double> f = grid_frequencies(three, p, 8000);
    EXPECT_NEAR(f[0], 0.625, 1e-3);
    EXPECT_NEAR(f[1], 0.375, 1e-3);
    EXPECT_EQ(f[2], 0.0);
    // A tiny top_p keeps the best token alone.
    p.top_p = 1e-9f;
    const std::vector<double> g = grid_frequencies(three, p, 100);
    EXPECT_NEAR(g[0], 1.0, 1e-9);
  }
  // Equal weights at the top-p cut: the lowest ids among them.
  {
    const std::vector<float> four = {0.0f, 0.0f, 0.0f, 0.0f};
    RowSampling p = s;
    p.top_p = 0.5f;
    const std::vector<double> f = grid_frequencies(four, p, 4000);
    EXPECT_NEAR(f[0], 0.5, 1e-3);
    EXPECT_NEAR(f[1], 0.5, 1e-3);
    EXPECT_EQ(f[2] + f[3], 0.0);
  }
  // NaN is never drawn; +inf tokens share everything; nothing above -inf is -1.
  {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const std::vector<float> with_nan = {nan, 1.0f, nan, 1.0f};
    const std::vector<double> f = grid_frequencies(with_nan, s, 1000);
    EXPECT_EQ(f[0] + f[2], 0.0);
    EXPECT_NEAR(f[1], 0.5, 2e-3);
    const std::vector<float> with_inf = {3.0f, kInf, nan, kInf, 100.0f};
    const std::vector<double> g = grid_frequencies(with_inf, s, 1000);
    EXPECT_NEAR(g[1], 0.5, 2e-3);
    EXPECT_NEAR(g[3], 0.5, 2e-3);
    std::vector<float> none = {-kInf, nan, -kInf};
    EXPECT_EQ(sample_row_reference(none, s), -1);
  }
  // Penalties can push a logit to +inf (a huge negative frequency penalty
  // is out of range for requests, but the rule still holds).
  {
    std::vector<float> row = {0.0f, 1.0f, 2.0f};
    RowSampling p = s;
    p.penalties = {{0, 0, -kInf}};
    EXPECT_EQ(sample_row_reference(row, p), 0);
  }
}

}  // namespace
}  // namespace tandem
