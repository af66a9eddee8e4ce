// The WebSocket protocol at /ws (docs/PROTOCOL.md). One reader coroutine
// parses commands; one writer coroutine drains the outbox; engine events are
// posted onto the session's strand and turned into messages there. Requests
// are multiplexed by the client's id; closing the socket cancels them all.
#include <spdlog/spdlog.h>

#include <map>

#include "server/api_error.h"
#include "server/json_input.h"
#include "server/auth.h"
#include "server/generation_params.h"
#include "server/net.h"
#include "server/openai_format.h"
#include "server/status_json.h"
#include "server/zstd_frame.h"
#include "tokenizer/tokenizer.h"

namespace tandem::server {
namespace {

using nlohmann::json;

constexpr auto use_ec = [](beast::error_code& ec) { return asio::redirect_error(asio::use_awaitable, ec); };
constexpr size_t kOutboxLimit = size_t{32} << 20;  // bytes queued for a client that does not read; more closes it
constexpr size_t kMaxIdLength = 256;

class WsSession : public std::enable_shared_from_this<WsSession> {
 public:
  WsSession(std::shared_ptr<ServerContext> ctx, beast::tcp_stream stream)
      : ctx_(std::move(ctx)), ws_(std::move(stream)), wake_(ws_.get_executor()) {}
  // Messages still queued when the session ends are never sent: they no
  // longer hold up a drain.
  ~WsSession() { ctx_->counters.ws_unsent -= static_cast<int64_t>(outbox_.size()); }

  asio::awaitable<void> run(HttpRequest request) {
    ws_.set_option(websocket::stream_base::timeout::suggested(beast::role_type::server));
    ws_.set_option(websocket::stream_base::decorator(
        [](websocket::response_type& res) { res.set(http::field::server, "tandem-server"); }));
    ws_.read_message_max(ctx_->ws_message_limit);
    beast::error_code ec;
    co_await ws_.async_accept(request, use_ec(ec));
    if (ec) co_return;
    ctx_->counters.open_websockets++;
    asio::co_spawn(ws_.get_executor(), writer(shared_from_this()), asio::detached);
    co_await reader();
    closed_ = true;
    for (auto& [cid, r] : requests_) ctx_->model.engine->cancel(r.engine_id);
    wake_.cancel();
    ctx_->counters.open_websockets--;
  }

 private:
  struct Running {
    RequestId engine_id = 0;
    int top_logprobs = -1;
  };
  struct Outgoing {
    std::string data;
    bool binary = false;
  };

  asio::awaitable<void> reader() {
    for (;;) {
      beast::flat_buffer buffer;
      beast::error_code ec;
      co_await ws_.async_read(buffer, use_ec(ec));
      if (ec == websocket::error::message_too_big) {
        send_error(nullptr, "message_too_big", "a message is over the limit of " +
                                                   std::to_string(ctx_->ws_message_limit) + " bytes");
        co_return;
      }
      if (ec) co_return;
      if (!ws_.got_text()) {
        send_error(nullptr, "invalid_request", "send commands as text frames holding JSON");
        continue;
      }
      handle(beast::buffers_to_string(buffer.data()));
      if (closed_) co_return;
    }
  }

  static asio::awaitable<void> writer(std::shared_ptr<WsSession> self) {
    for (;;) {
      while (!self->outbox_.empty()) {
        Outgoing m = std::move(self->outbox_.front());
        self->outbox_.pop_front();
        self->outbox_bytes_ -= m.data.size();
        self->ws_.binary(m.binary);
        beast::error_code ec;
        co_await self->ws_.async_write(asio::buffer(m.data), use_ec(ec));
        self->ctx_->counters.ws_unsent--;
        if (ec) {
          self->closed_ = true;
          co_return;
        }
      }
      if (self->closed_) co_return;
      self->wake_.expires_at(asio::steady_timer::time_point::max());
      beast::error_code ec;
      co_await self->wake_.async_wait(use_ec(ec));
    }
  }

  // On the strand. Messages over the threshold go as one zstd frame in a
  // binary message when the client asked for it at init.
  void send(const json& message) {
    if (closed_) return;
    Outgoing m{dump_json(message), false};
    if (zstd_ && m.data.size() >= ctx_->ws_compress_threshold) {
      m.data = zstd_compress(m.data);
      m.binary = true;
    }
    outbox_bytes_ += m.data.size();
    outbox_.push_back(std::move(m));
    ctx_->counters.ws_unsent++;
    if (outbox_bytes_ > kOutboxLimit) {
      ctx_->log->warn("closing a WebSocket whose client does not read ({} bytes queued)", outbox_bytes_);
      closed_ = true;
      beast::error_code ec;
      beast::get_lowest_layer(ws_).socket().close(ec);
    }
    wake_.cancel();
  }

  void send_error(const json& id, const std::string& code, const std::string& message) {
    json e = {{"event", "error"}, {"code", code}, {"message", message}};
    if (!id.is_null()) e["id"] = id;
    send(e);
  }

  void handle(const std::string& text) {
    json msg;
    try {
      msg = parse_network_json(text);
    } catch (const ApiError& e) {
      return send_error(nullptr, e.code(), e.what());
    }
    if (msg.is_discarded()) return send_error(nullptr, "invalid_json", "the message is not valid JSON (or not UTF-8)");
    if (!msg.is_object()) return send_error(nullptr, "invalid_request", "a command is a JSON object");
    json id = msg.contains("id") ? msg.at("id") : json(nullptr);
    if (!id.is_null() && !id.is_string())
      return send_error(nullptr, "invalid_request", "'id' must be a string");
    if (!msg.contains("command") || !msg.at("command").is_string())
      return send_error(id, "invalid_request", "'command' must be a string: init, generate, cancel, status or models");
    const std::string command = msg.at("command").get<std::string>();
    try {
      if (command == "init") return init(msg);
      if (!initialized_) return send_error(id, "init_required", "send {\"command\":\"init\"} first");
      if (command == "generate") return generate(msg, id);
      if (command == "cancel") return cancel(id);
      if (command == "status") {
        json s = status_json(ctx_->model.engine->stats(), *ctx_);
        s["event"] = "status";
        return send(s);
      }
      if (command == "models") {
        json m = models_json(ctx_->model);
        return send({{"event", "models"}, {"data", m["data"]}});
      }
      send_error(id, "unknown_command", "unknown command '" + command + "' (init, generate, cancel, status, models)");
    } catch (const ApiError& e) {
      send_error(id, e.code(), e.what());
    } catch (const RequestError& e) {
      send_error(id, e.code(), e.what());
    } catch (const Error& e) {
      send_error(id, "invalid_request", e.what());
    }
  }

  void init(const json& msg) {
    if (msg.contains("api_key") && !msg.at("api_key").is_string())
      return send_error(nullptr, "invalid_request", "'api_key' must be a string");
    if (!ctx_->ready.load(std::memory_order_acquire))
      return send_error(nullptr, "loading", "the model is still loading; send init again shortly");
    const std::string key = msg.value("api_key", std::string());
    if (!key_matches(ctx_->config.api_key, key))
      return send_error(nullptr, "unauthorized", "missing or wrong api_key in init");
    check_model_name(msg, ctx_->model);
    std::string compression = "none";
    if (msg.contains("compression") && !msg.at("compression").is_null()) {
      const json& c = msg.at("compression");
      if (!c.is_string() || (c != "zstd" && c != "none"))
        return send_error(nullptr, "invalid_request", "'compression' must be \"zstd\" or \"none\"");
      compression = c.get<std::string>();
    }
    zstd_ = compression == "zstd";
    initialized_ = true;
    send({{"event", "ready"},
          {"model", ctx_->model.id},
          {"context_size", ctx_->model.context_window},
          {"server_version", ctx_->version},
          {"compression", compression},
          {"compression_threshold", zstd_ ? ctx_->ws_compress_threshold : 0}});
  }

  void generate(const json& msg, const json& id) {
    if (id.is_null() || id.get_ref<const std::string&>().empty() ||
        id.get_ref<const std::string&>().size() > kMaxIdLength)
      return send_error(nullptr, "invalid_request", "generate needs a string 'id' of 1 to 256 characters");
    const std::string cid = id.get<std::string>();
    if (requests_.count(cid)) return send_error(id, "duplicate_id", "a request with id '" + cid + "' is running");
    check_model_name(msg, ctx_->model);
    GenerationRequest r;
    if (msg.contains("messages")) r.prompt = tokenize_messages(msg.at("messages"), ctx_->model);
    else if (msg.contains("prompt")) r.prompt = tokenize_prompt(msg.at("prompt"), ctx_->model);
    else return send_error(id, "invalid_request", "generate needs 'prompt' or 'messages'");
    if (r.prompt.empty()) return send_error(id, "invalid_request", "the prompt is empty");
    const json params = msg.contains("params") ? msg.at("params") : json::object();
    if (!params.is_object()) return send_error(id, "invalid_request", "'params' must be an object");
    parse_sampling_fields(params, r.sampling, r.prompt.size(), ctx_->model.context_window);
    if (params.contains("logprobs") && !params.at("logprobs").is_null()) {
      if (!params.at("logprobs").is_boolean()) throw bad_field("logprobs", "must be a boolean");
      if (params.at("logprobs").get<bool>()) r.top_logprobs = 0;
    }
    if (params.contains("top_logprobs") && !params.at("top_logprobs").is_null()) {
      const json& k = params.at("top_logprobs");
      if (!k.is_number_integer() || k.get<int64_t>() < 0 || k.get<int64_t>() > 20)
        throw bad_field("top_logprobs", "must be an integer in [0, 20]");
      r.top_logprobs = static_cast<int>(k.get<int64_t>());
    }
    r.timeout = std::chrono::milliseconds(static_cast<int64_t>(ctx_->config.request_timeout_s * 1000.0));
    const int top = r.top_logprobs;
    auto self = shared_from_this();
    auto callback = [self, cid](StreamEvent&& event) {
      asio::post(self->ws_.get_executor(),
                 [self, cid, ev = std::move(event)]() mutable { self->on_event(cid, std::move(ev)); });
    };
    // Submitting on the strand, and events arriving through it, means the
    // entry below exists before the first event is handled.
    const RequestId engine_id = ctx_->model.engine->submit(std::move(r), callback);
    requests_[cid] = Running{engine_id, top};
    ctx_->counters.active_generations++;
  }

  void cancel(const json& id) {
    if (id.is_null()) return send_error(nullptr, "invalid_request", "cancel needs the 'id' of a request");
    auto it = requests_.find(id.get<std::string>());
    if (it == requests_.end()) return send_error(id, "unknown_id", "no running request has id '" + id.get<std::string>() + "'");
    // The request's stream ends with a done event, finish_reason "cancelled".
    ctx_->model.engine->cancel(it->second.engine_id);
  }

  void on_event(const std::string& cid, StreamEvent ev) {
    auto it = requests_.find(cid);
    if (it == requests_.end()) return;
    if (!ev.done) {
      json m = {{"event", "token"}, {"id", cid}, {"text", ev.text}, {"token_ids", ev.token_ids}};
      if (it->second.top_logprobs >= 0 && !ev.logprobs.empty()) {
        m["logprobs"] = ev.logprobs;
        if (it->second.top_logprobs > 0) {
          json top = json::array();
          for (const auto& per_token : ev.top) {
            json entries = json::array();
            for (const TopLogprob& t : per_token) entries.push_back({{"id", t.id}, {"logprob", t.logprob}});
            top.push_back(entries);
          }
          m["top_logprobs"] = top;
        }
      }
      return send(m);
    }
    requests_.erase(it);
    ctx_->counters.active_generations--;
    if (ev.finish_reason == "error") return send_error(cid, ev.error_code.empty() ? "internal_error" : ev.error_code, ev.error_message);
    // Decode rate: tokens after the first over the time after the first.
    const double decode_s = (ev.total_ms - ev.ttft_ms) / 1000.0;
    const double tps = ev.completion_tokens > 1 && decode_s > 0 ? static_cast<double>(ev.completion_tokens - 1) / decode_s : 0.0;
    send({{"event", "done"},
          {"id", cid},
          {"finish_reason", ev.finish_reason},
          {"usage", usage_json(ev.prompt_tokens, ev.completion_tokens)},
          {"timings", {{"queue_ms", ev.queue_ms}, {"ttft_ms", ev.ttft_ms}, {"total_ms", ev.total_ms}, {"tokens_per_s", tps}}}});
  }

  std::shared_ptr<ServerContext> ctx_;
  websocket::stream<beast::tcp_stream> ws_;
  asio::steady_timer wake_;
  std::deque<Outgoing> outbox_;
  size_t outbox_bytes_ = 0;
  bool closed_ = false;
  bool initialized_ = false;
  bool zstd_ = false;
  std::map<std::string, Running> requests_;
};

}  // namespace

asio::awaitable<void> run_ws_session(std::shared_ptr<ServerContext> ctx, beast::tcp_stream stream, HttpRequest request) {
  auto session = std::make_shared<WsSession>(ctx, std::move(stream));
  try {
    co_await session->run(std::move(request));
  } catch (const std::exception& e) {
    ctx->log->warn("WebSocket session ended after an internal error: {}", e.what());
  }
}

}  // namespace tandem::server
