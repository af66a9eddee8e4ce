// GET /v1/status and the WebSocket "status" event: state, model, batch
// occupancy, queue, KV usage, uptime, host telemetry and GPU telemetry.
#pragma once

#include <nlohmann/json.hpp>

#include "scheduler/engine_service.h"
#include "server/server_context.h"
#include "telemetry/gpu_telemetry.h"

namespace tandem::server {

struct HostTelemetry {
  double load_average[3] = {0, 0, 0};
  uint64_t process_rss_bytes = 0;
  unsigned cpu_count = 0;
};

// Reads /proc; fields it cannot read stay 0.
HostTelemetry read_host_telemetry();

// Once the model is ready: "state" is "ok" or "draining".
nlohmann::json status_json(const EngineStats& stats, const ServerContext& ctx);
// While the model loads: "state":"loading", "progress", and what needs no
// engine (version, uptime, connections, host, gpus).
nlohmann::json loading_status_json(const ServerContext& ctx);
// {"bytes_done", "bytes_total"} of the weights being loaded.
nlohmann::json load_progress_json(const LoadProgress& progress);
// One object per GPU (docs/SERVER.md); readings a device lacks are null.
nlohmann::json gpus_json(const std::vector<telemetry::GpuSample>& gpus);
// GET /v1/models body.
nlohmann::json models_json(const ServedModel& model);

}  // namespace tandem::server
