// The requests a benchmark sends: prompt and output lengths (fixed or drawn
// from a range with a seed) and prompt text made of common English words.
// The same workload runs at every concurrency level, so levels differ only in
// concurrency.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "client/bench/bench_options.h"

namespace tandem::client::bench {

// SplitMix64: a small, fully specified generator, so a seed gives the same
// workload on every platform and standard library.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t next();
  // Uniform in [lo, hi]. PRECONDITIONS: lo <= hi.
  int64_t uniform(int64_t lo, int64_t hi);

 private:
  uint64_t state_;
};

struct RequestSpec {
  size_t index = 0;
  int64_t prompt_tokens = 0;  // target; the prompt text is calibrated to it
  int64_t max_tokens = 0;
  uint64_t word_seed = 0;     // picks this request's words
};

// `count` requests; lengths uniform in each range (fixed when min == max).
std::vector<RequestSpec> make_workload(int64_t count, LengthRange prompt_tokens, LengthRange max_tokens, uint64_t seed);

// The word list prompts are built from: short, common English words that
// byte-level and SentencePiece vocabularies hold as one token (with the
// leading space), so a prompt of k words is close to k tokens.
const std::vector<std::string>& prompt_words();

// The first `n_words` words of the sequence `word_seed` picks, joined by
// spaces. Prefix-stable: the text for n is a prefix of the text for n + 1.
std::string prompt_text(uint64_t word_seed, int64_t n_words);

// tokens ~= fixed_tokens + tokens_per_word * words, fitted from two
// measurements (the server's token counts for two prompt sizes).
struct TokenModel {
  double tokens_per_word = 1.0;
  double fixed_tokens = 0.0;  // BOS and the like
  // Words for a prompt of about `tokens` tokens; at least 1.
  int64_t words_for(int64_t tokens) const;
};
// PRECONDITIONS: words_a != words_b. A non-positive slope (a server that
// reports nonsense) falls back to one token per word.
TokenModel fit_token_model(int64_t words_a, int64_t tokens_a, int64_t words_b, int64_t tokens_b);

}  // namespace tandem::client::bench
