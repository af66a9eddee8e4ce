#include "client/bench/level_report.h"

#include <algorithm>
#include <numeric>

namespace tandem::client::bench {

int64_t RequestResult::output_tokens() const {
  if (completion_tokens >= 0) return completion_tokens;
  return std::accumulate(arrival_tokens.begin(), arrival_tokens.end(), int64_t{0});
}

LevelReport make_level_report(int concurrency, double duration_s, std::vector<RequestResult> results) {
  LevelReport r;
  r.concurrency = concurrency;
  r.duration_s = duration_s;
  r.requests = results.size();
  std::vector<double> ttft, itl, tpot, e2e, stream_rate;
  for (const RequestResult& q : results) {
    if (!q.ok) {
      r.failed++;
      r.errors[q.error_code]++;
      if (r.first_error_message.empty()) r.first_error_message = q.error_message;
      continue;
    }
    r.succeeded++;
    if (q.completion_tokens < 0) r.requests_without_usage++;
    if (q.prompt_tokens > 0) r.prompt_tokens += q.prompt_tokens;
    const int64_t out = q.output_tokens();
    r.output_tokens += out;
    if (out < q.max_tokens) r.short_outputs++;
    e2e.push_back(q.e2e_ms);
    if (q.arrival_ms.empty()) continue;
    ttft.push_back(q.ttft_ms());
    for (size_t i = 1; i < q.arrival_ms.size(); ++i) {
      const int n = std::max(1, q.arrival_tokens[i]);
      const double gap = (q.arrival_ms[i] - q.arrival_ms[i - 1]) / n;
      for (int k = 0; k < n; ++k) itl.push_back(gap);
    }
    const double decode_ms = q.e2e_ms - q.ttft_ms();
    if (out > 1 && decode_ms > 0) {
      const double per_token = decode_ms / static_cast<double>(out - 1);
      tpot.push_back(per_token);
      stream_rate.push_back(1000.0 / per_token);
    }
  }
  if (duration_s > 0) {
    r.output_tokens_per_s = static_cast<double>(r.output_tokens) / duration_s;
    r.total_tokens_per_s = static_cast<double>(r.prompt_tokens + r.output_tokens) / duration_s;
    r.requests_per_s = static_cast<double>(r.succeeded) / duration_s;
  }
  r.ttft_ms = summarize(std::move(ttft));
  r.itl_ms = summarize(std::move(itl));
  r.tpot_ms = summarize(std::move(tpot));
  r.e2e_ms = summarize(std::move(e2e));
  r.stream_tokens_per_s = summarize(std::move(stream_rate));
  r.results = std::move(results);
  return r;
}

}  // namespace tandem::client::bench
