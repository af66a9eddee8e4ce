// The server side of the WebSocket protocol (docs/PROTOCOL.md) for one
// browser: commands are checked as tandem-server checks them, generate and
// cancel go through the bridge, status and models are answered here.
#include <deque>

#include "client/net/zstd_codec.h"
#include "client/ui/ui_server.h"

namespace tandem::client::ui {
namespace {

using nlohmann::json;
using net::beast::error_code;
namespace beast = net::beast;
namespace websocket = net::websocket;
namespace http = net::http;

constexpr size_t kOutboxLimit = size_t{32} << 20;  // bytes queued for a browser that does not read

class BrowserSession : public BrowserSink, public std::enable_shared_from_this<BrowserSession> {
 public:
  BrowserSession(Bridge& bridge, beast::tcp_stream stream)
      : bridge_(bridge), ws_(std::move(stream)), wake_(ws_.get_executor()) {}

  asio::awaitable<void> run(http::request<http::string_body> request) {
    ws_.set_option(websocket::stream_base::timeout::suggested(beast::role_type::server));
    ws_.set_option(websocket::stream_base::decorator(
        [](websocket::response_type& res) { res.set(http::field::server, "tandem-ui"); }));
    ws_.read_message_max(net::kMaxMessageBytes);
    error_code ec;
    co_await ws_.async_accept(request, net::use_ec(ec));
    if (ec) co_return;
    bridge_.browser_opened();
    asio::co_spawn(ws_.get_executor(), writer(shared_from_this()), asio::detached);
    co_await reader();
    closed_ = true;
    wake_.cancel();
    bridge_.forget(this);
    bridge_.browser_closed();
  }

  void deliver(const json& event) override { send(event); }

 private:
  asio::awaitable<void> reader() {
    for (;;) {
      beast::flat_buffer buffer;
      error_code ec;
      co_await ws_.async_read(buffer, net::use_ec(ec));
      if (ec == websocket::error::message_too_big) {
        send_error(nullptr, "message_too_big", "a message is over the limit of " + std::to_string(net::kMaxMessageBytes) + " bytes");
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

  static asio::awaitable<void> writer(std::shared_ptr<BrowserSession> self) {
    for (;;) {
      while (!self->outbox_.empty()) {
        auto [data, binary] = std::move(self->outbox_.front());
        self->outbox_.pop_front();
        self->outbox_bytes_ -= data.size();
        self->ws_.binary(binary);
        error_code ec;
        co_await self->ws_.async_write(asio::buffer(data), net::use_ec(ec));
        if (ec) {
          self->closed_ = true;
          co_return;
        }
      }
      if (self->closed_) co_return;
      self->wake_.expires_at(asio::steady_timer::time_point::max());
      error_code ec;
      co_await self->wake_.async_wait(net::use_ec(ec));
    }
  }

  void send(const json& message) {
    if (closed_) return;
    std::string data = message.dump(-1, ' ', false, json::error_handler_t::replace);
    bool binary = false;
    if (zstd_ && data.size() >= net::kCompressThreshold) {
      data = net::zstd_compress(data);
      binary = true;
    }
    outbox_bytes_ += data.size();
    outbox_.emplace_back(std::move(data), binary);
    if (outbox_bytes_ > kOutboxLimit) {
      closed_ = true;
      error_code ec;
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
    json msg = json::parse(text, nullptr, false);
    if (msg.is_discarded()) return send_error(nullptr, "invalid_json", "the message is not valid JSON (or not UTF-8)");
    if (!msg.is_object()) return send_error(nullptr, "invalid_request", "a command is a JSON object");
    const json id = msg.contains("id") ? msg.at("id") : json(nullptr);
    if (!id.is_null() && !id.is_string()) return send_error(nullptr, "invalid_request", "'id' must be a string");
    if (!msg.contains("command") || !msg.at("command").is_string())
      return send_error(id, "invalid_request", "'command' must be a string: init, generate, cancel, status or models");
    const std::string command = msg.at("command").get<std::string>();
    if (command == "init") return init(msg);
    if (!initialized_) return send_error(id, "init_required", "send {\"command\":\"init\"} first");
    if (command == "generate") {
      if (auto error = bridge_.generate(shared_from_this(), msg)) send(*error);
      return;
    }
    if (command == "cancel") {
      if (id.is_null()) return send_error(nullptr, "invalid_request", "cancel needs the 'id' of a request");
      if (auto error = bridge_.cancel(this, id.get<std::string>())) send(*error);
      return;
    }
    if (command == "status") {
      json s = bridge_.status();
      s["event"] = "status";
      return send(s);
    }
    if (command == "models") return send(bridge_.models_event());
    send_error(id, "unknown_command", "unknown command '" + command + "' (init, generate, cancel, status, models)");
  }

  void init(const json& msg) {
    std::string compression = "none";
    if (msg.contains("compression") && !msg.at("compression").is_null()) {
      const json& c = msg.at("compression");
      if (!c.is_string() || (c != "zstd" && c != "none"))
        return send_error(nullptr, "invalid_request", "'compression' must be \"zstd\" or \"none\"");
      compression = c.get<std::string>();
    }
    if (msg.contains("model") && !msg.at("model").is_null()) {
      if (!msg.at("model").is_string()) return send_error(nullptr, "invalid_request", "'model' must be a string");
      const std::string model = msg.at("model").get<std::string>();
      if (!bridge_.serves(model))
        return send_error(nullptr, "model_not_found", "no backend of this bridge serves the model '" + model + "'");
    }
    // The bridge holds the backends' key itself; a browser's api_key is not needed.
    zstd_ = compression == "zstd";
    initialized_ = true;
    json ready = bridge_.ready_event();
    ready["compression"] = compression;
    ready["compression_threshold"] = zstd_ ? net::kCompressThreshold : 0;
    send(ready);
  }

  Bridge& bridge_;
  websocket::stream<beast::tcp_stream> ws_;
  asio::steady_timer wake_;
  std::deque<std::pair<std::string, bool>> outbox_;
  size_t outbox_bytes_ = 0;
  bool closed_ = false;
  bool initialized_ = false;
  bool zstd_ = false;
};

}  // namespace

asio::awaitable<void> run_browser_session(Bridge& bridge, beast::tcp_stream stream,
                                          http::request<http::string_body> request) {
  auto session = std::make_shared<BrowserSession>(bridge, std::move(stream));
  try {
    co_await session->run(std::move(request));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tandem ui: a browser session ended after an internal error: %s\n", e.what());
  }
}

}  // namespace tandem::client::ui
