#include "client/net/ws_client.h"

#include "client/net/net_error.h"
#include "client/net/zstd_codec.h"

namespace tandem::client::net {

using nlohmann::json;

// The socket and its outbox. Shared with the writer coroutine, which may
// outlive a close() by one wake-up.
struct WsClient::State {
  explicit State(asio::any_io_executor ex) : ws(ex), wake(ex) {}
  websocket::stream<beast::tcp_stream> ws;
  asio::steady_timer wake;
  std::deque<std::string> outbox;
  bool closed = false;
  std::string where;
};

WsClient::WsClient(asio::any_io_executor executor) : executor_(std::move(executor)) {}

WsClient::~WsClient() { close(); }

asio::awaitable<json> WsClient::connect(BackendUrl url, InitOptions options, std::chrono::milliseconds timeout) {
  close();
  url_ = url;
  auto state = std::make_shared<State>(executor_);
  state->where = url.host_port();
  connecting_ = state;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  beast::error_code ec;
  tcp::resolver resolver(executor_);
  auto endpoints = co_await resolver.async_resolve(url.host, url.port, use_ec(ec));
  if (ec) throw NetError(describe_network_error(ec, state->where));
  auto& tcp_stream = beast::get_lowest_layer(state->ws);
  tcp_stream.expires_at(deadline);
  if (state->closed) throw NetError("the connection to " + state->where + " was closed");
  co_await tcp_stream.async_connect(endpoints, use_ec(ec));
  if (ec) throw NetError(describe_network_error(ec, state->where));
  tcp_stream.socket().set_option(tcp::no_delay(true), ec);
  state->ws.set_option(websocket::stream_base::decorator(
      [](websocket::request_type& req) { req.set(http::field::user_agent, "tandem"); }));
  state->ws.read_message_max(kMaxMessageBytes);
  co_await state->ws.async_handshake(url.host_port(), url.ws_path, use_ec(ec));
  if (ec == websocket::error::upgrade_declined)
    throw NetError(state->where + " declined the WebSocket upgrade at " + url.ws_path + "; is it a tandem server?");
  if (ec) throw NetError(describe_network_error(ec, state->where));
  json init = {{"command", "init"}, {"compression", options.zstd ? "zstd" : "none"}};
  if (!options.api_key.empty()) init["api_key"] = options.api_key;
  if (!options.model.empty()) init["model"] = options.model;
  const std::string text = init.dump();
  co_await state->ws.async_write(asio::buffer(text), use_ec(ec));
  if (ec) throw NetError(describe_network_error(ec, state->where));
  // The answer to init still falls under the connect deadline.
  beast::flat_buffer buffer;
  co_await state->ws.async_read(buffer, use_ec(ec));
  if (ec) throw NetError(describe_network_error(ec, state->where));
  std::string data = beast::buffers_to_string(buffer.data());
  if (!state->ws.got_text()) data = zstd_decompress(data);
  json ready = json::parse(data, nullptr, false);
  if (ready.is_discarded() || !ready.is_object())
    throw NetError(url.ws() + " answered init with something that is not JSON; is it a tandem server?");
  if (ready.value("event", "") == "error") {
    const std::string code = ready.value("code", "");
    throw NetError(describe_backend_error(code, ready.value("message", "")), code);
  }
  if (ready.value("event", "") != "ready")
    throw NetError(url.ws() + " answered init with '" + ready.value("event", "?") + "' instead of 'ready'");
  // From here on: no deadline, but pings keep a silent dead peer from hanging us.
  tcp_stream.expires_never();
  websocket::stream_base::timeout t = websocket::stream_base::timeout::suggested(beast::role_type::client);
  t.idle_timeout = std::chrono::seconds(60);
  t.keep_alive_pings = true;
  state->ws.set_option(t);
  if (state->closed) throw NetError("the connection to " + state->where + " was closed");
  connecting_.reset();
  state_ = state;
  asio::co_spawn(executor_, writer(state), asio::detached);
  co_return ready;
}

asio::awaitable<json> WsClient::read() {
  std::shared_ptr<State> state = state_;
  if (!state) throw NetError("not connected");
  for (;;) {
    beast::flat_buffer buffer;
    beast::error_code ec;
    co_await state->ws.async_read(buffer, use_ec(ec));
    if (ec) {
      const std::string why = state->closed ? "the connection was closed" : describe_network_error(ec, state->where);
      if (state_ == state) close();
      throw NetError(why);
    }
    std::string data = beast::buffers_to_string(buffer.data());
    if (!state->ws.got_text()) data = zstd_decompress(data);
    json event = json::parse(data, nullptr, false);
    if (event.is_discarded() || !event.is_object()) continue;  // not ours to interpret
    co_return event;
  }
}

void WsClient::send(const json& command) {
  if (!state_) return;
  state_->outbox.push_back(command.dump(-1, ' ', false, json::error_handler_t::replace));
  state_->wake.cancel();
}

void WsClient::close() {
  if (std::shared_ptr<State> pending = connecting_.lock()) {
    connecting_.reset();
    pending->closed = true;
    beast::get_lowest_layer(pending->ws).close();
  }
  if (!state_) return;
  std::shared_ptr<State> state = std::move(state_);
  state->closed = true;
  state->wake.cancel();
  beast::error_code ec;
  beast::get_lowest_layer(state->ws).socket().shutdown(tcp::socket::shutdown_both, ec);
  beast::get_lowest_layer(state->ws).socket().close(ec);
}

asio::awaitable<void> WsClient::writer(std::shared_ptr<State> state) {
  while (!state->closed) {
    while (!state->outbox.empty() && !state->closed) {
      std::string message = std::move(state->outbox.front());
      state->outbox.pop_front();
      state->ws.text(true);
      beast::error_code ec;
      co_await state->ws.async_write(asio::buffer(message), use_ec(ec));
      if (ec) co_return;  // the reader sees the failure and reports it
    }
    if (state->closed) co_return;
    state->wake.expires_at(asio::steady_timer::time_point::max());
    beast::error_code ec;
    co_await state->wake.async_wait(use_ec(ec));
  }
}

}  // namespace tandem::client::net
