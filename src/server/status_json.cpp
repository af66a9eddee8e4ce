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

nlohmann::json status_json(const EngineStats& s, const ServerContext& ctx) {
  const HostTelemetry host = read_host_telemetry();
  return {
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
      {"draining", s.draining || ctx.draining.load()},
      {"connections", {{"open", ctx.counters.open_connections.load()}, {"websockets", ctx.counters.open_websockets.load()}}},
      {"host",
       {{"load_average", {host.load_average[0], host.load_average[1], host.load_average[2]}},
        {"process_rss_bytes", host.process_rss_bytes},
        {"cpu_count", host.cpu_count}}},
  };
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
