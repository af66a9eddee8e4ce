// `tandem status` output: a few readable lines per backend, or JSON.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "client/status/backend_probe.h"

namespace tandem::client::status {

// Generated tokens per second between two reports of the same backend
// (nullopt when either lacks the counters, or the server restarted between them).
std::optional<double> live_tokens_per_s(const BackendReport& earlier, const BackendReport& later);

// The human view of one backend. `live_tps`, when known, is the rate over
// the last interval (--watch); otherwise the average since start is shown.
std::string render_backend(const BackendReport& report, std::optional<double> live_tps);

// {"url", "state", "reason"?, "latency_ms", "tokens_per_s"?, "status"}.
nlohmann::json report_json(const BackendReport& report, std::optional<double> live_tps);

// Plain-unit helpers, exposed for tests: "1h 02m", "76.3 MiB".
std::string format_duration(double seconds);
std::string format_bytes(double bytes);

}  // namespace tandem::client::status
