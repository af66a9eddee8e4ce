// Turns each request's prompt-token target into prompt text. Two probes fit
// tokens = fixed + per_word * words for the server's tokenizer. When token
// counts are cheap and exact (tandem's /tokenize), every prompt is then
// checked and its word count corrected until it hits the target (or the
// closest count a whole number of words gives). Otherwise (OpenAI servers,
// where a count costs a generation) the fitted line sizes every prompt; the
// tokens the server actually counted come back in each request's usage.
#pragma once

#include <string>
#include <vector>

#include "client/bench/backend.h"

namespace tandem::client::bench {

struct SizedPrompts {
  std::vector<PreparedRequest> requests;
  TokenModel model;
  std::string method;  // "tokenize" or "usage_fit"
};

asio::awaitable<SizedPrompts> size_prompts(Backend& backend, const std::vector<RequestSpec>& specs);

}  // namespace tandem::client::bench
