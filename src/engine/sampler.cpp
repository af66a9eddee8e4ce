// Picks the next token from one row of logits: penalties, then greedy argmax
// or temperature -> top-k -> softmax -> min-p -> top-p -> one seeded draw.
//
// Cost model (vocab up to ~152k): a step makes a handful of linear passes
// over the vocab (penalties touch only the seen ids; then NaN check, max,
// one copy for the logprobs), written in fixed-width blocks so that the
// compiler vectorises them. Greedy stops there. Sampling adds one exp pass
// over the vocab, or over k candidates with top-k. Nothing sorts the vocab:
// top-k keeps a bounded buffer and selects in it; top-p takes weight bands
// and a mass quickselect. The logprobs' own exp pass runs only when asked for.
#include "engine/sampler.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <sstream>

#include "common/error.h"
#include "engine/sampling_math.h"

namespace tandem {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

// Block width for the vectorisable passes. Loops over exactly kLanes elements
// get vectorised by GCC at -O2 (its cheap cost model refuses loops that would
// need a scalar epilogue), and per-lane accumulators keep sums in a fixed order.
constexpr size_t kLanes = 16;

// On x86-64 the widest pass (exp) is also built for AVX2 and picked at load
// time. Lane by lane it is the same IEEE operations (AVX2 does not bring FMA,
// and ISO C++ mode does not contract), so both builds give identical bits.
#if defined(__x86_64__) && defined(__GNUC__) && defined(__ELF__)
#define TANDEM_SAMPLER_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define TANDEM_SAMPLER_CLONES
#endif

// Chunk width for the draw: the walk first skips whole chunks by their sums.
constexpr size_t kDrawChunk = 256;

// A set whose mass is within this fraction of top_p counts as reaching it, so
// that float rounding in exp() cannot add a token to a set that sits exactly on
// the boundary (e.g. probabilities 0.5, 0.3, 0.2 and top_p = 0.8 keep two).
constexpr double kTopPSlack = 1e-6;

std::string describe(double value) {
  std::ostringstream out;
  out << value;
  return out.str();
}

void check_param(bool ok, const char* field, const std::string& rule, double value) {
  if (!ok) {
    throw Error("sampling parameter " + std::string(field) + " " + rule + ", got " + describe(value));
  }
}

// out[i] = w = exp((x[i] - shift) * scale), with w < floor set to 0.
// (scale = 1 / temperature: a multiply is far cheaper than a divide, and
// differs from dividing by at most one rounding.)
// Returns the sum of out, accumulated in double in a fixed order.
// x: [n], out: [n]; may alias. PRECONDITIONS: no NaN in x; x[i] <= shift.
TANDEM_SAMPLER_CLONES
double exp_weights(const float* x, size_t n, float shift, float scale, float floor, float* out) {
  double acc[kLanes] = {};
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    float w[kLanes];
    for (size_t j = 0; j < kLanes; ++j) {
      const float e = exp_weight(x[i + j], shift, scale);
      w[j] = e >= floor ? e : 0.0f;
    }
    for (size_t j = 0; j < kLanes; ++j) {
      out[i + j] = w[j];
      acc[j] += w[j];
    }
  }
  for (size_t j = 0; i < n; ++i, ++j) {
    const float e = exp_weight(x[i], shift, scale);
    out[i] = e >= floor ? e : 0.0f;
    acc[j] += out[i];
  }
  double total = 0.0;
  for (double a : acc) total += a;
  return total;
}

// NaN -> -inf in place. Returns whether any entry is +inf. x: [n].
bool replace_nan(float* x, size_t n) {
  int pos_inf = 0;
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (size_t j = 0; j < kLanes; ++j) {
      const float l = x[i + j];
      x[i + j] = l != l ? -kInf : l;
      pos_inf |= l == kInf;
    }
  }
  for (; i < n; ++i) {
    const float l = x[i];
    x[i] = l != l ? -kInf : l;
    pos_inf |= l == kInf;
  }
  return pos_inf != 0;
}

// out[i] = (x[i] - a) - b. x: [n], out: [n].
void subtract_twice(const float* x, size_t n, float a, float b, float* out) {
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (size_t j = 0; j < kLanes; ++j) out[i + j] = (x[i + j] - a) - b;
  }
  for (; i < n; ++i) out[i] = (x[i] - a) - b;
}

// Lowest i with x[i] == value, or n. x: [n].
size_t first_index_of(const float* x, size_t n, float value) {
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    int hit = 0;
    for (size_t j = 0; j < kLanes; ++j) hit |= x[i + j] == value;
    if (hit) break;
  }
  for (; i < n; ++i) {
    if (x[i] == value) return i;
  }
  return n;
}

// Largest value in x[0, n). x: [n], n >= 1, no NaN.
float max_value(const float* x, size_t n) {
  float acc[kLanes];
  std::fill(acc, acc + kLanes, -kInf);
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (size_t j = 0; j < kLanes; ++j) acc[j] = x[i + j] > acc[j] ? x[i + j] : acc[j];
  }
  for (size_t j = 0; i < n; ++i, ++j) acc[j] = x[i] > acc[j] ? x[i] : acc[j];
  float best = -kInf;
  for (float a : acc) best = a > best ? a : best;
  return best;
}

// Sum of weight(i) for i in [begin, end), in double, fixed order.
template <class Weight>
double sum_range(const Weight& weight, size_t begin, size_t end) {
  double acc[8] = {};
  size_t i = begin;
  for (; i + 8 <= end; i += 8) {
    for (size_t j = 0; j < 8; ++j) acc[j] += weight(i + j);
  }
  for (size_t j = 0; i < end; ++i, ++j) acc[j] += weight(i);
  double total = 0.0;
  for (double a : acc) total += a;
  return total;
}

// Index i with probability weight(i) / sum of weights, given u in [0, 1).
// Never returns an index of weight 0. chunk_sums: scratch.
// PRECONDITIONS: n >= 1, weights >= 0 and finite, at least one > 0.
template <class Weight>
size_t draw_index(size_t n, const Weight& weight, double u, std::vector<double>& chunk_sums) {
  const size_t n_chunks = (n + kDrawChunk - 1) / kDrawChunk;
  chunk_sums.resize(n_chunks);
  double total = 0.0;
  for (size_t c = 0; c < n_chunks; ++c) {
    chunk_sums[c] = sum_range(weight, c * kDrawChunk, std::min(n, (c + 1) * kDrawChunk));
    total += chunk_sums[c];
  }
  const double target = u * total;
  double cum = 0.0;
  for (size_t c = 0; c < n_chunks; ++c) {
    if (cum + chunk_sums[c] <= target) {
      cum += chunk_sums[c];
      continue;
    }
    // The target falls in this chunk. Summing one by one can come out a
    // rounding error short of the chunk's sum; then the last positive weight
    // in the chunk is the answer.
    const size_t end = std::min(n, (c + 1) * kDrawChunk);
    size_t last_positive = c * kDrawChunk;
    for (size_t i = c * kDrawChunk; i < end; ++i) {
      const double w = weight(i);
      if (w > 0.0) last_positive = i;
      cum += w;
      if (cum > target) return i;
    }
    return last_positive;
  }
  // u * total rounded up to total: take the last token that has any weight.
  for (size_t i = n; i-- > 0;) {
    if (weight(i) > 0.0) return i;
  }
  return 0;  // unreachable given the preconditions
}

// Best first: larger value, then lower token id (a strict total order, so
// every selection and sort below is deterministic). A function object, so
// that nth_element and sort inline it.
struct Better {
  bool operator()(const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) const {
    if (a.first != b.first) return a.first > b.first;
    return a.second < b.second;
  }
};
constexpr Better better;

// True when some x[i], i in [begin, begin + kLanes), is above `threshold`.
// Lets the scans below skip whole blocks with one vector compare.
inline bool block_has_above(const float* x, float threshold) {
  int any = 0;
  for (size_t j = 0; j < kLanes; ++j) any |= x[j] > threshold;
  return any != 0;
}

using Candidate = std::pair<float, int32_t>;  // (weight, token id)

// Reorders c[begin, end) so that [begin, cut) is the smallest best-first
// prefix whose weight, added to `base`, reaches `target`, and returns cut
// (end if even all of it falls short). The prefix comes out in no particular
// order, but always the same one: the partition is written out here rather
// than taken from the standard library, whose element order is unspecified.
// Expected O(n): a quickselect on the order that descends into the side where
// the target mass lies, then a sort of the last few.
size_t select_mass(Candidate* c, size_t begin, size_t end, double base, double target) {
  size_t lo = begin;
  size_t hi = end;
  double acc = base;  // weight of [begin, lo), all of which is kept
  // Already best first (e.g. a run of equal weights, which arrive in id
  // order): the quickselect would only shuffle it; the walk below suffices.
  const bool sorted = std::is_sorted(c + begin, c + end, better);
  while (!sorted && hi - lo > 32) {
    // Median of three as the pivot, moved to lo.
    size_t mid = lo + (hi - lo) / 2;
    size_t last = hi - 1;
    if (better(c[mid], c[lo])) std::swap(c[mid], c[lo]);
    if (better(c[last], c[lo])) std::swap(c[last], c[lo]);
    if (better(c[last], c[mid])) std::swap(c[last], c[mid]);
    std::swap(c[lo], c[mid]);  // order is now lo <= mid <= last; mid is the median
    const Candidate pivot = c[lo];
    size_t store = lo + 1;
    double upper = 0.0;  // weight of the elements better than the pivot
    for (size_t i = lo + 1; i < hi; ++i) {
      if (better(c[i], pivot)) {
        upper += c[i].first;
        std::swap(c[i], c[store]);
        ++store;
      }
    }
    const size_t m = store - 1;
    std::swap(c[lo], c[m]);  // [lo, m) better than the pivot, c[m] the pivot, (m, hi) worse
    if (acc + upper >= target) {
      hi = m;
    } else if (acc + upper + pivot.first >= target) {
      return m + 1;
    } else {
      acc += upper + pivot.first;
      lo = m + 1;
    }
  }
  if (!sorted) std::sort(c + lo, c + hi, better);
  for (size_t i = lo; i < hi; ++i) {
    acc += c[i].first;
    if (acc >= target) return i + 1;
  }
  return hi;  // short only by rounding: keep what is known to be needed
}

// select_mass for large ranges of weights in (0, 1]: first narrows the cut to
// one bucket of a histogram over the float bit pattern (sign 0, 8 exponent
// bits, 4 mantissa bits: 1/16 of an octave per bucket; for positive floats
// the bit order is the value order), so the quickselect, whose compares are
// unpredictable branches, runs only on that bucket. scratch: any contents.
size_t select_mass_large(Candidate* c, size_t begin, size_t end, double base, double target,
                         std::vector<Candidate>& scratch) {
  constexpr size_t kSmall = 4096;
  constexpr int kShift = 19;
  constexpr size_t kBuckets = (std::bit_cast<uint32_t>(1.0f) >> kShift) + 1;
  if (end - begin <= kSmall) return select_mass(c, begin, end, base, target);
  const auto bucket_of = [](float w) { return std::min<size_t>(std::bit_cast<uint32_t>(w) >> kShift, kBuckets - 1); };
  // Four interleaved histograms: runs of equal weights (common) would
  // otherwise chain every add through the same memory slot.
  std::vector<double> partial(4 * kBuckets, 0.0);
  size_t i = begin;
  for (; i + 4 <= end; i += 4) {
    for (size_t h = 0; h < 4; ++h) partial[h * kBuckets + bucket_of(c[i + h].first)] += c[i + h].first;
  }
  for (; i < end; ++i) partial[bucket_of(c[i].first)] += c[i].first;
  std::vector<double> mass(kBuckets);
  for (size_t b = 0; b < kBuckets; ++b) {
    mass[b] = (partial[b] + partial[kBuckets + b]) + (partial[2 * kBuckets + b] + partial[3 * kBuckets + b]);
  }
  double acc = base;
  size_t cut_bucket = kBuckets;
  for (size_t b = kBuckets; b-- > 0;) {
    if (acc + mass[b] >= target) {
      cut_bucket = b;
      break;
    }
    acc += mass[b];
  }
  if (cut_bucket == kBuckets) return end;  // short only by rounding: keep all
  // Heavier buckets to the front (all kept), then the cut bucket; the rest
  // is dropped by the caller. Branch-free: every element is written to both
  // places and the counts advance only where it belongs.
  scratch.resize(end - begin);
  size_t out = begin;
  size_t in_cut = 0;
  for (i = begin; i < end; ++i) {
    const Candidate x = c[i];
    const size_t b = bucket_of(x.first);
    c[out] = x;  // out <= i: never overwrites what is still to be read
    out += b > cut_bucket;
    scratch[in_cut] = x;
    in_cut += b == cut_bucket;
  }
  std::copy(scratch.begin(), scratch.begin() + in_cut, c + out);
  return select_mass(c, out, out + in_cut, acc, target);
}

}  // namespace

void validate(const SamplingParams& p) {
  check_param(std::isfinite(p.temperature) && p.temperature >= 0.0f, "temperature",
              "must be a finite number >= 0 (0 = greedy)", p.temperature);
  check_param(p.top_k >= 0, "top_k", "must be >= 0 (0 = off)", p.top_k);
  check_param(std::isfinite(p.top_p) && p.top_p > 0.0f && p.top_p <= 1.0f, "top_p",
              "must be in (0, 1] (1 = off)", p.top_p);
  check_param(std::isfinite(p.min_p) && p.min_p >= 0.0f && p.min_p <= 1.0f, "min_p",
              "must be in [0, 1] (0 = off)", p.min_p);
  check_param(std::isfinite(p.repetition_penalty) && p.repetition_penalty > 0.0f, "repetition_penalty",
              "must be a finite number > 0 (1 = off)", p.repetition_penalty);
  check_param(std::isfinite(p.presence_penalty) && p.presence_penalty >= -2.0f && p.presence_penalty <= 2.0f,
              "presence_penalty", "must be in [-2, 2] (0 = off)", p.presence_penalty);
  check_param(std::isfinite(p.frequency_penalty) && p.frequency_penalty >= -2.0f && p.frequency_penalty <= 2.0f,
              "frequency_penalty", "must be in [-2, 2] (0 = off)", p.frequency_penalty);
  check_param(p.max_tokens >= 0, "max_tokens", "must be >= 0", p.max_tokens);
  for (size_t i = 0; i < p.stop.size(); ++i) {
    if (p.stop[i].empty()) {
      throw Error("sampling parameter stop[" + std::to_string(i) +
                  "] is an empty string; leave it out (an empty stop string would end every reply at once)");
    }
  }
}

Sampler::Sampler(const SamplingParams& params) : params_(params) {
  validate(params_);
  uint64_t seed = 0;
  if (params_.seed) {
    seed = *params_.seed;
  } else {
    std::random_device device;
    seed = (static_cast<uint64_t>(device()) << 32) ^ device();
  }
  rng_.seed(seed);
}

double Sampler::next_uniform() {
  // The top 53 bits of one mt19937_64 output, scaled: exact in double, in
  // [0, 1), and identical on every platform.
  return static_cast<double>(rng_() >> 11) * 0x1.0p-53;
}

void Sampler::apply_penalties(std::span<float> logits, std::span<const int32_t> prompt,
                              std::span<const int32_t> generated) {
  const size_t vocab = logits.size();
  if (params_.repetition_penalty != 1.0f) {
    // Each distinct token seen in prompt or generated is penalised once.
    // seen_ marks the ones done; it is cleared again through the same ids,
    // so the cost is O(prompt + generated), not O(vocab).
    seen_.resize(vocab, 0);
    const float penalty = params_.repetition_penalty;
    for (std::span<const int32_t> ids : {prompt, generated}) {
      for (int32_t id : ids) {
        if (seen_[id]) continue;
        seen_[id] = 1;
        float& l = logits[id];
        l = l > 0.0f ? l / penalty : l * penalty;
      }
    }
    for (std::span<const int32_t> ids : {prompt, generated}) {
      for (int32_t id : ids) seen_[id] = 0;
    }
  }
  if (params_.presence_penalty != 0.0f || params_.frequency_penalty != 0.0f) {
    // OpenAI's definition: logit -= count * frequency_penalty
    //                              + (count > 0) * presence_penalty,
    // with count the occurrences in the generated tokens only.
    counts_.resize(vocab, 0);
    for (int32_t id : generated) ++counts_[id];
    for (int32_t id : generated) {
      const uint32_t count = counts_[id];
      if (count == 0) continue;  // already applied for this id
      logits[id] -= static_cast<float>(count) * params_.frequency_penalty + params_.presence_penalty;
      counts_[id] = 0;
    }
  }
}

int32_t Sampler::sample(std::span<float> logits, std::span<const int32_t> prompt,
                        std::span<const int32_t> generated) {
  const size_t vocab = logits.size();
  // (if/throw rather than check(): check() would build its message string on
  // every call, and this runs once per token.)
  if (vocab == 0) throw Error("sampler: the logits row is empty (vocab size 0)");
  if (vocab > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    throw Error("sampler: vocab of " + std::to_string(vocab) + " entries does not fit 32-bit token ids");
  }
  const auto check_ids = [vocab](std::span<const int32_t> ids, const char* what) {
    for (int32_t id : ids) {
      if (id < 0 || static_cast<size_t>(id) >= vocab) {
        throw Error("sampler: token id " + std::to_string(id) + " in the " + what +
                    " is outside the vocabulary of " + std::to_string(vocab) + " logits");
      }
    }
  };
  check_ids(prompt, "prompt");
  check_ids(generated, "generated tokens");
  // Until this call succeeds, there are no logprobs to report.
  penalised_.clear();
  logprobs_.clear();
  logprobs_ready_ = true;

  apply_penalties(logits, prompt, generated);

  // NaN -> -inf; any +inf turns the row into 0 (for +inf) / -inf (the rest).
  // After the penalties, so that a penalty overflowing to +inf is caught too.
  if (replace_nan(logits.data(), vocab)) {
    for (float& l : logits) l = (l == kInf) ? 0.0f : -kInf;
  }

  const float max_logit = max_value(logits.data(), vocab);
  if (!(max_logit > -kInf)) {
    throw Error("sampler: every logit is NaN or -inf (after penalties); the model produced no usable distribution");
  }

  // Kept for last_logprobs(); the caller may reuse its buffer.
  penalised_.assign(logits.begin(), logits.end());
  penalised_max_ = max_logit;
  penalised_sum_ = -1.0;
  logprobs_ready_ = false;

  // A temperature so small that 1 / temperature overflows is greedy in the
  // limit (except that ties go to the lowest id rather than being shared).
  if (params_.temperature == 0.0f || !std::isfinite(1.0f / params_.temperature)) {
    // Greedy: the first (lowest id) token holding the max.
    return static_cast<int32_t>(first_index_of(logits.data(), vocab, max_logit));
  }
  return sample_stochastic(logits, max_logit);
}

bool Sampler::is_plain_greedy() const {
  const bool greedy = params_.temperature == 0.0f || !std::isfinite(1.0f / params_.temperature);
  return greedy && params_.repetition_penalty == 1.0f && params_.presence_penalty == 0.0f &&
         params_.frequency_penalty == 0.0f;
}

void Sampler::plan_row(std::span<const int32_t> prompt, std::span<const int32_t> generated, size_t vocab,
                       RowSampling& out) {
  if (vocab == 0) throw Error("sampler: the logits row is empty (vocab size 0)");
  if (vocab > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    throw Error("sampler: vocab of " + std::to_string(vocab) + " entries does not fit 32-bit token ids");
  }
  for (std::span<const int32_t> ids : {prompt, generated}) {
    for (int32_t id : ids) {
      if (id < 0 || static_cast<size_t>(id) >= vocab) {
        throw Error("sampler: token id " + std::to_string(id) + " is outside the vocabulary of " +
                    std::to_string(vocab) + " logits");
      }
    }
  }
  penalised_.clear();
  logprobs_.clear();
  logprobs_ready_ = true;
  out.greedy = params_.temperature == 0.0f || !std::isfinite(1.0f / params_.temperature);
  out.scale = out.greedy ? 1.0f : 1.0f / params_.temperature;
  out.top_k = params_.top_k;
  out.top_p = params_.top_p;
  out.min_p = params_.min_p;
  out.repetition_penalty = params_.repetition_penalty;
  out.draw = out.greedy ? 0 : rng_() >> 11;  // next_uniform()'s 53 bits
  out.penalties.clear();
  const bool repeat = params_.repetition_penalty != 1.0f;
  const bool subtract = params_.presence_penalty != 0.0f || params_.frequency_penalty != 0.0f;
  if (!repeat && !subtract) return;
  // One entry per distinct id, as apply_penalties touches each once (seen_
  // marks the ids that have one; counts_ counts the generated ones).
  seen_.resize(vocab, 0);
  counts_.resize(vocab, 0);
  const auto add_entries = [&](std::span<const int32_t> ids, bool is_generated) {
    for (int32_t id : ids) {
      if (is_generated) ++counts_[id];
      if (seen_[id] != 0) continue;
      seen_[id] = 1;
      out.penalties.push_back({id, repeat ? 1 : 0, 0.0f});
    }
  };
  if (repeat) add_entries(prompt, false);  // the prompt only matters to the repetition penalty
  add_entries(generated, true);
  for (PenaltyEntry& e : out.penalties) {
    const uint32_t count = counts_[e.id];
    if (subtract && count > 0) {
      e.subtract = static_cast<float>(count) * params_.frequency_penalty + params_.presence_penalty;
    }
    seen_[e.id] = 0;
    counts_[e.id] = 0;
  }
}

const std::vector<float>& Sampler::last_logprobs() const {
  if (!logprobs_ready_) {
    // log p = (l - max) - log(sum exp(l - max)); logprobs_ holds the exps
    // until the subtraction overwrites them.
    const size_t vocab = penalised_.size();
    logprobs_.resize(vocab);
    double sum = penalised_sum_;
    if (sum < 0.0) sum = exp_weights(penalised_.data(), vocab, penalised_max_, 1.0f, 0.0f, logprobs_.data());
    subtract_twice(penalised_.data(), vocab, penalised_max_, static_cast<float>(std::log(sum)), logprobs_.data());
    logprobs_ready_ = true;
  }
  return logprobs_;
}

void Sampler::select_top_k(std::span<const float> logits, size_t k) {
  // Bounded buffer: collect candidates above a threshold; when the buffer
  // fills, keep its k best and raise the threshold to the k-th. The scan is
  // in id order, so everything buffered has a lower id than the current token
  // and a tie with the threshold loses: `> threshold` is exact. Blocks with
  // nothing above the threshold are skipped with one vector compare.
  const size_t capacity = std::max<size_t>(2 * k, 256);
  const size_t n = logits.size();
  const float* x = logits.data();
  candidates_.clear();
  candidates_.reserve(capacity);
  float threshold = -kInf;
  for (size_t block = 0; block < n; block += kLanes) {
    const size_t end = std::min(n, block + kLanes);
    if (end - block == kLanes && !block_has_above(x + block, threshold)) continue;
    for (size_t i = block; i < end; ++i) {
      if (!(x[i] > threshold)) continue;
      candidates_.emplace_back(x[i], static_cast<int32_t>(i));
      if (candidates_.size() == capacity) {
        std::nth_element(candidates_.begin(), candidates_.begin() + (k - 1), candidates_.end(), better);
        candidates_.resize(k);
        threshold = candidates_[k - 1].first;
      }
    }
  }
  if (candidates_.size() > k) {
    std::nth_element(candidates_.begin(), candidates_.begin() + (k - 1), candidates_.end(), better);
    candidates_.resize(k);
  }
  std::sort(candidates_.begin(), candidates_.end(), better);
}

void Sampler::top_p_from_weights(double total) {
  // Candidates are taken in two bands of weight, heaviest first: (1e-4, 1],
  // then (0, 1e-4]. The first band is wholly better than the second, so it
  // is either kept whole or holds the cut, and only the band with the cut
  // goes through select_mass. Peaked rows (most of what a model produces)
  // end in the first band, a few hundred tokens out of the vocab.
  const double target = (static_cast<double>(params_.top_p) - kTopPSlack) * total;
  const size_t n = weights_.size();
  const float* w = weights_.data();
  // pool_ has room for the whole vocab plus one, so that the compaction below
  // can write every weight and advance only past the kept ones, without
  // branches (once all n are kept, later writes land in the spare slot).
  // It only ever grows: shrinking and regrowing would re-initialise it.
  if (pool_.size() < n + 1) pool_.resize(n + 1);
  Candidate* c = pool_.data();
  size_t count = 0;
  double acc = 0.0;
  float upper = kInf;
  for (float cutoff : {1e-4f, 0.0f}) {
    const size_t band_begin = count;
    for (size_t block = 0; block < n; block += kLanes) {
      const size_t end = std::min(n, block + kLanes);
      if (end - block == kLanes && !block_has_above(w + block, cutoff)) continue;
      for (size_t i = block; i < end; ++i) {
        c[count] = Candidate(w[i], static_cast<int32_t>(i));
        count += (w[i] > cutoff) & (w[i] <= upper);
      }
    }
    const double band = sum_range([c](size_t i) { return c[i].first; }, band_begin, count);
    if (acc + band >= target) {
      count = select_mass_large(c, band_begin, count, acc, target, bucket_scratch_);
      break;
    }
    acc += band;
    upper = cutoff;
  }
  // (If rounding left even the whole support short of the target, count
  // covers all of it.)
  candidates_.assign(c, c + count);
}

int32_t Sampler::sample_stochastic(std::span<const float> logits, float max_logit) {
  const size_t vocab = logits.size();
  const float scale = 1.0f / params_.temperature;
  // min-p in weight space: the best token has weight exp(0) = 1, so
  // p >= min_p * p_max is weight >= min_p.
  const float floor = params_.min_p;
  const bool use_top_k = params_.top_k > 0 && static_cast<size_t>(params_.top_k) < vocab;
  const bool use_top_p = params_.top_p < 1.0f;
  const double u = next_uniform();

  if (!use_top_k) {
    // Weights over the whole vocab, indexed by token id.
    weights_.resize(vocab);
    const double total = exp_weights(logits.data(), vocab, max_logit, scale, floor, weights_.data());
    if (scale == 1.0f && floor == 0.0f) penalised_sum_ = total;  // saves last_logprobs() a pass
    if (!use_top_p) {
      const float* w = weights_.data();
      return static_cast<int32_t>(draw_index(vocab, [w](size_t i) { return w[i]; }, u, chunk_sums_));
    }
    top_p_from_weights(total);
  } else {
    select_top_k(logits, static_cast<size_t>(params_.top_k));
    // candidates_ is best first; turn each logit into its weight in place.
    const size_t k = candidates_.size();
    weights_.resize(k);
    for (size_t j = 0; j < k; ++j) weights_[j] = candidates_[j].first;
    const double total = exp_weights(weights_.data(), k, max_logit, scale, floor, weights_.data());
    size_t kept = 0;
    for (size_t j = 0; j < k; ++j) {
      candidates_[j].first = weights_[j];
      if (weights_[j] > 0.0f) kept = j + 1;  // weights fall along the list
    }
    candidates_.resize(kept);
    if (use_top_p) {
      // Already sorted best first: the cut is a walk.
      const double target = (static_cast<double>(params_.top_p) - kTopPSlack) * total;
      double cum = 0.0;
      for (size_t j = 0; j < candidates_.size(); ++j) {
        cum += candidates_[j].first;
        if (cum >= target) {
          candidates_.resize(j + 1);
          break;
        }
      }
    }
  }
  const auto* c = candidates_.data();
  const size_t index = draw_index(candidates_.size(), [c](size_t i) { return c[i].first; }, u, chunk_sums_);
  return candidates_[index].second;
}

}  // namespace tandem
