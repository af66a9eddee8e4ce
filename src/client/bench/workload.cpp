#include "client/bench/workload.h"

#include <algorithm>
#include <cmath>

namespace tandem::client::bench {

uint64_t SplitMix64::next() {
  uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

int64_t SplitMix64::uniform(int64_t lo, int64_t hi) {
  const uint64_t span = static_cast<uint64_t>(hi - lo) + 1;  // 0 only for the full 64-bit range
  if (span == 0) return static_cast<int64_t>(next());
  // Rejection sampling: no modulo bias.
  const uint64_t limit = UINT64_MAX - UINT64_MAX % span;
  uint64_t x;
  do x = next();
  while (x >= limit);
  return lo + static_cast<int64_t>(x % span);
}

std::vector<RequestSpec> make_workload(int64_t count, LengthRange prompt_tokens, LengthRange max_tokens, uint64_t seed) {
  SplitMix64 rng(seed);
  std::vector<RequestSpec> specs;
  specs.reserve(static_cast<size_t>(std::max<int64_t>(count, 0)));
  for (int64_t i = 0; i < count; ++i) {
    RequestSpec s;
    s.index = static_cast<size_t>(i);
    s.prompt_tokens = rng.uniform(prompt_tokens.min, prompt_tokens.max);
    s.max_tokens = rng.uniform(max_tokens.min, max_tokens.max);
    s.word_seed = rng.next();
    specs.push_back(s);
  }
  return specs;
}

const std::vector<std::string>& prompt_words() {
  static const std::vector<std::string> words = {
      "the",   "and",   "of",    "to",    "in",    "that",  "he",    "is",    "for",   "it",    "with",  "as",
      "his",   "was",   "on",    "be",    "at",    "by",    "this",  "had",   "not",   "are",   "but",   "from",
      "or",    "have",  "an",    "they",  "which", "one",   "you",   "were",  "her",   "all",   "she",   "there",
      "would", "their", "we",    "him",   "been",  "has",   "when",  "who",   "will",  "more",  "no",    "if",
      "out",   "so",    "said",  "what",  "up",    "its",   "about", "into",  "than",  "them",  "can",   "only",
      "other", "new",   "some",  "could", "time",  "these", "two",   "may",   "then",  "do",    "first", "any",
      "my",    "now",   "such",  "like",  "our",   "over",  "man",   "me",    "even",  "most",  "made",  "after",
      "also",  "did",   "many",  "before", "must", "through", "years", "where", "much", "your", "way",  "well",
      "down",  "should", "because", "each", "just", "those", "people", "how", "too",   "little", "good", "very",
      "make",  "world", "still", "own",   "see",   "men",   "work",  "long",  "get",   "here",  "between", "both",
      "life",  "being", "under", "never", "day",   "same",  "another", "know", "while", "last",  "might", "us",
      "great", "old",   "year",  "off",   "come",  "since", "against", "go",  "came",  "right", "used",  "take",
      "three", "house", "land",  "light", "water", "word",  "king",  "city",  "heart", "hand",  "name",  "voice",
  };
  return words;
}

std::string prompt_text(uint64_t word_seed, int64_t n_words) {
  const std::vector<std::string>& words = prompt_words();
  SplitMix64 rng(word_seed);
  std::string text;
  for (int64_t i = 0; i < n_words; ++i) {
    if (i > 0) text += ' ';
    text += words[static_cast<size_t>(rng.uniform(0, static_cast<int64_t>(words.size()) - 1))];
  }
  return text;
}

int64_t TokenModel::words_for(int64_t tokens) const {
  const double w = std::round((static_cast<double>(tokens) - fixed_tokens) / tokens_per_word);
  return std::max<int64_t>(1, static_cast<int64_t>(w));
}

TokenModel fit_token_model(int64_t words_a, int64_t tokens_a, int64_t words_b, int64_t tokens_b) {
  TokenModel m;
  const double slope = static_cast<double>(tokens_b - tokens_a) / static_cast<double>(words_b - words_a);
  if (!(slope > 0) || !std::isfinite(slope)) return m;
  m.tokens_per_word = slope;
  m.fixed_tokens = static_cast<double>(tokens_a) - slope * static_cast<double>(words_a);
  return m;
}

}  // namespace tandem::client::bench
