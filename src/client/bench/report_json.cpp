#include "client/bench/report_json.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <stdexcept>

namespace tandem::client::bench {
namespace {

using nlohmann::json;

// Microsecond resolution is all a steady-clock millisecond figure carries;
// rounding keeps the file small and readable.
double round3(double v) { return std::round(v * 1000.0) / 1000.0; }
// Microseconds: a short level's duration to 3 decimals (1 ms) was up to 1%
// off the time its tok/s were computed from.
double round6(double v) { return std::round(v * 1e6) / 1e6; }

}  // namespace

json summary_json(const Summary& s) {
  return {{"count", s.count}, {"mean", round3(s.mean)}, {"min", round3(s.min)}, {"p50", round3(s.p50)},
          {"p90", round3(s.p90)}, {"p99", round3(s.p99)}, {"max", round3(s.max)}};
}

json request_json(const RequestResult& r) {
  json j = {{"index", r.index},
            {"ok", r.ok},
            {"prompt_tokens_target", r.prompt_tokens_target},
            {"max_tokens", r.max_tokens},
            {"start_ms", round3(r.start_ms)},
            {"e2e_ms", round3(r.e2e_ms)},
            {"ttft_ms", r.arrival_ms.empty() ? json(nullptr) : json(round3(r.ttft_ms()))},
            {"prompt_tokens", r.prompt_tokens >= 0 ? json(r.prompt_tokens) : json(nullptr)},
            {"completion_tokens", r.completion_tokens >= 0 ? json(r.completion_tokens) : json(nullptr)},
            {"finish_reason", r.finish_reason}};
  json arrivals = json::array();
  for (double t : r.arrival_ms) arrivals.push_back(round3(t));
  j["arrival_ms"] = std::move(arrivals);
  j["arrival_tokens"] = r.arrival_tokens;
  if (!r.ok) j["error"] = {{"code", r.error_code}, {"message", r.error_message}};
  return j;
}

json level_json(const LevelReport& l) {
  json j = {{"concurrency", l.concurrency},
            {"duration_s", round6(l.duration_s)},
            {"requests", l.requests},
            {"interrupted", l.interrupted},
            {"succeeded", l.succeeded},
            {"failed", l.failed},
            {"errors", l.errors},
            {"prompt_tokens", l.prompt_tokens},
            {"output_tokens", l.output_tokens},
            {"requests_without_usage", l.requests_without_usage},
            {"short_outputs", l.short_outputs},
            {"output_tokens_per_s", round3(l.output_tokens_per_s)},
            {"total_tokens_per_s", round3(l.total_tokens_per_s)},
            {"requests_per_s", round3(l.requests_per_s)},
            {"ttft_ms", summary_json(l.ttft_ms)},
            {"itl_ms", summary_json(l.itl_ms)},
            {"tpot_ms", summary_json(l.tpot_ms)},
            {"e2e_ms", summary_json(l.e2e_ms)},
            {"stream_tokens_per_s", summary_json(l.stream_tokens_per_s)}};
  json raw = json::array();
  for (const RequestResult& r : l.results) raw.push_back(request_json(r));
  j["raw"] = std::move(raw);
  return j;
}

json bench_run_json(const BenchRun& run) {
  const BenchOptions& o = run.options;
  json config = {{"backend", run.url.text()},
                 {"api", api_name(o.api)},
                 {"model", run.model},
                 {"requests_per_level", o.requests},
                 {"concurrency", o.concurrency},
                 {"prompt_tokens", {{"min", o.prompt_tokens.min}, {"max", o.prompt_tokens.max}}},
                 {"max_tokens", {{"min", o.max_tokens.min}, {"max", o.max_tokens.max}}},
                 {"seed", o.seed},
                 {"ignore_eos", o.ignore_eos},
                 {"temperature", o.temperature},
                 {"warmup", o.warmup},
                 {"zstd", o.zstd},
                 {"timeout_s", o.timeout_s}};
  json j = {{"tool", "tandem bench"},
            {"started_at", run.started_at},
            {"config", std::move(config)},
            {"server", {{"model", run.model},
                        {"version", run.server_version.empty() ? json(nullptr) : json(run.server_version)},
                        {"context_size", run.context_size > 0 ? json(run.context_size) : json(nullptr)}}},
            {"prompt_sizing", {{"method", run.prompt_sizing},
                               {"tokens_per_word", round3(run.token_model.tokens_per_word)},
                               {"fixed_tokens", round3(run.token_model.fixed_tokens)}}}};
  json levels = json::array();
  for (const LevelReport& l : run.levels) levels.push_back(level_json(l));
  j["levels"] = std::move(levels);
  return j;
}

void write_text_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw std::runtime_error("cannot write " + path + ": " + std::strerror(errno));
  out << text;
  out.close();
  if (!out) throw std::runtime_error("cannot write " + path + ": " + std::strerror(errno));
}

}  // namespace tandem::client::bench
