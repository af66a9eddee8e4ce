// State every connection of one server shares: the model, the settings, the
// logger, counters for /metrics, load progress, GPU telemetry, and the drain
// flag.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "common/load_progress.h"
#include "server/served_model.h"
#include "server/server_config.h"
#include "telemetry/gpu_telemetry.h"

namespace spdlog {
class logger;
}

namespace tandem::server {

// HTTP responses by status code, and WebSocket connections.
class ServerCounters {
 public:
  void count_response(int status) {
    std::lock_guard<std::mutex> lock(mutex_);
    ++responses_[status];
  }
  std::map<int, uint64_t> responses() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return responses_;
  }
  std::atomic<int64_t> open_connections{0};
  std::atomic<int64_t> open_websockets{0};
  std::atomic<int64_t> active_generations{0};  // HTTP requests and WS ids with a stream running
  std::atomic<int64_t> ws_unsent{0};  // WebSocket messages queued but not yet written (a drain waits for them)

 private:
  mutable std::mutex mutex_;
  std::map<int, uint64_t> responses_;
};

struct ServerContext {
  ServedModel model;
  ServerConfig config;
  std::shared_ptr<spdlog::logger> log;
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
  // False while the model loads: the server already answers (/health 503
  // "loading", other routes 503) so that supervisors see it come up. The
  // loader fills `model`, then sets ready (release); readers check ready
  // (acquire) before they touch `model`.
  std::atomic<bool> ready{false};
  LoadProgress loading;  // bytes of weights loaded; /health and /v1/status report it while loading
  // GPU readings for /metrics and status (NVML, cached); null or unavailable
  // when there is no NVML, and then they carry no GPU fields.
  std::unique_ptr<telemetry::GpuTelemetry> gpus;
  std::atomic<bool> draining{false};
  ServerCounters counters;
  std::string version;

  // Limits of the HTTP layer.
  size_t body_limit = size_t{4} << 20;  // bytes; more is 413
  size_t header_limit = size_t{16} << 10;
  std::chrono::seconds header_timeout{10};  // whole header must arrive within this (slow-loris)
  std::chrono::seconds body_timeout{30};
  std::chrono::seconds write_timeout{30};  // a client that stops reading is dropped
  size_t ws_message_limit = size_t{4} << 20;
  size_t ws_compress_threshold = 512;  // bytes; see docs/PROTOCOL.md

  double uptime_s() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  }
};

}  // namespace tandem::server
