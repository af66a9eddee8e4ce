#include "client/ui/bridge.h"

#include <algorithm>
#include <cstdio>

#include "client/net/net_error.h"
#include "client/ui/aggregate_status.h"

namespace tandem::client::ui {

using nlohmann::json;

namespace {

constexpr size_t kMaxIdLength = 256;

json error_event(const json& id, const std::string& code, const std::string& message) {
  json e = {{"event", "error"}, {"code", code}, {"message", message}};
  if (!id.is_null()) e["id"] = id;
  return e;
}

}  // namespace

Bridge::Bridge(asio::any_io_executor executor, BridgeOptions options)
    : executor_(std::move(executor)), options_(std::move(options)), poll_timer_(executor_) {
  for (const net::BackendUrl& url : options_.backends) {
    Backend b;
    b.url = url;
    b.ws = std::make_unique<net::WsClient>(executor_);
    b.backoff = std::make_unique<asio::steady_timer>(executor_);
    backends_.push_back(std::move(b));
  }
}

Bridge::~Bridge() {
  stopping_ = true;
  poll_timer_.cancel();
  for (Backend& b : backends_) {
    b.backoff->cancel();
    b.ws->close();
  }
}

void Bridge::start() {
  for (size_t i = 0; i < backends_.size(); ++i) asio::co_spawn(executor_, keep_linked(i), asio::detached);
  asio::co_spawn(executor_, poll_forever(), asio::detached);
}

asio::awaitable<void> Bridge::keep_linked(size_t index) {
  auto backoff = std::chrono::milliseconds(500);
  while (!stopping_) {
    Backend& b = backends_[index];
    b.link = "connecting";
    std::string reason;
    try {
      net::InitOptions init;
      init.api_key = options_.api_key;
      json ready = co_await b.ws->connect(b.url, init, std::chrono::seconds(10));
      backoff = std::chrono::milliseconds(500);
      b.link = "ready";
      b.reason.clear();
      b.model = ready.value("model", "");
      b.context_size = ready.value("context_size", int64_t{0});
      std::fprintf(stderr, "tandem ui: linked to %s (model %s)\n", b.url.ws().c_str(), b.model.c_str());
      for (;;) {
        json event = co_await b.ws->read();
        on_backend_event(index, std::move(event));
      }
    } catch (const net::NetError& e) {
      reason = e.what();
    } catch (const std::exception& e) {
      reason = std::string("the backend sent something unreadable (") + e.what() + ")";
    }
    if (stopping_) co_return;
    Backend& down = backends_[index];
    down.ws->close();
    if (down.link == "ready" || down.reason != reason)
      std::fprintf(stderr, "tandem ui: %s is down: %s; retrying with backoff\n", down.url.ws().c_str(), reason.c_str());
    down.link = "down";
    down.reason = reason;
    fail_backend_requests(index, reason);
    down.backoff->expires_after(backoff);
    net::beast::error_code ec;
    co_await down.backoff->async_wait(net::use_ec(ec));
    backoff = std::min(backoff * 2, std::chrono::milliseconds(8000));
  }
}

asio::awaitable<void> Bridge::poll_forever() {
  while (!stopping_) {
    // Probes run one after another: each is bounded by its timeout, and a
    // handful of backends keeps the round well under the interval.
    for (size_t i = 0; i < backends_.size() && !stopping_; ++i) {
      const int in_flight = backends_[i].in_flight;
      const auto timeout = std::max(options_.poll_interval, std::chrono::milliseconds(1000));
      status::BackendReport r = co_await status::probe_backend(backends_[i].url, options_.api_key, timeout);
      if (stopping_) co_return;
      backends_[i].report = std::move(r);
      backends_[i].in_flight_at_poll = in_flight;
    }
    poll_timer_.expires_after(options_.poll_interval);
    net::beast::error_code ec;
    co_await poll_timer_.async_wait(net::use_ec(ec));
  }
}

bool Bridge::healthy(const Backend& b) const {
  if (b.link != "ready") return false;
  // The socket is the fresher signal; a report only vetoes draining/loading.
  return !b.report || b.report->state == "ok" || b.report->state == "unreachable" || b.report->state == "error";
}

std::vector<RouteCandidate> Bridge::candidates() const {
  std::vector<RouteCandidate> out;
  for (const Backend& b : backends_) {
    RouteCandidate c;
    c.healthy = healthy(b);
    c.model = b.model;
    c.own_in_flight = b.in_flight;
    double others = 0, capacity = 1;
    if (b.report && b.report->status.is_object()) {
      const json& s = b.report->status;
      auto num = [&](const char* a, const char* k) {
        return s.contains(a) && s[a].is_object() && s[a].contains(k) && s[a][k].is_number() ? s[a][k].get<double>() : 0.0;
      };
      others = std::max(0.0, num("batch", "running") + num("queue", "queued") - b.in_flight_at_poll);
      capacity = std::max(1.0, num("batch", "batch_size"));
    }
    c.load = (b.in_flight + others) / capacity;
    out.push_back(c);
  }
  return out;
}

std::string Bridge::unavailable_message() const {
  std::string m = "no backend is available to take the request";
  std::string parts;
  for (const Backend& b : backends_) {
    std::string why = b.link == "ready" ? (b.report ? b.report->state : "busy") : (b.reason.empty() ? b.link : b.reason);
    parts += (parts.empty() ? "" : "; ") + b.url.ws() + ": " + why;
  }
  return m + (parts.empty() ? "" : " (" + parts + ")");
}

std::optional<json> Bridge::generate(const std::shared_ptr<BrowserSink>& from, const json& command) {
  const json id = command.contains("id") ? command.at("id") : json(nullptr);
  if (!id.is_string() || id.get_ref<const std::string&>().empty() || id.get_ref<const std::string&>().size() > kMaxIdLength)
    return error_event(nullptr, "invalid_request", "generate needs a string 'id' of 1 to 256 characters");
  const std::string browser_id = id.get<std::string>();
  if (by_browser_.count({from.get(), browser_id}))
    return error_event(id, "duplicate_id", "a request with id '" + browser_id + "' is running");
  std::string conversation;
  if (command.contains("conversation") && !command.at("conversation").is_null()) {
    if (!command.at("conversation").is_string())
      return error_event(id, "invalid_request", "'conversation' must be a string");
    conversation = command.at("conversation").get<std::string>();
  }
  std::string model;
  if (command.contains("model") && command.at("model").is_string()) model = command.at("model").get<std::string>();
  const std::optional<size_t> chosen = conversations_.route(conversation, candidates(), model);
  if (!chosen) {
    if (!model.empty() && any_healthy())
      return error_event(id, "model_not_found", "no backend serves the model '" + model + "'");
    return error_event(id, "backend_unavailable", unavailable_message());
  }
  Backend& b = backends_[*chosen];
  const std::string backend_id = "b" + std::to_string(++next_id_);
  json forwarded = command;
  forwarded.erase("conversation");
  forwarded["id"] = backend_id;
  routes_[backend_id] = Route{from, from.get(), browser_id, *chosen, forwarded, model};
  by_browser_[{from.get(), browser_id}] = backend_id;
  ++b.in_flight;
  b.ws->send(forwarded);
  return std::nullopt;
}

std::optional<json> Bridge::cancel(BrowserSink* from, const std::string& id) {
  auto it = by_browser_.find({from, id});
  if (it == by_browser_.end()) return error_event(id, "unknown_id", "no running request has id '" + id + "'");
  const Route& route = routes_.at(it->second);
  backends_[route.backend].ws->send({{"command", "cancel"}, {"id", it->second}});
  return std::nullopt;  // the backend answers with done, finish_reason "cancelled"
}

void Bridge::forget(BrowserSink* from) {
  std::vector<std::string> ids;
  for (const auto& [key, backend_id] : by_browser_)
    if (key.first == from) ids.push_back(backend_id);
  for (const std::string& backend_id : ids) {
    const Route& route = routes_.at(backend_id);
    backends_[route.backend].ws->send({{"command", "cancel"}, {"id", backend_id}});
    end_route(backend_id);
  }
}

void Bridge::end_route(const std::string& backend_id) {
  auto it = routes_.find(backend_id);
  if (it == routes_.end()) return;
  Backend& b = backends_[it->second.backend];
  b.in_flight = std::max(0, b.in_flight - 1);
  by_browser_.erase({it->second.owner, it->second.browser_id});
  routes_.erase(it);
}

void Bridge::on_backend_event(size_t index, json event) {
  if (!event.contains("id") || !event["id"].is_string()) return;  // not about a request of ours
  auto it = routes_.find(event["id"].get<std::string>());
  if (it == routes_.end() || it->second.backend != index) return;  // ended already (cancelled, browser gone)
  const std::string kind = event.value("event", "");
  if (kind == "token") it->second.streaming = true;
  if (kind == "error") {
    const std::string code = event.value("code", "");
    if (code == "shutting_down" || code == "loading") {
      // Take it out of routing now rather than at the next poll.
      if (!backends_[index].report) backends_[index].report = status::BackendReport{};
      backends_[index].report->state = code == "loading" ? "loading" : "draining";
    }
    if ((code == "shutting_down" || code == "overloaded" || code == "loading") && retry_elsewhere(it->first, index)) {
      std::fprintf(stderr, "tandem ui: %s refused a request (%s); sent it to another backend\n",
                   backends_[index].url.ws().c_str(), code.c_str());
      return;
    }
  }
  event["id"] = it->second.browser_id;
  const bool last = kind == "done" || kind == "error";
  if (last) event["backend"] = backends_[index].url.ws();
  std::shared_ptr<BrowserSink> sink = it->second.sink.lock();
  if (last) end_route(it->first);
  if (sink) sink->deliver(event);
}

bool Bridge::retry_elsewhere(const std::string& backend_id, size_t refused_by) {
  auto it = routes_.find(backend_id);
  if (it == routes_.end() || it->second.streaming || it->second.attempts >= backends_.size()) return false;
  std::vector<RouteCandidate> c = candidates();
  c[refused_by].healthy = false;
  const std::optional<size_t> next = least_loaded(c, it->second.model);
  if (!next) return false;
  Route route = it->second;
  end_route(backend_id);
  const std::string new_id = "b" + std::to_string(++next_id_);
  route.backend = *next;
  route.attempts++;
  route.command["id"] = new_id;
  by_browser_[{route.owner, route.browser_id}] = new_id;
  ++backends_[*next].in_flight;
  backends_[*next].ws->send(route.command);
  routes_[new_id] = std::move(route);
  return true;
}

void Bridge::fail_backend_requests(size_t index, const std::string& reason) {
  std::vector<std::string> ids;
  for (const auto& [backend_id, route] : routes_)
    if (route.backend == index) ids.push_back(backend_id);
  for (const std::string& backend_id : ids) {
    const Route route = routes_.at(backend_id);
    end_route(backend_id);
    if (auto sink = route.sink.lock()) {
      json e = error_event(route.browser_id, "backend_unavailable",
                           "the backend " + backends_[index].url.ws() + " went away before the answer was complete (" +
                               reason + "); send the request again");
      e["backend"] = backends_[index].url.ws();
      sink->deliver(e);
    }
  }
}

bool Bridge::any_healthy() const {
  return std::any_of(backends_.begin(), backends_.end(), [this](const Backend& b) { return healthy(b); });
}

bool Bridge::serves(const std::string& model) const {
  bool any_linked = false;
  for (const Backend& b : backends_) {
    if (b.link != "ready") continue;
    any_linked = true;
    if (b.model == model) return true;
  }
  return !any_linked;
}

json Bridge::status() const {
  std::vector<BackendSnapshot> snaps;
  for (const Backend& b : backends_) {
    BackendSnapshot s;
    s.url = b.url.ws();
    s.in_flight = b.in_flight;
    if (b.report) s.status = b.report->status;
    if (b.link == "down") {
      s.state = "unreachable";
      s.reason = b.reason;
    } else if (b.link == "connecting") {
      s.state = "connecting";
    } else if (b.report) {
      s.state = b.report->state;
      s.reason = b.report->reason;
      if (s.state == "unreachable" || s.state == "error") s.state = "ok";  // linked: the socket says it is alive
    } else {
      s.state = "ok";
    }
    snaps.push_back(std::move(s));
  }
  BridgeSnapshot bridge;
  bridge.version = options_.version;
  bridge.uptime_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
  bridge.browsers = browsers_;
  bridge.open_connections = connections_;
  return aggregate_status(snaps, bridge);
}

json Bridge::ready_event() const {
  std::string model;
  int64_t context = 0;
  for (const Backend& b : backends_) {
    if (b.link != "ready") continue;
    if (model.empty()) model = b.model;
    if (b.context_size > 0) context = context == 0 ? b.context_size : std::min(context, b.context_size);
  }
  return {{"event", "ready"}, {"model", model}, {"context_size", context}, {"server_version", options_.version},
          {"bridge", true}};
}

json Bridge::models_event() const {
  json data = json::array();
  std::vector<std::string> seen;
  for (const Backend& b : backends_) {
    if (b.link != "ready" || std::find(seen.begin(), seen.end(), b.model) != seen.end()) continue;
    seen.push_back(b.model);
    data.push_back({{"id", b.model}, {"object", "model"}, {"owned_by", "tandem"}, {"context_window", b.context_size}});
  }
  return {{"event", "models"}, {"data", data}};
}

}  // namespace tandem::client::ui
