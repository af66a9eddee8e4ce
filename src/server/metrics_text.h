// GET /metrics: Prometheus text exposition (format 0.0.4) of the engine's
// counters, gauges and histograms, and the HTTP layer's counters.
#pragma once

#include <string>

#include "scheduler/engine_service.h"
#include "server/server_context.h"

namespace tandem::server {

std::string render_metrics(const EngineStats& stats, const ServerContext& ctx);

}  // namespace tandem::server
