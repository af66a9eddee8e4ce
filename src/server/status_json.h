// GET /v1/status and the WebSocket "status" event: model, batch occupancy,
// queue, KV usage, uptime, and host telemetry.
#pragma once

#include <nlohmann/json.hpp>

#include "scheduler/engine_service.h"
#include "server/server_context.h"

namespace tandem::server {

struct HostTelemetry {
  double load_average[3] = {0, 0, 0};
  uint64_t process_rss_bytes = 0;
  unsigned cpu_count = 0;
};

// Reads /proc; fields it cannot read stay 0.
HostTelemetry read_host_telemetry();

nlohmann::json status_json(const EngineStats& stats, const ServerContext& ctx);
// GET /v1/models body.
nlohmann::json models_json(const ServedModel& model);

}  // namespace tandem::server
