// What one benchmark request measured. Times are milliseconds on the
// client's steady clock: `start_ms` from the start of its level, the others
// from the request's own start (just before it was sent).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tandem::client::bench {

struct RequestResult {
  size_t index = 0;            // into the workload
  int64_t prompt_tokens_target = 0;
  int64_t max_tokens = 0;
  bool ok = false;
  std::string error_code;      // when !ok: the server's code (context_length_exceeded, http_503, ...) or a client one
  std::string error_message;
  double start_ms = 0;
  double e2e_ms = 0;           // until the last event of the request
  // One entry per arrival of generated tokens: a WebSocket `token` event or
  // an SSE chunk with text. `arrival_tokens` holds how many tokens each
  // carried (the event's token_ids; 1 per SSE chunk, which carries no count).
  std::vector<double> arrival_ms;
  std::vector<int> arrival_tokens;
  int64_t prompt_tokens = -1;      // from the server's usage; -1 when it sent none
  int64_t completion_tokens = -1;  // from usage; -1 when it sent none
  std::string finish_reason;

  double ttft_ms() const { return arrival_ms.empty() ? -1.0 : arrival_ms.front(); }
  // Generated tokens: usage when reported, else the tokens counted in arrivals.
  int64_t output_tokens() const;
};

}  // namespace tandem::client::bench
