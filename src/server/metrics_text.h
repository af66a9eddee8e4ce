// GET /metrics: Prometheus text exposition (format 0.0.4) of the engine's
// counters, gauges and histograms, the HTTP layer's counters, load progress
// and GPU telemetry.
#pragma once

#include <string>

#include "scheduler/engine_service.h"
#include "server/server_context.h"
#include "telemetry/gpu_telemetry.h"

namespace tandem::server {

// Once the model is ready.
std::string render_metrics(const EngineStats& stats, const ServerContext& ctx);
// While the model loads: what needs no engine (loading, HTTP, GPUs, uptime).
std::string render_loading_metrics(const ServerContext& ctx);
// Gauges per GPU, labelled gpu="<index>"; a reading a device lacks has no
// sample. Empty for no GPUs.
std::string render_gpu_metrics(const std::vector<telemetry::GpuSample>& gpus);

}  // namespace tandem::server
