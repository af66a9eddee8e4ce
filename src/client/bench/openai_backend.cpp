// OpenAI-compatible HTTP: streaming POST /v1/completions with
// stream_options.include_usage, one keep-alive connection per stream in
// flight (kept in a pool between requests).
#include <nlohmann/json.hpp>
#include <vector>

#include "client/bench/backend.h"
#include "client/bench/http_connection.h"
#include "client/bench/request_bodies.h"
#include "client/bench/sse_stream.h"
#include "client/net/net_error.h"

namespace tandem::client::bench {
namespace {

using nlohmann::json;

constexpr auto kSetupTimeout = std::chrono::seconds(30);

// {"error": {"code", "message"}} (OpenAI shape) or anything else: a code and a message.
NetFailure http_failure(int status, const std::string& body) {
  NetFailure f{"http_" + std::to_string(status), "HTTP " + std::to_string(status)};
  const json j = json::parse(body, nullptr, false);
  if (j.is_object() && j.contains("error")) {
    const json& e = j.at("error");
    if (e.is_object()) {
      if (e.contains("code") && e.at("code").is_string()) f.code = e.at("code").get<std::string>();
      if (e.contains("message") && e.at("message").is_string())
        f.message += ": " + e.at("message").get<std::string>();
    } else if (e.is_string()) {
      f.message += ": " + e.get<std::string>();
    }
  } else if (!body.empty()) {
    f.message += ": " + body.substr(0, 300);
  }
  return f;
}

class OpenAiBackend : public Backend {
 public:
  OpenAiBackend(asio::any_io_executor executor, const BenchOptions& options, const BackendUrl& url)
      : executor_(std::move(executor)), options_(options), url_(url) {}

  asio::awaitable<ServerInfo> open() override {
    ServerInfo info;
    info.model = options_.model;
    HttpConnection conn(executor_, url_, options_.api_key);
    HttpResult r;
    try {
      r = co_await conn.request(http::verb::get, "/v1/models", "", Clock::now() + kSetupTimeout);
    } catch (const boost::system::system_error& e) {
      throw SetupError("cannot reach the backend at " + url_.text() + ": " +
                       net::describe_network_error(e.code(), url_.host + ":" + url_.port));
    }
    if (r.status == 401 || r.status == 403)
      throw SetupError("the backend at " + url_.text() + " refused the API key (HTTP " + std::to_string(r.status) +
                       "); pass --api-key");
    if (r.status == 200) {
      const json j = json::parse(r.body, nullptr, false);
      if (info.model.empty() && j.is_object() && j.contains("data") && j.at("data").is_array() &&
          !j.at("data").empty() && j.at("data").at(0).is_object() && j.at("data").at(0).contains("id") &&
          j.at("data").at(0).at("id").is_string())
        info.model = j.at("data").at(0).at("id").get<std::string>();
    }
    if (info.model.empty())
      throw SetupError("the backend at " + url_.text() + " lists no model at /v1/models (HTTP " +
                       std::to_string(r.status) + "); pass --model");
    model_ = info.model;
    co_return info;
  }

  asio::awaitable<int64_t> count_prompt_tokens(const std::string& text) override {
    // A one-token, non-streaming completion: its usage counts the prompt.
    HttpConnection conn(executor_, url_, options_.api_key);
    json body = json::object();  // built field by field: GCC 12 mis-compiles braced JSON in coroutines
    body["model"] = model_;
    body["prompt"] = text;
    body["max_tokens"] = 1;
    body["temperature"] = 0;
    const std::string body_text = body.dump();
    HttpResult r;
    // The probe is idempotent, so a dropped connection is retried twice.
    for (int attempt = 1;; ++attempt) {
      beast::error_code failed;
      try {
        r = co_await conn.request(http::verb::post, "/v1/completions", body_text, Clock::now() + kSetupTimeout);
      } catch (const boost::system::system_error& e) {
        failed = e.code();
      }
      if (!failed) break;
      conn.reset();
      if (attempt == 3)
        throw SetupError("a probe completion to " + url_.text() + " failed: " +
                         net::describe_network_error(failed, url_.host + ":" + url_.port));
    }
    if (r.status != 200) {
      const NetFailure f = http_failure(r.status, r.body);
      throw SetupError("a probe completion to size prompts failed: " + f.message);
    }
    const json j = json::parse(r.body, nullptr, false);
    if (!j.is_object() || !j.contains("usage") || !j.at("usage").is_object() ||
        !j.at("usage").contains("prompt_tokens") || !j.at("usage").at("prompt_tokens").is_number_integer())
      throw SetupError("the backend's completion has no usage.prompt_tokens, so prompts cannot be sized");
    co_return j.at("usage").at("prompt_tokens").get<int64_t>();
  }
  bool cheap_token_counts() const override { return false; }

  asio::awaitable<RequestResult> run(const PreparedRequest& request, Clock::time_point level_start) override {
    RequestResult result;
    result.index = request.spec.index;
    result.prompt_tokens_target = request.spec.prompt_tokens;
    result.max_tokens = request.spec.max_tokens;
    std::unique_ptr<HttpConnection> conn;
    if (!idle_.empty()) {
      conn = std::move(idle_.back());
      idle_.pop_back();
    } else {
      conn = std::make_unique<HttpConnection>(executor_, url_, options_.api_key);
    }
    const std::string body = openai_completion_body(request, options_, model_).dump();
    const Clock::time_point t0 = Clock::now();
    const Clock::time_point deadline =
        t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(options_.timeout_s));
    result.start_ms = ms_between(level_start, t0);
    SseParser sse;
    std::vector<std::string> events;
    bool saw_done = false;
    Clock::time_point last = t0;
    auto on_body = [&](std::string_view piece, Clock::time_point at) {
      events.clear();
      sse.feed(piece, events);
      last = at;
      for (const std::string& data : events) {
        const CompletionChunk c = read_completion_chunk(data);
        if (c.done_marker) {
          saw_done = true;
        } else if (c.invalid) {
          if (result.error_code.empty()) {
            result.error_code = "bad_chunk";
            result.error_message = "a stream event is not a JSON object: " + data.substr(0, 200);
          }
        } else if (!c.error_code.empty()) {
          if (result.error_code.empty()) {
            result.error_code = c.error_code;
            result.error_message = c.error_message;
          }
        } else {
          if (c.has_token) {
            result.arrival_ms.push_back(ms_between(t0, at));
            result.arrival_tokens.push_back(1);
          }
          if (!c.finish_reason.empty()) result.finish_reason = c.finish_reason;
          if (c.prompt_tokens >= 0) result.prompt_tokens = c.prompt_tokens;
          if (c.completion_tokens >= 0) result.completion_tokens = c.completion_tokens;
        }
      }
    };
    try {
      const HttpResult r = co_await conn->stream("/v1/completions", body, deadline, on_body);
      result.e2e_ms = ms_between(t0, last);
      if (r.status < 200 || r.status >= 300) {
        const NetFailure f = http_failure(r.status, r.body);
        result.error_code = f.code;
        result.error_message = f.message;
        result.e2e_ms = ms_between(t0, Clock::now());
      } else if (result.error_code.empty() && !saw_done) {
        result.error_code = "incomplete_stream";
        result.error_message = "the stream ended without data: [DONE]";
      } else if (result.error_code.empty() && result.finish_reason != "stop" && result.finish_reason != "length") {
        result.error_code = "finish_" + (result.finish_reason.empty() ? std::string("missing") : result.finish_reason);
        result.error_message = "the request ended with finish_reason '" + result.finish_reason + "'";
      }
      result.ok = result.error_code.empty();
    } catch (const boost::system::system_error& e) {
      const NetFailure f = classify_net_error(e.code());
      result.error_code = f.code;
      result.error_message = f.message + " (while " + conn->phase() + ")";
      result.e2e_ms = ms_between(t0, Clock::now());
    }
    if (conn->reusable()) idle_.push_back(std::move(conn));
    co_return result;
  }

  asio::awaitable<void> close() override {
    idle_.clear();
    co_return;
  }

 private:
  asio::any_io_executor executor_;
  BenchOptions options_;
  BackendUrl url_;
  std::string model_;
  std::vector<std::unique_ptr<HttpConnection>> idle_;
};

}  // namespace

std::unique_ptr<Backend> make_openai_backend(asio::any_io_executor executor, const BenchOptions& options,
                                             const BackendUrl& url) {
  return std::make_unique<OpenAiBackend>(std::move(executor), options, url);
}

}  // namespace tandem::client::bench
