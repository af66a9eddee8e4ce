#include "client/status/backend_probe.h"

#include "client/net/http_client.h"
#include "client/net/net_error.h"

namespace tandem::client::status {

using nlohmann::json;

net::asio::awaitable<BackendReport> probe_backend(net::BackendUrl url, std::string api_key,
                                                  std::chrono::milliseconds timeout) {
  BackendReport r;
  r.url = url.ws();
  const auto start = std::chrono::steady_clock::now();
  net::HttpResult res;
  try {
    std::string target = "/v1/status";  // a named string: no temporaries inside co_await (GCC 12)
    res = co_await net::async_http_get(url, std::move(target), api_key, timeout);
  } catch (const net::NetError& e) {
    r.state = "unreachable";
    r.reason = e.what();
    r.at = std::chrono::steady_clock::now();
    co_return r;
  }
  r.at = std::chrono::steady_clock::now();
  r.latency_ms = std::chrono::duration<double, std::milli>(r.at - start).count();
  json body = json::parse(res.body, nullptr, false);
  if (res.status == 401) {
    r.state = "error";
    r.reason = "the backend refused the API key (HTTP 401); pass the right one with --api-key";
    co_return r;
  }
  if (res.status != 200 || !body.is_object()) {
    r.state = "error";
    std::string message;
    if (body.is_object() && body.contains("error") && body["error"].is_object())
      message = body["error"].value("message", "");
    r.reason = "GET /v1/status answered HTTP " + std::to_string(res.status) +
               (message.empty() ? (body.is_discarded() ? " with a body that is not JSON; is this a tandem server?" : "")
                                : ": " + message);
    co_return r;
  }
  r.status = std::move(body);
  // Older servers have no "state": derive it from "draining".
  const json& state = r.status.contains("state") ? r.status["state"] : json(nullptr);
  if (state.is_string()) r.state = state.get<std::string>();
  else r.state = r.status.value("draining", false) ? "draining" : "ok";
  if (r.state != "ok" && r.state != "draining" && r.state != "loading") {
    r.reason = "the backend reports state '" + r.state + "'";
    r.state = "error";
  }
  co_return r;
}

}  // namespace tandem::client::status
