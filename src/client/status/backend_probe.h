// One look at a backend's health: GET /v1/status (docs/SERVER.md), turned
// into a state a person can read. Used by `tandem status` and by the `tandem
// ui` bridge's periodic polling.
#pragma once

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>

#include "client/net/asio.h"
#include "client/net/url.h"

namespace tandem::client::status {

struct BackendReport {
  std::string url;     // ws://HOST:PORT/ws
  std::string state;   // "ok", "draining", "loading", "unreachable", "error"
  std::string reason;  // why, for "unreachable" and "error"
  nlohmann::json status;  // the backend's /v1/status object (null when unreachable)
  double latency_ms = 0;  // how long the status request took
  std::chrono::steady_clock::time_point at;  // when it was taken

  // Up: serving requests now ("ok"); "draining" and "loading" are alive but not serving.
  bool up() const { return state == "ok"; }
  bool alive() const { return state == "ok" || state == "draining" || state == "loading"; }
};

// Never throws for network trouble: that becomes state "unreachable" with the
// reason in plain words. A 401 becomes "error" saying to pass --api-key.
net::asio::awaitable<BackendReport> probe_backend(net::BackendUrl url, std::string api_key,
                                                  std::chrono::milliseconds timeout);

}  // namespace tandem::client::status
