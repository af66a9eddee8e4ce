#include "server/metrics_text.h"

#include <fmt/format.h>

namespace tandem::server {
namespace {

void metric(std::string& out, const char* name, const char* type, const char* help, double value) {
  out += fmt::format("# HELP {} {}\n# TYPE {} {}\n{} {}\n", name, help, name, type, name, value);
}

void histogram(std::string& out, const char* name, const char* help, const Histogram& h) {
  out += fmt::format("# HELP {} {}\n# TYPE {} histogram\n", name, help, name);
  // Engine histograms count per bucket cumulatively already (see Histogram).
  for (size_t i = 0; i < h.bounds.size() && i < h.counts.size(); ++i)
    out += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", name, h.bounds[i], h.counts[i]);
  out += fmt::format("{}_bucket{{le=\"+Inf\"}} {}\n", name, h.total);
  out += fmt::format("{}_sum {}\n{}_count {}\n", name, h.sum, name, h.total);
}

}  // namespace

std::string render_metrics(const EngineStats& s, const ServerContext& ctx) {
  std::string out;
  out += "# HELP tandem_requests_total Generation requests by how they ended (rejected: refused at submit).\n";
  out += "# TYPE tandem_requests_total counter\n";
  const std::pair<const char*, uint64_t> by_status[] = {
      {"stop", s.requests_finished_stop}, {"length", s.requests_finished_length}, {"cancelled", s.requests_cancelled},
      {"timeout", s.requests_timeout},    {"error", s.requests_error},            {"rejected", s.requests_rejected}};
  for (const auto& [status, n] : by_status) out += fmt::format("tandem_requests_total{{status=\"{}\"}} {}\n", status, n);
  out += "# HELP tandem_http_responses_total HTTP responses by status code.\n";
  out += "# TYPE tandem_http_responses_total counter\n";
  for (const auto& [code, n] : ctx.counters.responses())
    out += fmt::format("tandem_http_responses_total{{code=\"{}\"}} {}\n", code, n);
  metric(out, "tandem_queue_depth", "gauge", "Requests waiting for a batch slot.", static_cast<double>(s.queued));
  metric(out, "tandem_running_sequences", "gauge", "Sequences in the running batch.", static_cast<double>(s.running));
  metric(out, "tandem_batch_size", "gauge", "Running sequences at most.", static_cast<double>(s.batch_size));
  metric(out, "tandem_kv_blocks_used", "gauge", "KV-cache blocks in use.", static_cast<double>(s.kv_blocks_used));
  metric(out, "tandem_kv_blocks_total", "gauge", "KV-cache blocks in all.", static_cast<double>(s.kv_blocks_total));
  metric(out, "tandem_kv_usage_ratio", "gauge", "Fraction of KV-cache blocks in use.",
         s.kv_blocks_total > 0 ? static_cast<double>(s.kv_blocks_used) / static_cast<double>(s.kv_blocks_total) : 0.0);
  metric(out, "tandem_prompt_tokens_total", "counter", "Prompt tokens prefilled.",
         static_cast<double>(s.prompt_tokens_total));
  metric(out, "tandem_generation_tokens_total", "counter", "Tokens generated.",
         static_cast<double>(s.generation_tokens_total));
  metric(out, "tandem_preemptions_total", "counter", "Sequences preempted for KV space.",
         static_cast<double>(s.preemptions_total));
  metric(out, "tandem_engine_steps_total", "counter", "Engine steps run.", static_cast<double>(s.steps_total));
  metric(out, "tandem_engine_step_seconds_total", "counter", "Seconds inside model forward passes.",
         s.step_seconds_total);
  histogram(out, "tandem_time_to_first_token_seconds", "Submit to first token.", s.ttft_seconds);
  histogram(out, "tandem_inter_token_seconds", "Time between tokens of one stream.", s.inter_token_seconds);
  histogram(out, "tandem_e2e_request_seconds", "Submit to the end of the stream.", s.e2e_seconds);
  metric(out, "tandem_open_connections", "gauge", "Open TCP connections.",
         static_cast<double>(ctx.counters.open_connections.load()));
  metric(out, "tandem_open_websockets", "gauge", "Open WebSocket sessions.",
         static_cast<double>(ctx.counters.open_websockets.load()));
  metric(out, "tandem_draining", "gauge", "1 while draining for shutdown.", s.draining || ctx.draining ? 1.0 : 0.0);
  metric(out, "tandem_uptime_seconds", "gauge", "Seconds since the server started.", ctx.uptime_s());
  return out;
}

}  // namespace tandem::server
