// The ui bridge's /v1/status: every backend's own status under "backends",
// and at the top level the same fields a single tandem-server reports
// (docs/PROTOCOL.md, status), summed over the backends that are up, so a
// dashboard written for one server works against the bridge unchanged.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace tandem::client::ui {

struct BackendSnapshot {
  std::string url;
  std::string state;   // "ok", "draining", "loading", "unreachable", "error", "connecting"
  std::string reason;  // when not ok
  int in_flight = 0;   // the bridge's requests on it now
  nlohmann::json status;  // its last /v1/status (null if never reached)
};

struct BridgeSnapshot {
  std::string version;
  double uptime_s = 0;
  int browsers = 0;        // open browser WebSockets
  int open_connections = 0;
};

nlohmann::json aggregate_status(const std::vector<BackendSnapshot>& backends, const BridgeSnapshot& bridge);

}  // namespace tandem::client::ui
