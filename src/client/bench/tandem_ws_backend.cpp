// The Tandem WebSocket protocol (docs/PROTOCOL.md) through the client's
// WsClient: one socket carries every request of a run, multiplexed by id. A
// reader coroutine dispatches events to the waiting requests. Prompt sizes
// come from the server's own tokenizer at POST /tokenize.
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>

#include "client/bench/backend.h"
#include "client/bench/http_connection.h"
#include "client/bench/request_bodies.h"
#include "client/net/net_error.h"
#include "client/net/url.h"
#include "client/net/ws_client.h"

namespace tandem::client::bench {
namespace {

using nlohmann::json;

constexpr auto kSetupTimeout = std::chrono::seconds(30);

std::string string_field(const json& j, const char* key) {
  return j.contains(key) && j.at(key).is_string() ? j.at(key).get<std::string>() : std::string();
}

class TandemWsBackend : public Backend {
 public:
  TandemWsBackend(asio::any_io_executor executor, const BenchOptions& options, const BackendUrl& url)
      : executor_(executor),
        options_(options),
        url_(url),
        ws_(executor),
        http_(executor, BackendUrl{"http", url.host, url.port, url.base_path}, options.api_key),
        reader_exit_(executor) {}

  asio::awaitable<ServerInfo> open() override {
    net::BackendUrl ws_url{url_.host, url_.port, url_.base_path + "/ws"};
    const net::InitOptions init{options_.api_key, options_.model, options_.zstd};
    json ready;
    // A server still loading its model answers init with `loading`: try again.
    const auto give_up = Clock::now() + std::chrono::seconds(120);
    for (;;) {
      try {
        ready = co_await ws_.connect(ws_url, init, kSetupTimeout);
        break;
      } catch (const net::NetError& e) {
        if (e.code() != "loading" || Clock::now() > give_up)
          throw SetupError(e.what());
      }
      asio::steady_timer pause(executor_, std::chrono::milliseconds(500));
      beast::error_code ec;
      co_await pause.async_wait(use_ec(ec));
    }
    ServerInfo info;
    info.model = string_field(ready, "model");
    info.server_version = string_field(ready, "server_version");
    if (ready.contains("context_size") && ready.at("context_size").is_number_integer())
      info.context_size = ready.at("context_size").get<int64_t>();
    reader_running_ = true;
    asio::co_spawn(executor_, reader(), asio::detached);
    co_return info;
  }

  asio::awaitable<int64_t> count_prompt_tokens(const std::string& text) override {
    json body = json::object();
    body["prompt"] = text;
    const std::string body_text = body.dump();
    HttpResult r;
    try {
      r = co_await http_.request(http::verb::post, "/tokenize", body_text, Clock::now() + kSetupTimeout);
    } catch (const boost::system::system_error& e) {
      throw SetupError("POST /tokenize at " + url_.text() + " failed: " +
                       net::describe_network_error(e.code(), url_.host + ":" + url_.port));
    }
    const json j = json::parse(r.body, nullptr, false);
    if (r.status != 200 || !j.is_object() || !j.contains("count") || !j.at("count").is_number_integer())
      throw SetupError("POST /tokenize at " + url_.text() + " answered HTTP " + std::to_string(r.status) +
                       " without a count: " + r.body.substr(0, 300));
    co_return j.at("count").get<int64_t>();
  }
  bool cheap_token_counts() const override { return true; }

  asio::awaitable<RequestResult> run(const PreparedRequest& request, Clock::time_point level_start) override {
    RequestResult result;
    result.index = request.spec.index;
    result.prompt_tokens_target = request.spec.prompt_tokens;
    result.max_tokens = request.spec.max_tokens;
    const std::string id = "bench-" + std::to_string(next_id_++);
    const Clock::time_point t0 = Clock::now();
    result.start_ms = ms_between(level_start, t0);
    if (broken_) {
      result.error_code = "connection_closed";
      result.error_message = broken_message_;
      co_return result;
    }
    asio::steady_timer wake(executor_);
    wake.expires_at(t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(options_.timeout_s)));
    Pending pending{&result, t0, &wake};
    pending_[id] = &pending;
    ws_.send(tandem_generate_command(id, request, options_));
    while (!pending.finished) {
      beast::error_code ec;
      co_await wake.async_wait(use_ec(ec));
      if (!ec && !pending.finished) {  // the deadline passed
        result.error_code = "timeout";
        char limit[32];
        std::snprintf(limit, sizeof limit, "%g", options_.timeout_s);
        result.error_message = std::string("no done event within ") + limit + " s";
        result.e2e_ms = ms_between(t0, Clock::now());
        json cancel = json::object();
        cancel["command"] = "cancel";
        cancel["id"] = id;
        ws_.send(cancel);
        break;
      }
    }
    pending_.erase(id);
    result.ok = result.error_code.empty();
    co_return result;
  }

  asio::awaitable<void> close() override {
    closing_ = true;
    ws_.close();
    http_.reset();
    while (reader_running_) {
      reader_exit_.expires_after(std::chrono::seconds(5));
      beast::error_code ec;
      co_await reader_exit_.async_wait(use_ec(ec));
    }
  }

 private:
  struct Pending {
    RequestResult* result;
    Clock::time_point t0;
    asio::steady_timer* wake;
    bool finished = false;
  };

  void finish(Pending& p, Clock::time_point at) {
    p.result->e2e_ms = ms_between(p.t0, at);
    p.finished = true;
    p.wake->cancel();
  }

  // The socket is gone: every waiting request fails, later ones fail at once.
  void fail_all(const std::string& why) {
    broken_ = true;
    broken_message_ = why;
    const Clock::time_point now = Clock::now();
    for (auto& [id, p] : pending_) {
      if (p->finished) continue;
      p->result->error_code = "connection_closed";
      p->result->error_message = why;
      finish(*p, now);
    }
  }

  asio::awaitable<void> reader() {
    for (;;) {
      json msg;
      try {
        msg = co_await ws_.read();
      } catch (const std::exception& e) {  // NetError when the socket ends; zstd errors
        fail_all(closing_ ? "the benchmark closed the connection" : e.what());
        break;
      }
      dispatch(msg, Clock::now());
    }
    reader_running_ = false;
    reader_exit_.cancel();
  }

  void dispatch(const json& msg, Clock::time_point now) {
    const std::string event = string_field(msg, "event");
    const auto it = pending_.find(string_field(msg, "id"));
    if (it == pending_.end()) return;  // a request that timed out, or an event that belongs to none
    Pending& p = *it->second;
    if (p.finished) return;
    RequestResult& r = *p.result;
    if (event == "token") {
      int n = 1;
      if (msg.contains("token_ids") && msg.at("token_ids").is_array())
        n = static_cast<int>(msg.at("token_ids").size());
      if (n == 0) return;
      r.arrival_ms.push_back(ms_between(p.t0, now));
      r.arrival_tokens.push_back(n);
    } else if (event == "done") {
      r.finish_reason = string_field(msg, "finish_reason");
      if (msg.contains("usage") && msg.at("usage").is_object()) {
        const json& u = msg.at("usage");
        if (u.contains("prompt_tokens") && u.at("prompt_tokens").is_number_integer())
          r.prompt_tokens = u.at("prompt_tokens").get<int64_t>();
        if (u.contains("completion_tokens") && u.at("completion_tokens").is_number_integer())
          r.completion_tokens = u.at("completion_tokens").get<int64_t>();
      }
      if (r.finish_reason != "stop" && r.finish_reason != "length") {
        r.error_code = "finish_" + (r.finish_reason.empty() ? std::string("missing") : r.finish_reason);
        r.error_message = "the request ended with finish_reason '" + r.finish_reason + "'";
      }
      finish(p, now);
    } else if (event == "error") {
      r.error_code = string_field(msg, "code");
      if (r.error_code.empty()) r.error_code = "error";
      r.error_message = string_field(msg, "message");
      finish(p, now);
    }
  }

  asio::any_io_executor executor_;
  BenchOptions options_;
  BackendUrl url_;
  net::WsClient ws_;
  HttpConnection http_;
  asio::steady_timer reader_exit_;
  std::map<std::string, Pending*> pending_;
  bool broken_ = false;
  bool closing_ = false;
  bool reader_running_ = false;
  std::string broken_message_;
  uint64_t next_id_ = 0;
};

}  // namespace

std::unique_ptr<Backend> make_tandem_ws_backend(asio::any_io_executor executor, const BenchOptions& options,
                                                const BackendUrl& url) {
  return std::make_unique<TandemWsBackend>(std::move(executor), options, url);
}

}  // namespace tandem::client::bench
