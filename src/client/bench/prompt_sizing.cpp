#include "client/bench/prompt_sizing.h"

#include <cmath>
#include <cstdlib>
#include <map>

namespace tandem::client::bench {

asio::awaitable<SizedPrompts> size_prompts(Backend& backend, const std::vector<RequestSpec>& specs) {
  SizedPrompts out;
  // Probe prompts from a fixed seed, unrelated to any request's words.
  constexpr uint64_t kProbeSeed = 0x7a6e64656dULL;
  constexpr int64_t kWordsA = 8, kWordsB = 64;
  const int64_t tokens_a = co_await backend.count_prompt_tokens(prompt_text(kProbeSeed, kWordsA));
  const int64_t tokens_b = co_await backend.count_prompt_tokens(prompt_text(kProbeSeed, kWordsB));
  out.model = fit_token_model(kWordsA, tokens_a, kWordsB, tokens_b);
  out.method = backend.cheap_token_counts() ? "tokenize" : "usage_fit";
  for (const RequestSpec& spec : specs) {
    int64_t words = out.model.words_for(spec.prompt_tokens);
    if (backend.cheap_token_counts()) {
      // Step toward the target; a word can be more than one token, so keep
      // the closest count seen (ties: the shorter prompt).
      std::map<int64_t, int64_t> tried;  // words -> tokens
      int64_t best_words = words, best_miss = INT64_MAX;
      for (int step = 0; step < 8 && !tried.count(words); ++step) {
        const int64_t tokens = co_await backend.count_prompt_tokens(prompt_text(spec.word_seed, words));
        tried[words] = tokens;
        const int64_t miss = std::llabs(tokens - spec.prompt_tokens);
        if (miss < best_miss || (miss == best_miss && words < best_words)) {
          best_miss = miss;
          best_words = words;
        }
        if (tokens == spec.prompt_tokens) break;
        int64_t delta = static_cast<int64_t>(
            std::round(static_cast<double>(spec.prompt_tokens - tokens) / out.model.tokens_per_word));
        if (delta == 0) delta = tokens < spec.prompt_tokens ? 1 : -1;
        words = std::max<int64_t>(1, words + delta);
      }
      words = best_words;
    }
    out.requests.push_back({spec, prompt_text(spec.word_seed, words)});
  }
  co_return out;
}

}  // namespace tandem::client::bench
