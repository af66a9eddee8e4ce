#include "server/status_json.h"

#include <unistd.h>

#include <fstream>
#include <thread>

namespace tandem::server {

HostTelemetry read_host_telemetry() {
  HostTelemetry t;
  std::ifstream load("/proc/loadavg");
  if (load) load >> t.load_average[0] >> t.load_average[1] >> t.load_average[2];
  std::ifstream statm("/proc/self/statm");
  uint64_t size_pages = 0, rss_pages = 0;
  if (statm >> size_pages >> rss_pages) {
    const long page = sysconf(_SC_PAGESIZE);
    t.process_rss_bytes = rss_pages * static_cast<uint64_t>(page > 0 ? page : 4096);
  }
  t.cpu_count = std::thread::hardware_concurrency();
  return t;
}

namespace {

nlohmann::json host_json() {
  const HostTelemetry host = read_host_telemetry();
  return {{"load_average", {host.load_average[0], host.load_average[1], host.load_average[2]}},
          {"process_rss_bytes", host.process_rss_bytes},
          {"cpu_count", host.cpu_count}};
}

template <class T>
nlohmann::json or_null(const std::optional<T>& v) {
  return v ? nlohmann::json(*v) : nlohmann::json(nullptr);
}

// Adds "gpus" when there are GPU readings; without NVML the key is absent.
void add_gpus(nlohmann::json& j, const ServerContext& ctx) {
  if (ctx.gpus == nullptr) return;
  const std::vector<telemetry::GpuSample> gpus = ctx.gpus->sample();
  if (!gpus.empty()) j["gpus"] = gpus_json(gpus);
}

}  // namespace

nlohmann::json gpus_json(const std::vector<telemetry::GpuSample>& gpus) {
  nlohmann::json out = nlohmann::json::array();
  for (const telemetry::GpuSample& g : gpus)
    out.push_back({{"index", g.index},
                   {"name", g.name},
                   {"memory_used_bytes", or_null(g.memory_used_bytes)},
                   {"memory_total_bytes", or_null(g.memory_total_bytes)},
                   {"memory_free_bytes", or_null(g.memory_free_bytes)},
                   {"temperature_c", or_null(g.temperature_c)},
                   {"power_w", or_null(g.power_w)},
                   {"power_limit_w", or_null(g.power_limit_w)},
                   {"utilization_gpu_percent", or_null(g.utilization_gpu_percent)},
                   {"utilization_memory_percent", or_null(g.utilization_memory_percent)},
                   {"sm_clock_mhz", or_null(g.sm_clock_mhz)},
                   {"mem_clock_mhz", or_null(g.mem_clock_mhz)}});
  return out;
}

nlohmann::json load_progress_json(const LoadProgress& progress) {
  return {{"bytes_done", progress.bytes_done.load()}, {"bytes_total", progress.bytes_total.load()}};
}

nlohmann::json loading_status_json(const ServerContext& ctx) {
  nlohmann::json j = {
      {"state", "loading"},
      {"server_version", ctx.version},
      {"model", {{"path", ctx.config.model_path}}},
      {"progress", load_progress_json(ctx.loading)},
      {"uptime_s", ctx.uptime_s()},
      {"draining", ctx.draining.load()},
      {"connections", {{"open", ctx.counters.open_connections.load()}, {"websockets", ctx.counters.open_websockets.load()}}},
      {"host", host_json()},
  };
  add_gpus(j, ctx);
  return j;
}

nlohmann::json status_json(const EngineStats& s, const ServerContext& ctx) {
  const bool draining = s.draining || ctx.draining.load();
  nlohmann::json j = {
      {"state", draining ? "draining" : "ok"},
      {"server_version", ctx.version},
      {"model", {{"id", ctx.model.id}, {"path", ctx.model.path}}},
      {"context_window", s.context_window},
      {"batch", {{"running", s.running}, {"batch_size", s.batch_size}}},
      {"queue", {{"queued", s.queued}, {"max_queued_requests", ctx.config.max_queued_requests}}},
      {"kv_cache",
       {{"blocks_used", s.kv_blocks_used},
        {"blocks_total", s.kv_blocks_total},
        {"block_size", s.block_size},
        {"usage", s.kv_blocks_total > 0 ? static_cast<double>(s.kv_blocks_used) / static_cast<double>(s.kv_blocks_total)
                                        : 0.0}}},
      {"tokens", {{"prompt_total", s.prompt_tokens_total}, {"generated_total", s.generation_tokens_total}}},
      {"uptime_s", ctx.uptime_s()},
      {"draining", draining},
      {"connections", {{"open", ctx.counters.open_connections.load()}, {"websockets", ctx.counters.open_websockets.load()}}},
      {"host", host_json()},
  };
  add_gpus(j, ctx);
  return j;
}

nlohmann::json models_json(const ServedModel& model) {
  return {{"object", "list"},
          {"data", nlohmann::json::array({{{"id", model.id},
                                           {"object", "model"},
                                           {"created", model.created},
                                           {"owned_by", "tandem"},
                                           {"context_window", model.context_window}}})}};
}

}  // namespace tandem::server
