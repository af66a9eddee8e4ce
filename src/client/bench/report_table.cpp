#include "client/bench/report_table.h"

#include <algorithm>
#include <cstdarg>
#include <cstdio>

namespace tandem::client::bench {
namespace {

std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string format(const char* fmt, ...) {
  char buf[512];
  va_list args;
  va_start(args, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, args);
  va_end(args);
  return buf;
}

// `text` centred in `width` columns, with a rule of dashes either side.
std::string group_label(const std::string& text, size_t width) {
  if (text.size() + 2 >= width) return std::string(width - std::min(width, text.size()), ' ') + text;
  const size_t left = (width - text.size() - 2) / 2;
  const size_t right = width - text.size() - 2 - left;
  return std::string(left, '-') + " " + text + " " + std::string(right, '-');
}

std::string range_text(const LengthRange& r) {
  return r.fixed() ? std::to_string(r.min) : std::to_string(r.min) + "-" + std::to_string(r.max) + " (uniform)";
}

}  // namespace

std::string format_run_header(const BenchRun& run) {
  const BenchOptions& o = run.options;
  std::string s = "tandem bench: " + run.url.text() + " (api " + api_name(o.api) + "), model " + run.model;
  if (!run.server_version.empty()) s += ", server " + run.server_version;
  s += "\n";
  s += "workload: " + std::to_string(o.requests) + " requests per level, prompt " + range_text(o.prompt_tokens) +
       " tokens, output " + range_text(o.max_tokens) + " tokens" + (o.ignore_eos ? " (ignore_eos)" : "") +
       ", temperature " + format("%g", o.temperature) + ", seed " + std::to_string(o.seed) + "\n";
  s += "prompt sizing: " + run.prompt_sizing +
       format(" (%.3f tokens per word + %.1f)", run.token_model.tokens_per_word, run.token_model.fixed_tokens) + "\n";
  return s;
}

std::string format_level_table(const BenchRun& run) {
  std::string s;
  s += format("%6s %9s %10s %10s %10s %7s ", "", "", "", "", "", "") + group_label("stream tok/s", 17) + " " +
       group_label("TTFT ms", 35) + " " + group_label("ITL ms", 26) + "\n";
  s += format("%6s %9s %10s %10s %10s %7s %8s %8s %8s %8s %8s %8s %8s %8s %8s\n", "conc", "ok/req", "in tok",
              "out tok/s", "all tok/s", "req/s", "mean", "p50", "mean", "p50", "p90", "p99", "mean", "p50", "p99");
  for (const LevelReport& l : run.levels) {
    const std::string ok = std::to_string(l.succeeded) + "/" + std::to_string(l.requests);
    const double mean_prompt = l.succeeded ? static_cast<double>(l.prompt_tokens) / static_cast<double>(l.succeeded) : 0;
    s += format("%6d %9s %10.1f %10.1f %10.1f %7.2f %8.1f %8.1f %8.1f %8.1f %8.1f %8.1f %8.2f %8.2f %8.2f\n",
                l.concurrency, ok.c_str(), mean_prompt, l.output_tokens_per_s, l.total_tokens_per_s, l.requests_per_s,
                l.stream_tokens_per_s.mean,
                l.stream_tokens_per_s.p50, l.ttft_ms.mean, l.ttft_ms.p50, l.ttft_ms.p90, l.ttft_ms.p99, l.itl_ms.mean,
                l.itl_ms.p50, l.itl_ms.p99);
  }
  s += "(in tok: mean prompt tokens the server counted; out tok/s: generated tokens of all streams together;\n"
       " all tok/s: prompt and generated tokens together; stream tok/s: each stream's rate after its first\n"
       " token; ITL: time between token arrivals)\n";
  for (const LevelReport& l : run.levels) {
    if (l.failed == 0) continue;
    std::string codes;
    for (const auto& [code, n] : l.errors) codes += (codes.empty() ? "" : ", ") + code + " x" + std::to_string(n);
    s += format("concurrency %d: %zu of %zu requests failed: ", l.concurrency, l.failed, l.requests) + codes +
         " (e.g. \"" + l.first_error_message + "\")\n";
  }
  for (const LevelReport& l : run.levels)
    if (l.interrupted)
      s += format("concurrency %d: interrupted after %zu of %lld requests\n", l.concurrency, l.requests,
                  static_cast<long long>(run.options.requests));
  for (const LevelReport& l : run.levels)
    if (l.short_outputs > 0)
      s += format("concurrency %d: %zu requests produced fewer tokens than max_tokens (%s)\n", l.concurrency,
                  l.short_outputs,
                  run.options.ignore_eos ? "with ignore_eos: the server stopped them, e.g. at the end of its context"
                                         : "end of sequence or a stop string");
  for (const LevelReport& l : run.levels)
    if (l.requests_without_usage > 0)
      s += format("concurrency %d: %zu requests had no usage from the server; their output tokens were counted "
                  "from the stream\n",
                  l.concurrency, l.requests_without_usage);
  return s;
}

}  // namespace tandem::client::bench
