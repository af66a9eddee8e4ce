// The heart of `tandem ui`: one long-lived WebSocket (with zstd) to each
// backend, reconnecting with backoff, and browser requests multiplexed over
// them. A browser's request id is rewritten to a bridge-wide unique id on the
// way out ("b17"), so two browsers that both say "r1" never collide, and back
// on the way in. New generates go to the healthy backend with the least load
// (its status, polled every poll_interval, plus the bridge's own in-flight
// count); a `conversation` string keeps a conversation on one backend while
// that backend stays healthy. When a backend goes away its requests in flight
// end with an error event (code "backend_unavailable") and new ones go to the
// others; a request a backend refuses before its first token because it is
// shutting down, overloaded or loading is sent to another backend instead.
// Everything runs on one single-threaded io_context.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "client/net/asio.h"
#include "client/net/url.h"
#include "client/net/ws_client.h"
#include "client/status/backend_probe.h"
#include "client/ui/routing.h"

namespace tandem::client::ui {

namespace asio = net::asio;

struct BridgeOptions {
  std::vector<net::BackendUrl> backends;
  std::string api_key;  // sent to the backends (WebSocket init and /v1/status)
  std::chrono::milliseconds poll_interval{1000};
  std::string version;  // reported as server_version
};

// What the bridge needs from a browser connection.
class BrowserSink {
 public:
  virtual ~BrowserSink() = default;
  // An event for this browser, its id already mapped back.
  virtual void deliver(const nlohmann::json& event) = 0;
};

class Bridge {
 public:
  Bridge(asio::any_io_executor executor, BridgeOptions options);
  ~Bridge();
  Bridge(const Bridge&) = delete;
  Bridge& operator=(const Bridge&) = delete;

  // Starts the backend links and the status poller.
  void start();

  // A browser's generate. Returns an error event to send back to it, or
  // nullopt when the request went to a backend.
  std::optional<nlohmann::json> generate(const std::shared_ptr<BrowserSink>& from, const nlohmann::json& command);
  // A browser's cancel: nullopt when forwarded, else an unknown_id error.
  std::optional<nlohmann::json> cancel(BrowserSink* from, const std::string& id);
  // A browser went away: its running requests are cancelled on the backends.
  void forget(BrowserSink* from);

  nlohmann::json status() const;        // the aggregate (aggregate_status.h)
  nlohmann::json ready_event() const;   // the answer to a browser's init (without compression)
  nlohmann::json models_event() const;  // {"event":"models","data":[...]} over linked backends
  // A backend that is linked serves `model` (always true while none is linked).
  bool serves(const std::string& model) const;
  bool any_healthy() const;

  void browser_opened() { ++browsers_; }
  void browser_closed() { --browsers_; }
  void connection_opened() { ++connections_; }
  void connection_closed() { --connections_; }

 private:
  struct Backend {
    net::BackendUrl url;
    std::unique_ptr<net::WsClient> ws;
    std::unique_ptr<asio::steady_timer> backoff;
    std::string link = "connecting";  // "connecting", "ready", "down"
    std::string reason;               // why it is down
    std::string model;
    int64_t context_size = 0;
    int in_flight = 0;
    int in_flight_at_poll = 0;
    std::optional<status::BackendReport> report;
  };
  struct Route {
    std::weak_ptr<BrowserSink> sink;
    BrowserSink* owner = nullptr;
    std::string browser_id;
    size_t backend = 0;
    nlohmann::json command;  // as forwarded, for a retry elsewhere
    std::string model;       // the model it asked for ("" = any)
    bool streaming = false;  // a token came: too late to retry elsewhere
    size_t attempts = 1;
  };

  asio::awaitable<void> keep_linked(size_t index);
  asio::awaitable<void> poll_forever();
  void on_backend_event(size_t index, nlohmann::json event);
  void fail_backend_requests(size_t index, const std::string& reason);
  // A backend refused a request before its first token (shutting_down,
  // overloaded, loading): true when it went to another backend instead.
  bool retry_elsewhere(const std::string& backend_id, size_t refused_by);
  void end_route(const std::string& backend_id);
  bool healthy(const Backend& b) const;
  std::vector<RouteCandidate> candidates() const;
  std::string unavailable_message() const;

  asio::any_io_executor executor_;
  BridgeOptions options_;
  std::vector<Backend> backends_;
  std::map<std::string, Route> routes_;                                  // backend-side id -> route
  std::map<std::pair<BrowserSink*, std::string>, std::string> by_browser_;  // (browser, its id) -> backend-side id
  StickyConversations conversations_;
  asio::steady_timer poll_timer_;
  uint64_t next_id_ = 0;
  int browsers_ = 0;
  int connections_ = 0;
  bool stopping_ = false;
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
};

}  // namespace tandem::client::ui
