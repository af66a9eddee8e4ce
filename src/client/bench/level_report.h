// Per-concurrency-level statistics computed from the raw request results.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "client/bench/request_result.h"
#include "client/bench/stats.h"

namespace tandem::client::bench {

struct LevelReport {
  int concurrency = 0;
  double duration_s = 0;  // level start to the last request's end
  size_t requests = 0;
  size_t succeeded = 0;
  size_t failed = 0;
  std::map<std::string, size_t> errors;  // code -> count
  std::string first_error_message;       // one example, for the table
  int64_t prompt_tokens = 0;             // sum over succeeded requests (usage)
  int64_t output_tokens = 0;
  size_t requests_without_usage = 0;     // their output was counted from arrivals
  bool interrupted = false;               // stopped early by a signal: `requests` ran, fewer than asked
  size_t short_outputs = 0;              // succeeded with fewer tokens than max_tokens (EOS, stop, or the context)
  double output_tokens_per_s = 0;        // all streams together
  double total_tokens_per_s = 0;         // prompt and output tokens together, all streams
  double requests_per_s = 0;
  Summary ttft_ms;
  Summary itl_ms;        // gaps between token arrivals, shared evenly by the tokens an arrival carries
  Summary tpot_ms;       // per request: (e2e - ttft) / (output tokens - 1)
  Summary e2e_ms;
  Summary stream_tokens_per_s;  // per request: decode rate after the first token, 1000 / tpot
  std::vector<RequestResult> results;
};

// PRECONDITIONS: results are this level's, in any order.
LevelReport make_level_report(int concurrency, double duration_s, std::vector<RequestResult> results);

}  // namespace tandem::client::bench
