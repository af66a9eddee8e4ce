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

// A Prometheus label value: backslash, double quote and newline escaped.
std::string label_value(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

template <class T, class Field>
void gpu_gauge(std::string& out, const std::vector<telemetry::GpuSample>& gpus, const char* name, const char* help,
               Field field) {
  out += fmt::format("# HELP {} {}\n# TYPE {} gauge\n", name, help, name);
  for (const telemetry::GpuSample& g : gpus) {
    const std::optional<T>& v = g.*field;
    if (v) out += fmt::format("{}{{gpu=\"{}\"}} {}\n", name, g.index, *v);
  }
}

void http_responses(std::string& out, const ServerContext& ctx) {
  out += "# HELP tandem_http_responses_total HTTP responses by status code.\n";
  out += "# TYPE tandem_http_responses_total counter\n";
  for (const auto& [code, n] : ctx.counters.responses())
    out += fmt::format("tandem_http_responses_total{{code=\"{}\"}} {}\n", code, n);
}

// Load progress, GPUs, connections, drain and uptime: in both states.
void common_tail(std::string& out, const ServerContext& ctx, bool draining) {
  const bool loading = !ctx.ready.load(std::memory_order_acquire);
  metric(out, "tandem_loading", "gauge", "1 while the model loads.", loading ? 1.0 : 0.0);
  metric(out, "tandem_load_bytes_done", "gauge", "Bytes of weights loaded so far.",
         static_cast<double>(ctx.loading.bytes_done.load()));
  metric(out, "tandem_load_bytes_total", "gauge", "Bytes of weights to load.",
         static_cast<double>(ctx.loading.bytes_total.load()));
  if (ctx.gpus != nullptr) out += render_gpu_metrics(ctx.gpus->sample());
  metric(out, "tandem_open_connections", "gauge", "Open TCP connections.",
         static_cast<double>(ctx.counters.open_connections.load()));
  metric(out, "tandem_open_websockets", "gauge", "Open WebSocket sessions.",
         static_cast<double>(ctx.counters.open_websockets.load()));
  metric(out, "tandem_draining", "gauge", "1 while draining for shutdown.", draining ? 1.0 : 0.0);
  metric(out, "tandem_uptime_seconds", "gauge", "Seconds since the server started.", ctx.uptime_s());
}

}  // namespace

std::string render_gpu_metrics(const std::vector<telemetry::GpuSample>& gpus) {
  using telemetry::GpuSample;
  if (gpus.empty()) return {};
  std::string out;
  out += "# HELP tandem_gpu_info GPU present (value 1), with its name.\n# TYPE tandem_gpu_info gauge\n";
  for (const GpuSample& g : gpus)
    out += fmt::format("tandem_gpu_info{{gpu=\"{}\",name=\"{}\"}} 1\n", g.index, label_value(g.name));
  gpu_gauge<uint64_t>(out, gpus, "tandem_gpu_memory_used_bytes", "Device memory in use.", &GpuSample::memory_used_bytes);
  gpu_gauge<uint64_t>(out, gpus, "tandem_gpu_memory_free_bytes", "Device memory free.", &GpuSample::memory_free_bytes);
  gpu_gauge<uint64_t>(out, gpus, "tandem_gpu_memory_total_bytes", "Device memory in all.",
                      &GpuSample::memory_total_bytes);
  gpu_gauge<double>(out, gpus, "tandem_gpu_temperature_celsius", "GPU die temperature.", &GpuSample::temperature_c);
  gpu_gauge<double>(out, gpus, "tandem_gpu_power_watts", "Power draw.", &GpuSample::power_w);
  gpu_gauge<double>(out, gpus, "tandem_gpu_power_limit_watts", "Enforced power limit.", &GpuSample::power_limit_w);
  gpu_gauge<double>(out, gpus, "tandem_gpu_utilization_percent", "Percent of the last sample period a kernel ran.",
                    &GpuSample::utilization_gpu_percent);
  gpu_gauge<double>(out, gpus, "tandem_gpu_memory_utilization_percent",
                    "Percent of the last sample period device memory was read or written.",
                    &GpuSample::utilization_memory_percent);
  gpu_gauge<double>(out, gpus, "tandem_gpu_sm_clock_mhz", "SM clock.", &GpuSample::sm_clock_mhz);
  gpu_gauge<double>(out, gpus, "tandem_gpu_memory_clock_mhz", "Memory clock.", &GpuSample::mem_clock_mhz);
  return out;
}

std::string render_loading_metrics(const ServerContext& ctx) {
  std::string out;
  http_responses(out, ctx);
  common_tail(out, ctx, ctx.draining.load());
  return out;
}

std::string render_metrics(const EngineStats& s, const ServerContext& ctx) {
  std::string out;
  out += "# HELP tandem_requests_total Generation requests by how they ended (rejected: refused at submit).\n";
  out += "# TYPE tandem_requests_total counter\n";
  const std::pair<const char*, uint64_t> by_status[] = {
      {"stop", s.requests_finished_stop}, {"length", s.requests_finished_length}, {"cancelled", s.requests_cancelled},
      {"timeout", s.requests_timeout},    {"error", s.requests_error},            {"rejected", s.requests_rejected}};
  for (const auto& [status, n] : by_status) out += fmt::format("tandem_requests_total{{status=\"{}\"}} {}\n", status, n);
  http_responses(out, ctx);
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
  common_tail(out, ctx, s.draining || ctx.draining);
  return out;
}

}  // namespace tandem::server
